//! The synthetic human: answer frequencies against the model's probabilities (chi-square
//! goodness of fit with fixed seeds), ties, noise, K-way softmax, the perfect oracle, the
//! discount, seeding and validation.
//!
//! Every expected probability here is computed in this file from the formulas of the issue
//! (σ((R¹ − R²)/T), softmax(R/T), ε, margin), not taken from the oracle.
//!
//! Thresholds are χ² quantiles at 0.999 (from tables): a correct oracle fails a test only for
//! about one seed in a thousand, and the seeds are fixed, so these tests do not flake. Each test
//! names a wrong implementation it catches.

use gradgym_envs::preference::{
    Answer, OracleConfig, PreferenceError, RandomAnswer, SyntheticHuman,
};
use gradgym_envs::rng;

/// χ² 0.999 quantiles by degrees of freedom.
fn chi2_999(df: usize) -> f64 {
    [
        f64::NAN,
        10.83,
        13.82,
        16.27,
        18.47,
        20.52,
        22.46,
        24.32,
        26.12,
        27.88,
        29.59,
    ][df]
}

fn oracle(config: OracleConfig, index: u64) -> SyntheticHuman {
    SyntheticHuman::new(config, rng::stream(2017, "oracle", index)).unwrap()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Answer index: 0..K for a choice, K for a tie.
fn category(a: &Answer) -> usize {
    a.choice.unwrap_or(a.mu.len())
}

/// χ² of observed counts against expected probabilities (cells of probability 0 must be
/// empty), and the degrees of freedom.
fn chi2(counts: &[usize], probabilities: &[f64]) -> (f64, usize) {
    let n: usize = counts.iter().sum();
    let mut stat = 0.0;
    let mut cells = 0;
    for (&c, &p) in counts.iter().zip(probabilities) {
        if p == 0.0 {
            assert_eq!(c, 0, "an answer of probability 0 was given");
            continue;
        }
        let e = p * n as f64;
        stat += (c as f64 - e).powi(2) / e;
        cells += 1;
    }
    (stat, cells - 1)
}

/// Asks `draws` times; returns the counts per category and checks every recorded probability
/// against `expected`.
fn tally(
    o: &mut SyntheticHuman,
    segments: &[&[f64]],
    draws: usize,
    expected: &[f64],
) -> Vec<usize> {
    let mut counts = vec![0usize; segments.len() + 1];
    for _ in 0..draws {
        let a = if segments.len() == 2 {
            o.compare(segments[0], segments[1]).unwrap()
        } else {
            o.choose(segments).unwrap()
        };
        let c = category(&a);
        assert!(
            (a.probability - expected[c]).abs() < 1e-12,
            "recorded {} for answer {c}, expected {}",
            a.probability,
            expected[c]
        );
        counts[c] += 1;
    }
    counts
}

#[test]
fn pairwise_answers_follow_the_boltzmann_probabilities() {
    // Wrong implementations caught: σ((R¹−R²)/(2T)) gives χ² in the thousands; a swapped
    // sign gives more.
    let t = 2.0;
    let config = OracleConfig {
        temperature: t,
        ..OracleConfig::default()
    };
    let mut o = oracle(config, 0);
    let (mut total, mut dof) = (0.0, 0);
    for diff in [-3.0, -1.0, -0.25, 0.5, 2.0, 4.0, 9.0] {
        // Segments of three rewards whose sums differ by `diff`.
        let first = [diff, 0.5, -0.5];
        let second = [0.0, 0.0, 0.0];
        let p = sigmoid(diff / t);
        let expected = [p, 1.0 - p, 0.0];
        let counts = tally(&mut o, &[&first, &second], 20_000, &expected);
        let (stat, df) = chi2(&counts, &expected);
        total += stat;
        dof += df;
    }
    assert_eq!(dof, 7);
    assert!(total < chi2_999(dof), "χ² {total} with {dof} dof");
}

#[test]
fn ties_within_the_margin_give_half_half() {
    for temperature in [0.0, 1.0] {
        let config = OracleConfig {
            temperature,
            margin: 0.5,
            ..OracleConfig::default()
        };
        let mut o = oracle(config, 1);
        for (first, second) in [
            ([1.0, 0.0], [0.5, 0.5]),
            ([0.3, 0.2], [0.0, 0.0]),
            ([0.0, 0.0], [0.25, 0.25]),
        ] {
            for _ in 0..200 {
                let a = o.compare(&first, &second).unwrap();
                assert_eq!(a.choice, None, "T {temperature}: {first:?} vs {second:?}");
                assert_eq!(a.mu, vec![0.5, 0.5]);
                assert_eq!(a.probability, 1.0);
            }
        }
        // Just beyond the margin there is no tie.
        let a = o.compare(&[0.51], &[0.0]).unwrap();
        assert!(a.choice.is_some() && a.probability < 1.0 + 1e-15);
    }
    // Margin 0: exactly equal returns are a tie, for a perfect and a Boltzmann oracle.
    for temperature in [0.0, 3.0] {
        let mut o = oracle(
            OracleConfig {
                temperature,
                ..OracleConfig::default()
            },
            2,
        );
        for _ in 0..100 {
            let a = o.compare(&[1.0, 2.0], &[3.0]).unwrap();
            assert_eq!((a.choice, a.mu.clone()), (None, vec![0.5, 0.5]));
        }
    }
}

#[test]
fn epsilon_answers_at_random_at_its_rate() {
    // Wrong implementations caught: noise over three answers under `Preference` (tie cell
    // non-empty), noise at rate ε/2 or 2ε (χ² in the hundreds).
    let eps = 0.1;
    let draws = 40_000;
    for (random_answer, expected) in [
        // A perfect oracle with ΔR = 5: the wrong segment only by noise, half of ε.
        (RandomAnswer::Preference, [1.0 - eps / 2.0, eps / 2.0, 0.0]),
        (
            RandomAnswer::Any,
            [1.0 - eps + eps / 3.0, eps / 3.0, eps / 3.0],
        ),
    ] {
        let mut o = oracle(
            OracleConfig {
                epsilon: eps,
                random_answer,
                ..OracleConfig::default()
            },
            3,
        );
        let mut random = 0;
        let mut counts = [0usize; 3];
        for _ in 0..draws {
            let a = o.compare(&[5.0], &[0.0]).unwrap();
            random += a.random as usize;
            counts[category(&a)] += 1;
            assert!((a.probability - expected[category(&a)]).abs() < 1e-12);
            if !a.random {
                assert_eq!(a.choice, Some(0), "a perfect oracle errs only by noise");
            }
        }
        let (stat, df) = chi2(&counts, &expected);
        assert!(
            stat < chi2_999(df),
            "{random_answer:?}: χ² {stat}, {counts:?}"
        );
        let (stat, _) = chi2(&[random, draws - random], &[eps, 1.0 - eps]);
        assert!(stat < chi2_999(1), "{random} random answers of {draws}");
    }
    // ε = 1: every answer random; ε = 0: none.
    let mut o = oracle(
        OracleConfig {
            epsilon: 1.0,
            ..OracleConfig::default()
        },
        4,
    );
    assert!((0..100).all(|_| o.compare(&[5.0], &[0.0]).unwrap().random));
    let mut o = oracle(OracleConfig::default(), 4);
    assert!((0..100).all(|_| !o.compare(&[5.0], &[0.0]).unwrap().random));
}

#[test]
fn the_whole_model_mixes_as_documented() {
    // T = 1, margin 0.5, ε = 0.2, noise over the two preferences: on a tie pair the answer is
    // a tie with probability 1 − ε; beyond it, (1 − ε)·σ(ΔR) + ε/2.
    let (t, eps) = (1.0, 0.2);
    let config = OracleConfig {
        temperature: t,
        margin: 0.5,
        epsilon: eps,
        ..OracleConfig::default()
    };
    let mut o = oracle(config, 5);
    let (mut total, mut dof) = (0.0, 0);
    for diff in [0.4f64, -1.0, 2.5] {
        let expected = if diff.abs() <= 0.5 {
            [eps / 2.0, eps / 2.0, 1.0 - eps]
        } else {
            let p = sigmoid(diff / t);
            [
                (1.0 - eps) * p + eps / 2.0,
                (1.0 - eps) * (1.0 - p) + eps / 2.0,
                0.0,
            ]
        };
        let probabilities = o.answer_probabilities(&[diff, 0.0]).unwrap();
        for (c, e) in expected.iter().enumerate() {
            let got = probabilities.of((c < 2).then_some(c));
            assert!(
                (got - e).abs() < 1e-12,
                "ΔR {diff}: answer {c} {got} vs {e}"
            );
        }
        let counts = tally(&mut o, &[&[diff], &[0.0]], 20_000, &expected);
        let (stat, df) = chi2(&counts, &expected);
        total += stat;
        dof += df;
    }
    assert!(total < chi2_999(dof), "χ² {total} with {dof} dof");
}

fn softmax(returns: &[f64], t: f64) -> Vec<f64> {
    let w: Vec<f64> = returns.iter().map(|r| (r / t).exp()).collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|x| x / total).collect()
}

