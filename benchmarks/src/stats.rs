//! Statistics for few-run deep-RL results, after Agarwal, Schwarzer, Castro, Courville &
//! Bellemare, "Deep Reinforcement Learning at the Edge of the Statistical Precipice" (NeurIPS
//! 2021), the paper behind `rliable`.
//!
//! - Scores are normalised per env: `(score − random) / (reference − random)` (see
//!   [`score_range`]).
//! - Point estimates: mean, median, interquartile mean (IQM: the mean of the middle 50% of runs,
//!   cutting ⌊n/4⌋ from each end, as `scipy.stats.trim_mean(x, 0.25)`), optimality gap
//!   `γ − mean(min(x, γ))` with γ = 1.
//! - Stratified bootstrap: each replicate resamples the runs of every task (env) with
//!   replacement, keeping the count per task, and recomputes the statistic over all tasks; the
//!   95% interval is the 2.5th–97.5th percentile of the replicates (percentile method, with
//!   NumPy's default linear interpolation). Seeded: replicate k of statistic s draws from the
//!   stream `(seed, "bootstrap/<s>", k)`.
//! - Probability of improvement `P(X > Y)`: per task the Mann–Whitney statistic
//!   `U / (n·m) = mean over pairs of [x > y] + ½[x = y]`, averaged over tasks.
//! - Performance profile: the fraction of runs (all tasks pooled) whose normalised score
//!   exceeds τ, for each τ.

use gradgym_envs::rng::{self, Stream};

/// The scores a normalised score of 0 and 1 stand for: (random, reference).
///
/// - random: the mean undiscounted return of uniformly random actions, measured with
///   gradgym's envs (10,000 episodes, seed 0; [`random_policy_return`], checked by a test).
/// - reference: Gymnasium's `reward_threshold` (CartPole-v1 475, Acrobot-v1 −100, MountainCar-v0
///   −110, MountainCarContinuous-v0 90). Pendulum-v1 has none; −150 is used, about the best
///   final returns reported for it in rl-baselines3-zoo's benchmark tables.
pub fn score_range(env_id: &str) -> Option<(f64, f64)> {
    Some(match env_id {
        "CartPole-v1" => (RANDOM_SCORES[0].1, 475.0),
        "Acrobot-v1" => (RANDOM_SCORES[1].1, -100.0),
        "MountainCar-v0" => (RANDOM_SCORES[2].1, -110.0),
        "MountainCarContinuous-v0" => (RANDOM_SCORES[3].1, 90.0),
        "Pendulum-v1" => (RANDOM_SCORES[4].1, -150.0),
        _ => return None,
    })
}

/// Measured by [`random_policy_return`] with 10,000 episodes and seed 0.
pub const RANDOM_SCORES: [(&str, f64); 5] = [
    ("CartPole-v1", 22.0),
    ("Acrobot-v1", -499.0),
    ("MountainCar-v0", -200.0),
    ("MountainCarContinuous-v0", -33.1),
    ("Pendulum-v1", -1226.1),
];

/// Normalised score, or `None` for an env without a score range.
pub fn normalise(env_id: &str, score: f64) -> Option<f64> {
    score_range(env_id).map(|(lo, hi)| (score - lo) / (hi - lo))
}

