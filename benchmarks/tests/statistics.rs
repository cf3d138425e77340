//! The report's statistics against values computed independently, and the normalisation
//! constants against a fresh measurement.

use gradgym_benchmarks::stats::{
    self, Bootstrap, RANDOM_SCORES, iqm, mann_whitney, median, optimality_gap,
    probability_of_improvement, random_policy_return,
};

// Reference values computed with SciPy 1.17.1 / NumPy 2.4.6:
//   scipy.stats.trim_mean(x, 0.25)
//   scipy.stats.mannwhitneyu(x, y).statistic / (len(x) * len(y))
//   numpy.median(x)

#[test]
fn iqm_matches_scipy_trim_mean() {
    assert!((iqm(&[0.91, 0.12, 0.55, 0.33, 0.78, 0.05, 0.64]) - 0.484).abs() < 1e-12);
    assert!((iqm(&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]) - 3.5).abs() < 1e-12);
    // Five runs: one cut from each end, so an outlier does not move it.
    assert!((iqm(&[10.0, 20.0, 30.0, 40.0, 1000.0]) - 30.0).abs() < 1e-12);
    // Eight skewed runs: ⌊8/4⌋ = 2 cut from each end leaves (4, 8, 16, 32); trimming 20%
    // (one from each end) would give 21.
    assert_eq!(iqm(&[64.0, 1.0, 8.0, 128.0, 2.0, 32.0, 4.0, 16.0]), 15.0);
    assert_eq!(median(&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]), 3.5);
}

#[test]
fn probability_of_improvement_matches_scipy_mann_whitney() {
    let (a, b) = (vec![1.0, 2.0, 3.0, 3.0, 7.0], vec![0.5, 3.0, 3.0, 4.0]);
    let (a2, b2) = (vec![10.0, 11.0, 12.0], vec![9.0, 13.0, 11.0, 10.5]);
    assert!((mann_whitney(&a, &b) - 0.5).abs() < 1e-12);
    assert!((mann_whitney(&a2, &b2) - 0.541_666_666_666_666_6).abs() < 1e-12);
    let p = probability_of_improvement(&[a.clone(), a2.clone()], &[b.clone(), b2.clone()]);
    assert!((p - 0.520_833_333_333_333_3).abs() < 1e-12);
    // P(X > Y) + P(Y > X) = 1.
    let q = probability_of_improvement(&[b, b2], &[a, a2]);
    assert!((p + q - 1.0).abs() < 1e-12);
}

#[test]
fn optimality_gap_counts_only_the_shortfall() {
    assert!((optimality_gap(&[1.5, 0.5, 1.0, 0.0]) - 0.375).abs() < 1e-12);
}

#[test]
fn the_interval_of_a_clear_difference_excludes_zero() {
    let good = vec![vec![0.9, 0.95, 1.0, 0.92, 0.97]];
    let bad = vec![vec![0.1, 0.2, 0.15, 0.05, 0.12]];
    let p = stats::probability_of_improvement_interval(&good, &bad, Bootstrap::default(), "t");
    assert_eq!((p.point, p.low, p.high), (1.0, 1.0, 1.0));
    let d = stats::difference_interval(&bad[0], &good[0], &iqm, Bootstrap::default(), "d");
    assert!(d.high < 0.0, "{d:?}");
}

#[test]
fn random_scores_are_what_a_uniform_policy_gets() {
    for (env, constant) in RANDOM_SCORES {
        let measured = random_policy_return(env, 10_000, 0).unwrap();
        assert!(
            // The constants are the measurement rounded to one decimal.
            (measured - constant).abs() <= 0.05,
            "{env}: constant {constant}, measured {measured}"
        );
    }
}