#[test]
fn k_way_choices_follow_the_softmax() {
    // Wrong implementations caught: softmax(R·T), or a uniform pick among the top two.
    let t = 1.5;
    let returns = [0.0, 1.0, 2.0, 0.5, -1.0];
    let mut expected = softmax(&returns, t);
    expected.push(0.0);
    let mut o = oracle(
        OracleConfig {
            temperature: t,
            ..OracleConfig::default()
        },
        6,
    );
    let segments: Vec<[f64; 1]> = returns.iter().map(|&r| [r]).collect();
    let refs: Vec<&[f64]> = segments.iter().map(|s| &s[..]).collect();
    let counts = tally(&mut o, &refs, 50_000, &expected);
    let (stat, df) = chi2(&counts, &expected);
    assert_eq!(df, 4);
    assert!(stat < chi2_999(df), "χ² {stat}, {counts:?}");
    // K-way with noise and a margin: all within the margin → a tie; noise uniform over K.
    let mut o = oracle(
        OracleConfig {
            temperature: t,
            margin: 3.0,
            epsilon: 0.3,
            ..OracleConfig::default()
        },
        7,
    );
    let p = o.answer_probabilities(&returns).unwrap();
    assert!((p.tie - 0.7).abs() < 1e-12);
    assert!(p.choices.iter().all(|c| (c - 0.06).abs() < 1e-12));
    let a = o.choose(&refs).unwrap();
    assert_eq!(a.mu.len(), 5);
    assert!((a.mu.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn k_way_at_two_answers_as_the_pairwise_oracle() {
    let config = OracleConfig {
        temperature: 0.7,
        margin: 0.1,
        epsilon: 0.15,
        random_answer: RandomAnswer::Any,
        ..OracleConfig::default()
    };
    let mut pairwise = oracle(config.clone(), 8);
    let mut k_way = oracle(config, 8);
    let mut r = rng::stream(8, "test-returns", 0);
    for _ in 0..2000 {
        let a = [rng::standard_normal(&mut r)];
        let b = [rng::standard_normal(&mut r)];
        let x = pairwise.compare(&a, &b).unwrap();
        let y = k_way.choose(&[&a, &b]).unwrap();
        assert_eq!((x.choice, &x.mu, x.random), (y.choice, &y.mu, y.random));
        assert!((x.probability - y.probability).abs() < 1e-12);
        // And the pairwise probability is σ((R¹ − R²)/T) mixed with the noise.
        let p = pairwise.answer_probabilities(&[a[0], b[0]]).unwrap();
        if (a[0] - b[0]).abs() > 0.1 {
            let expected = 0.85 * sigmoid((a[0] - b[0]) / 0.7) + 0.15 / 3.0;
            assert!((p.choices[0] - expected).abs() < 1e-12);
        }
    }
}

#[test]
fn temperature_zero_is_a_deterministic_perfect_oracle() {
    // Wrong implementation caught: a T = 0 oracle that still samples (σ(±∞) as NaN, or a
    // coin flip) would disagree between seeds.
    let mut r = rng::stream(9, "test-returns", 0);
    let mut oracles: Vec<SyntheticHuman> = (0..3)
        .map(|i| oracle(OracleConfig::default(), 10 + i))
        .collect();
    for _ in 0..2000 {
        let a: Vec<f64> = (0..4).map(|_| rng::standard_normal(&mut r)).collect();
        let b: Vec<f64> = (0..4).map(|_| rng::standard_normal(&mut r)).collect();
        let (ra, rb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
        let best = if ra > rb { Some(0) } else { Some(1) };
        for o in &mut oracles {
            let answer = o.compare(&a, &b).unwrap();
            assert_eq!(answer.choice, best);
            assert_eq!(answer.probability, 1.0);
            assert_eq!(answer.returns, vec![ra, rb]);
        }
        // K-way: the highest return.
        let c: Vec<f64> = (0..4).map(|_| rng::standard_normal(&mut r)).collect();
        let rc = c.iter().sum::<f64>();
        let winner = [ra, rb, rc]
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .unwrap()
            .0;
        for o in &mut oracles {
            assert_eq!(o.choose(&[&a, &b, &c]).unwrap().choice, Some(winner));
        }
    }
    // Several segments share the best return (not all within the margin): one of them,
    // uniformly, as the T → 0 limit of the softmax.
    let o = oracle(OracleConfig::default(), 13);
    let p = o.answer_probabilities(&[1.0, 3.0, 3.0]).unwrap();
    assert_eq!((p.choices, p.tie), (vec![0.0, 0.5, 0.5], 0.0));
}

#[test]
fn the_discount_weighs_the_start_of_a_segment() {
    let mut undiscounted = oracle(OracleConfig::default(), 14);
    let mut myopic = oracle(
        OracleConfig {
            discount: 0.5,
            ..OracleConfig::default()
        },
        14,
    );
    let early = [1.0, 0.0, 0.0];
    let late = [0.0, 0.0, 1.5];
    assert_eq!(myopic.segment_return(&late), 0.375);
    assert_eq!(myopic.segment_return(&[1.0, 1.0, 1.0]), 1.75);
    assert_eq!(undiscounted.compare(&early, &late).unwrap().choice, Some(1));
    let a = myopic.compare(&early, &late).unwrap();
    assert_eq!((a.choice, a.returns), (Some(0), vec![1.0, 0.375]));
}

#[test]
fn the_same_stream_gives_the_same_answers() {
    let config = OracleConfig {
        temperature: 1.0,
        epsilon: 0.1,
        margin: 0.05,
        ..OracleConfig::default()
    };
    let answers = |index| {
        let mut o = oracle(config.clone(), index);
        let mut r = rng::stream(15, "test-returns", 0);
        (0..500)
            .map(|_| {
                let a = [rng::standard_normal(&mut r)];
                let b = [rng::standard_normal(&mut r)];
                o.compare(&a, &b).unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(answers(20), answers(20));
    assert_ne!(answers(20), answers(21));
}

#[test]
fn bad_settings_are_errors_naming_the_field() {
    let bad = [
        (
            "temperature",
            OracleConfig {
                temperature: -0.1,
                ..OracleConfig::default()
            },
        ),
        (
            "temperature",
            OracleConfig {
                temperature: f64::NAN,
                ..OracleConfig::default()
            },
        ),
        (
            "margin",
            OracleConfig {
                margin: -1.0,
                ..OracleConfig::default()
            },
        ),
        (
            "epsilon",
            OracleConfig {
                epsilon: 1.5,
                ..OracleConfig::default()
            },
        ),
        (
            "epsilon",
            OracleConfig {
                epsilon: -0.01,
                ..OracleConfig::default()
            },
        ),
        (
            "discount",
            OracleConfig {
                discount: 0.0,
                ..OracleConfig::default()
            },
        ),
        (
            "discount",
            OracleConfig {
                discount: 1.01,
                ..OracleConfig::default()
            },
        ),
    ];
    for (name, config) in bad {
        let e = SyntheticHuman::new(config.clone(), rng::stream(0, "oracle", 0)).unwrap_err();
        match &e {
            PreferenceError::InvalidField { field, .. } => assert_eq!(*field, name, "{e}"),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(name), "{e}");
    }
    // The edges are valid.
    for config in [
        OracleConfig {
            epsilon: 1.0,
            discount: 1.0,
            ..OracleConfig::default()
        },
        OracleConfig {
            epsilon: 0.0,
            discount: 1e-9,
            temperature: 0.0,
            ..OracleConfig::default()
        },
    ] {
        assert!(config.validate().is_ok());
    }
    let mut o = oracle(OracleConfig::default(), 0);
    let e = o.choose(&[&[1.0]]).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::InvalidField {
                field: "num_segments",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("K = 1"), "{e}");
    assert!(o.choose(&[]).is_err());
    let e = o.compare(&[f64::NAN], &[0.0]).unwrap_err();
    assert!(
        matches!(e, PreferenceError::NonFiniteReturn { index: 0, value } if value.is_nan()),
        "{e}"
    );
}