/// Mean return of `episodes` episodes of uniformly random actions (discrete: uniform over the
/// actions; continuous: uniform in the box), from `(seed, "random-policy", 0)`.
pub fn random_policy_return(env_id: &str, episodes: usize, seed: u64) -> anyhow::Result<f64> {
    use gradgym_envs::{Actions, EnvOptions, Space, make_with};
    let n = 64usize;
    let mut env = make_with(env_id, &EnvOptions::new(n, seed))?;
    let space = env.spec().action_space.clone();
    let mut rng = rng::stream(seed, "random-policy", 0);
    let mut returns = Vec::with_capacity(episodes);
    let mut discrete = vec![0i64; n];
    let mut continuous = Vec::new();
    while returns.len() < episodes {
        match &space {
            Space::Discrete { n: k } => {
                for a in discrete.iter_mut() {
                    *a = ((rng::uniform01(&mut rng) * *k as f64) as i64).min(*k - 1);
                }
                env.step(Actions::Discrete(&discrete))?;
            }
            Space::Box { low, high, .. } => {
                continuous.clear();
                for _ in 0..n {
                    for (l, h) in low.iter().zip(high) {
                        continuous.push(rng::uniform(&mut rng, *l as f64, *h as f64) as f32);
                    }
                }
                env.step(Actions::Continuous(&continuous))?;
            }
        }
        for (_, ret, _) in env.finished_episodes() {
            if returns.len() < episodes {
                returns.push(ret);
            }
        }
    }
    Ok(mean(&returns))
}

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn sorted(x: &[f64]) -> Vec<f64> {
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The median (mean of the two middle values for an even count).
pub fn median(x: &[f64]) -> f64 {
    percentile(&sorted(x), 50.0)
}

/// Interquartile mean: `scipy.stats.trim_mean(x, 0.25)`.
pub fn iqm(x: &[f64]) -> f64 {
    let s = sorted(x);
    let cut = s.len() / 4;
    mean(&s[cut..s.len() - cut])
}

/// `1 − mean(min(x, 1))`: how far runs fall short of the reference score, on average.
pub fn optimality_gap(x: &[f64]) -> f64 {
    1.0 - mean(&x.iter().map(|v| v.min(1.0)).collect::<Vec<_>>())
}

/// The `q`-th percentile of sorted values, NumPy's default (linear) interpolation.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The aggregate statistics of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Iqm,
    Mean,
    Median,
    OptimalityGap,
}

impl Aggregate {
    pub const ALL: [Aggregate; 4] = [
        Aggregate::Iqm,
        Aggregate::Mean,
        Aggregate::Median,
        Aggregate::OptimalityGap,
    ];
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Iqm => "IQM",
            Aggregate::Mean => "mean",
            Aggregate::Median => "median",
            Aggregate::OptimalityGap => "optimality_gap",
        }
    }
    /// The statistic of one pool of scores.
    pub fn apply(&self, x: &[f64]) -> f64 {
        match self {
            Aggregate::Iqm => iqm(x),
            Aggregate::Mean => mean(x),
            Aggregate::Median => median(x),
            Aggregate::OptimalityGap => optimality_gap(x),
        }
    }

    /// The aggregate over tasks (`tasks[t]`: the normalised scores of task t's runs) as rliable
    /// defines it: IQM and the optimality gap over every run pooled; the mean and the median
    /// over the tasks' mean scores (`aggregate_median` is `median(mean(scores, axis=0))`), so a
    /// task with more runs does not weigh more.
    pub fn over_tasks(&self, tasks: &[Vec<f64>]) -> f64 {
        match self {
            Aggregate::Iqm | Aggregate::OptimalityGap => self.apply(&tasks.concat()),
            Aggregate::Mean | Aggregate::Median => {
                let means: Vec<f64> = tasks.iter().map(|t| mean(t)).collect();
                self.apply(&means)
            }
        }
    }
}

/// A point estimate with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub point: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// No estimate (no runs to score).
    pub const NAN: Interval = Interval {
        point: f64::NAN,
        low: f64::NAN,
        high: f64::NAN,
    };
}

/// Bootstrap settings: replicate count and seed.
#[derive(Clone, Copy, Debug)]
pub struct Bootstrap {
    pub reps: usize,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            reps: 10_000,
            seed: 0,
        }
    }
}

fn draw(rng: &mut Stream, n: usize) -> usize {
    ((rng::uniform01(rng) * n as f64) as usize).min(n - 1)
}

fn resample_into(tasks: &[Vec<f64>], rng: &mut Stream, out: &mut Vec<f64>) {
    out.clear();
    for task in tasks {
        for _ in 0..task.len() {
            out.push(task[draw(rng, task.len())]);
        }
    }
}

/// Each task's runs resampled with replacement into `out[t]`, task by task, drawing in the
/// order [`resample_into`] draws.
fn resample_tasks_into(tasks: &[Vec<f64>], rng: &mut Stream, out: &mut Vec<Vec<f64>>) {
    out.resize_with(tasks.len(), Vec::new);
    for (task, sample) in tasks.iter().zip(out.iter_mut()) {
        resample_into(std::slice::from_ref(task), rng, sample);
    }
}

/// Each task's runs resampled with replacement, task by task.
fn resample_each(tasks: &[Vec<f64>], rng: &mut Stream) -> Vec<Vec<f64>> {
    let mut sample = Vec::new();
    resample_tasks_into(tasks, rng, &mut sample);
    sample
}

fn interval_of(point: f64, mut replicates: Vec<f64>) -> Interval {
    replicates.sort_by(f64::total_cmp);
    Interval {
        point,
        low: percentile(&replicates, 2.5),
        high: percentile(&replicates, 97.5),
    }
}

/// `stat` over all runs of all tasks, with a stratified-bootstrap 95% interval. `name` keys
/// the random stream, so each statistic's interval does not depend on which others are
/// computed.
pub fn stratified_interval(
    tasks: &[Vec<f64>],
    stat: &dyn Fn(&[f64]) -> f64,
    boot: Bootstrap,
    name: &str,
) -> Interval {
    stratified_interval_over_tasks(tasks, &|sample| stat(&sample.concat()), boot, name)
}

/// [`stratified_interval`] for a statistic of the tasks (each task's runs kept apart), such as
/// rliable's mean and median of per-task means ([`Aggregate::over_tasks`]).
pub fn stratified_interval_over_tasks(
    tasks: &[Vec<f64>],
    stat: &dyn Fn(&[Vec<f64>]) -> f64,
    boot: Bootstrap,
    name: &str,
) -> Interval {
    let point = stat(tasks);
    let domain = format!("bootstrap/{name}");
    let mut sample = Vec::with_capacity(tasks.len());
    let replicates = (0..boot.reps)
        .map(|k| {
            let mut rng = rng::stream(boot.seed, &domain, k as u64);
            resample_tasks_into(tasks, &mut rng, &mut sample);
            stat(&sample)
        })
        .collect();
    interval_of(point, replicates)
}

/// Mann–Whitney `U / (n·m)` for one task: the probability that a run of X beats a run of Y,
/// ties counting one half.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> f64 {
    let mut s = 0.0;
    for a in x {
        for b in y {
            s += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    s / (x.len() * y.len()) as f64
}

/// `P(X > Y)` averaged over tasks (`x[t]`, `y[t]` are the runs of the two algorithms on task t).
pub fn probability_of_improvement(x: &[Vec<f64>], y: &[Vec<f64>]) -> f64 {
    let per_task: Vec<f64> = x.iter().zip(y).map(|(a, b)| mann_whitney(a, b)).collect();
    mean(&per_task)
}

/// `P(X > Y)` with a stratified-bootstrap interval (X's and Y's runs resampled independently
/// within each task).
pub fn probability_of_improvement_interval(
    x: &[Vec<f64>],
    y: &[Vec<f64>],
    boot: Bootstrap,
    name: &str,
) -> Interval {
    let point = probability_of_improvement(x, y);
    let domain = format!("bootstrap/{name}");
    let replicates = (0..boot.reps)
        .map(|k| {
            let mut rng = rng::stream(boot.seed, &domain, k as u64);
            let rx = resample_each(x, &mut rng);
            let ry = resample_each(y, &mut rng);
            probability_of_improvement(&rx, &ry)
        })
        .collect();
    interval_of(point, replicates)
}

/// `stat(x) − stat(y)` for two independent samples, with a bootstrap 95% interval (each
/// sample resampled with replacement on its own).
pub fn difference_interval(
    x: &[f64],
    y: &[f64],
    stat: &dyn Fn(&[f64]) -> f64,
    boot: Bootstrap,
    name: &str,
) -> Interval {
    let point = stat(x) - stat(y);
    let domain = format!("bootstrap/{name}");
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let replicates = (0..boot.reps)
        .map(|k| {
            let mut rng = rng::stream(boot.seed, &domain, k as u64);
            resample_into(std::slice::from_ref(&x.to_vec()), &mut rng, &mut xs);
            resample_into(std::slice::from_ref(&y.to_vec()), &mut rng, &mut ys);
            stat(&xs) - stat(&ys)
        })
        .collect();
    interval_of(point, replicates)
}

/// Fraction of runs with a score above τ, for each τ, with stratified-bootstrap intervals.
pub fn performance_profile(
    tasks: &[Vec<f64>],
    taus: &[f64],
    boot: Bootstrap,
    name: &str,
) -> Vec<Interval> {
    let above =
        |x: &[f64], tau: f64| x.iter().filter(|&&v| v > tau).count() as f64 / x.len() as f64;
    let flat: Vec<f64> = tasks.iter().flatten().copied().collect();
    let domain = format!("bootstrap/{name}");
    let mut sample = Vec::new();
    let mut replicates: Vec<Vec<f64>> = vec![Vec::with_capacity(boot.reps); taus.len()];
    for k in 0..boot.reps {
        let mut rng = rng::stream(boot.seed, &domain, k as u64);
        resample_into(tasks, &mut rng, &mut sample);
        for (j, &tau) in taus.iter().enumerate() {
            replicates[j].push(above(&sample, tau));
        }
    }
    taus.iter()
        .zip(replicates)
        .map(|(&tau, r)| interval_of(above(&flat, tau), r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 50, 97.5]) = [1.075, 2.5, 3.925]
        let s = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&s, 2.5) - 1.075).abs() < 1e-12);
        assert!((percentile(&s, 50.0) - 2.5).abs() < 1e-12);
        assert!((percentile(&s, 97.5) - 3.925).abs() < 1e-12);
    }

    /// rliable's aggregate mean and median are over the tasks' mean scores; IQM and the
    /// optimality gap pool the runs.
    #[test]
    fn the_aggregate_median_and_mean_are_over_task_means_as_rliables() {
        let tasks = vec![
            vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
            vec![0.9, 1.0, 1.1, 1.2],
            vec![0.0, 0.2],
        ];
        // Task means 0.4, 1.05 and 0.1.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(Aggregate::Median.over_tasks(&tasks), 0.4));
        assert!(close(Aggregate::Mean.over_tasks(&tasks), 1.55 / 3.0));
        // Pooled, the median of the 13 runs would be 0.5 and the mean 7.2 / 13.
        let pooled = tasks.concat();
        assert!(close(Aggregate::Median.apply(&pooled), 0.5));
        assert!(close(Aggregate::Iqm.over_tasks(&tasks), iqm(&pooled)));
        assert!(close(
            Aggregate::OptimalityGap.over_tasks(&tasks),
            optimality_gap(&pooled)
        ));
        // The per-task resampling draws what the pooled one draws: a pooled statistic gets
        // the same interval from either.
        let b = Bootstrap { reps: 500, seed: 4 };
        let flat = stratified_interval(&tasks, &iqm, b, "x");
        let kept = stratified_interval_over_tasks(&tasks, &|t| iqm(&t.concat()), b, "x");
        assert_eq!(flat, kept);
        let median =
            stratified_interval_over_tasks(&tasks, &|t| Aggregate::Median.over_tasks(t), b, "x");
        assert!(median.low <= 0.4 && 0.4 <= median.high, "{median:?}");
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_point() {
        let tasks = vec![
            vec![0.1, 0.5, 0.9, 0.3, 0.7],
            vec![1.0, 0.8, 0.95, 0.6, 0.2],
        ];
        let b = Bootstrap {
            reps: 2000,
            seed: 3,
        };
        let a = stratified_interval(&tasks, &iqm, b, "iqm");
        let again = stratified_interval(&tasks, &iqm, b, "iqm");
        assert_eq!(a, again);
        assert!(
            a.low <= a.point && a.point <= a.high && a.low < a.high,
            "{a:?}"
        );
        let other = stratified_interval(
            &tasks,
            &iqm,
            Bootstrap {
                reps: 2000,
                seed: 4,
            },
            "iqm",
        );
        assert_ne!(a, other);
    }

    #[test]
    fn a_constant_sample_has_a_zero_width_interval() {
        let tasks = vec![vec![0.5; 5]];
        let i = stratified_interval(&tasks, &mean, Bootstrap::default(), "mean");
        assert_eq!((i.point, i.low, i.high), (0.5, 0.5, 0.5));
    }

    #[test]
    fn stratification_keeps_each_task_count() {
        // Task 1 all zeros, task 2 all ones: every stratified resample has mean exactly 0.5
        // (an unstratified one would not).
        let tasks = vec![vec![0.0; 3], vec![1.0; 3]];
        let i = stratified_interval(&tasks, &mean, Bootstrap::default(), "m");
        assert_eq!((i.low, i.high), (0.5, 0.5));
    }

    #[test]
    fn profiles_fall_from_one_to_zero() {
        let tasks = vec![vec![0.1, 0.4, 0.8]];
        let p = performance_profile(&tasks, &[-1.0, 0.3, 2.0], Bootstrap::default(), "p");
        assert_eq!(p[0].point, 1.0);
        assert!((p[1].point - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(p[2].point, 0.0);
    }
}
