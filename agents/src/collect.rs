//! The rollout collector: runs the current policy in a `VecEnv` and fills a [`Rollout`].
//!
//! PPO and A2C collect `num_steps` steps of every env; REINFORCE collects one complete
//! episode per env from a fresh reset. Each step's `next_values` is the value of the *true*
//! next state: the critic's value of the next observation while the episode goes on, 0 after a
//! termination, and V(final observation) after a time-limit truncation, so that GAE bootstraps
//! truncated episodes and never terminated ones (CleanRL treats truncation as termination).
//! Actions come from the run's `"actions"` stream; the policy is a CPU copy of the weights.

use std::collections::VecDeque;

use anyhow::Result;
use gradgym_envs::rng::{self, Stream};
use gradgym_envs::{Actions, Autoreset, EnvOptions, Space, VecEnv, make_with};

use ndarray::{Array2, Axis, s};

use crate::buffer::Rollout;
use crate::config::TrainConfig;
use crate::nn::{Head, Policy, Scratch, sample_categorical, sample_gaussian};

pub fn head_for(space: &Space) -> Head {
    match space {
        Space::Discrete { n } => Head::Categorical { n: *n as usize },
        Space::Box { low, .. } => Head::Gaussian { dim: low.len() },
    }
}

/// Acts for one batch of observations: fills actions, log-probs and values.
#[derive(Default)]
pub struct Actor {
    scratch: Scratch,
    logp: Vec<f64>,
}

impl Actor {
    pub fn new() -> Self {
        Self::default()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn act(
        &mut self,
        policy: &Policy,
        obs: &[f32],
        n: usize,
        rng: &mut Stream,
        deterministic: bool,
        discrete: &mut [i64],
        continuous: &mut [f32],
        logprobs: &mut [f32],
        values: &mut [f32],
    ) {
        let (out, v) = policy.forward(obs, n, &mut self.scratch);
        values[..n].copy_from_slice(&v[..n]);
        match policy.head {
            Head::Categorical { n: k } => {
                for i in 0..n {
                    let (a, lp) = sample_categorical(
                        &out[i * k..(i + 1) * k],
                        rng,
                        deterministic,
                        &mut self.logp,
                    );
                    discrete[i] = a;
                    logprobs[i] = lp;
                }
            }
            Head::Gaussian { dim } => {
                let log_std = policy
                    .log_std
                    .as_deref()
                    .expect("a Gaussian head has a log-std");
                for i in 0..n {
                    logprobs[i] = sample_gaussian(
                        &out[i * dim..(i + 1) * dim],
                        log_std,
                        rng,
                        deterministic,
                        &mut continuous[i * dim..(i + 1) * dim],
                    );
                }
            }
        }
    }
}

/// Episode statistics of the run.
#[derive(Default)]
pub struct Episodes {
    last100: VecDeque<f64>,
    /// Episodes finished so far.
    pub count: u64,
    /// Returns and lengths of the episodes finished during the current iteration.
    pub iteration_returns: Vec<f64>,
    pub iteration_lengths: Vec<f64>,
}

impl Episodes {
    pub fn new() -> Self {
        Self::default()
    }
    /// Forgets the current iteration's episodes (the running last-100 window stays).
    pub fn start_iteration(&mut self) {
        self.iteration_returns.clear();
        self.iteration_lengths.clear();
    }
    pub fn record(&mut self, env: &dyn VecEnv, only: Option<&[bool]>) {
        for (i, ret, len) in env.finished_episodes() {
            if only.is_some_and(|o| !o[i]) {
                continue;
            }
            self.count += 1;
            if self.last100.len() == 100 {
                self.last100.pop_front();
            }
            self.last100.push_back(ret);
            self.iteration_returns.push(ret);
            self.iteration_lengths.push(len as f64);
        }
    }
    pub fn recent(&self) -> Option<f64> {
        (!self.last100.is_empty())
            .then(|| self.last100.iter().sum::<f64>() / self.last100.len() as f64)
    }
}

/// Row `t` (step t of every env) of a `[T, N]` array, as a slice.
fn row_mut<T>(a: &mut Array2<T>, t: usize) -> &mut [T] {
    a.row_mut(t).into_slice().expect("standard layout")
}

/// Collects `num_steps` steps of every env (PPO, A2C), or, when `episodic`, one complete
/// episode per env starting from a fresh reset (REINFORCE). Returns the env steps consumed.
#[allow(clippy::too_many_arguments)]
pub fn collect(
    env: &mut dyn VecEnv,
    policy: &Policy,
    actor: &mut Actor,
    r: &mut Rollout,
    rng: &mut Stream,
    episodic: bool,
    episodes: &mut Episodes,
) -> Result<u64> {
    let n = env.num_envs();
    let ad = r.action_dim;
    let mut discrete = vec![0i64; n];
    let mut continuous = vec![0f32; n * ad];
    let mut running = vec![true; n];
    if episodic {
        env.reset(None);
    }
    let mut steps = 0u64;
    let mut t = 0;
    while t < r.shape.num_steps {
        let obs = env.observations();
        r.obs.index_axis_mut(Axis(0), t).assign(&obs);
        let obs = obs.to_slice().expect("a batch is row-major");
        actor.act(
            policy,
            obs,
            n,
            rng,
            false,
            &mut discrete,
            &mut continuous,
            row_mut(&mut r.logprobs, t),
            row_mut(&mut r.values, t),
        );
        if r.discrete {
            row_mut(&mut r.actions_discrete, t).copy_from_slice(&discrete);
        } else {
            let mut step = r.actions_continuous.index_axis_mut(Axis(0), t);
            step.as_slice_mut()
                .expect("standard layout")
                .copy_from_slice(&continuous);
        }
        if t > 0 {
            // The value of this step's observation is the bootstrap of the previous step,
            // where that step did not end an episode.
            for i in 0..n {
                if !r.dones[[t - 1, i]] {
                    r.next_values[[t - 1, i]] = r.values[[t, i]];
                }
            }
        }
        let actions = if r.discrete {
            Actions::Discrete(&discrete)
        } else {
            Actions::Continuous(&continuous)
        };
        env.step(actions)?;
        let (term, trunc) = (env.terminated(), env.truncated());
        for i in 0..n {
            r.rewards[[t, i]] = env.rewards()[i] as f32;
            r.dones[[t, i]] = term[i] || trunc[i];
            r.valid[[t, i]] = running[i];
            r.next_values[[t, i]] = 0.0;
        }
        // Truncated (and not terminated) episodes bootstrap from their final observation.
        let cut: Vec<usize> = (0..n).filter(|&i| trunc[i] && !term[i]).collect();
        if !cut.is_empty() {
            let rows: Vec<f32> = cut
                .iter()
                .flat_map(|&i| env.final_observations().row(i).to_vec())
                .collect();
            let v = policy.values(&rows, cut.len(), &mut actor.scratch);
            for (j, &i) in cut.iter().enumerate() {
                r.next_values[[t, i]] = v[j];
            }
        }
        steps += running.iter().filter(|&&x| x).count() as u64;
        episodes.record(&*env, episodic.then_some(&running[..]));
        if episodic {
            for i in 0..n {
                running[i] &= !(term[i] || trunc[i]);
            }
        }
        t += 1;
        if episodic && !running.iter().any(|&x| x) {
            break;
        }
    }
    // Rows past the last step of an episodic rollout are not part of the batch.
    let unused = s![t.., ..];
    r.valid.slice_mut(unused).fill(false);
    r.dones.slice_mut(unused).fill(true);
    r.rewards.slice_mut(unused).fill(0.0);
    r.next_values.slice_mut(unused).fill(0.0);
    if !episodic {
        // Bootstrap the episodes the window cut with the value of the current observation.
        let obs = env.observations().to_slice().expect("a batch is row-major");
        let final_values = policy.values(obs, n, &mut actor.scratch);
        for (i, &v) in final_values.iter().enumerate() {
            if !r.dones[[t - 1, i]] {
                r.next_values[[t - 1, i]] = v;
            }
        }
    }
    Ok(steps)
}

/// One step of an evaluation episode, for `gradgym eval --render-csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalStep {
    /// The episode (= the env of the evaluation batch).
    pub episode: usize,
    /// Step within the episode, from 0.
    pub t: usize,
    /// The observation the action was chosen on.
    pub obs: Vec<f32>,
    /// The action (one value for a discrete action, `dim` for a continuous one).
    pub action: Vec<f64>,
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
}

/// Whether `policy` can act in the env of `spec`: its input is the observation's size and its
/// head the action space's kind and size (a policy of another env, or a hand-edited
/// `policy.json`, is refused here rather than failing inside a forward pass).
pub fn check_fits(policy: &Policy, spec: &gradgym_envs::EnvSpec) -> Result<()> {
    let obs = spec.observation_space.dim();
    anyhow::ensure!(
        policy.obs_dim() == obs,
        "the policy reads observations of {} components (obs_dim), but {}'s have {obs}",
        policy.obs_dim(),
        spec.id
    );
    match (policy.head, &spec.action_space) {
        (Head::Categorical { n }, Space::Discrete { n: m }) if n as i64 == *m => Ok(()),
        (Head::Gaussian { dim }, Space::Box { low, .. }) if dim == low.len() => Ok(()),
        (head, space) => {
            let (kind, k) = match head {
                Head::Categorical { n } => ("categorical", n),
                Head::Gaussian { dim } => ("gaussian", dim),
            };
            anyhow::bail!(
                "the policy's head is {kind} over {k} (head, head_outputs), but {}'s action space is {space}",
                spec.id
            )
        }
    }
}

/// Returns of `config.eval_episodes` deterministic episodes of `policy`, one per env of a
/// batch seeded from the `"eval"` stream of `config.seed` (so a run's evaluation can be
/// repeated from its config and weights alone), in env order. With `trace`, every step of
/// every episode is recorded.
pub fn evaluate_episodes(
    config: &TrainConfig,
    policy: &Policy,
    mut trace: Option<&mut Vec<EvalStep>>,
) -> Result<Vec<f64>> {
    let episodes = config.eval_episodes;
    let seed = rng::derive_seed(config.seed, "eval");
    let mut env = make_with(
        &config.env_id,
        &EnvOptions {
            autoreset: Autoreset::SameStep,
            ..EnvOptions::new(episodes, seed)
        },
    )?;
    check_fits(policy, env.spec())?;
    let mut actor = Actor::new();
    let ad = match env.spec().action_space {
        Space::Box { ref low, .. } => low.len(),
        Space::Discrete { .. } => 1,
    };
    let (mut discrete, mut continuous) = (vec![0i64; episodes], vec![0f32; episodes * ad]);
    let (mut lp, mut vals) = (vec![0f32; episodes], vec![0f32; episodes]);
    // Deterministic actions draw nothing; the stream only fills the argument.
    let mut no_draws = rng::stream(config.seed, "eval-actions", 0);
    let mut returns: Vec<Option<f64>> = vec![None; episodes];
    let mut t = 0;
    while returns.iter().any(Option::is_none) {
        let obs = env.observations().to_owned();
        actor.act(
            policy,
            obs.as_slice().expect("a batch is row-major"),
            episodes,
            &mut no_draws,
            true,
            &mut discrete,
            &mut continuous,
            &mut lp,
            &mut vals,
        );
        let discrete_head = matches!(policy.head, Head::Categorical { .. });
        let actions = if discrete_head {
            Actions::Discrete(&discrete)
        } else {
            Actions::Continuous(&continuous)
        };
        env.step(actions)?;
        if let Some(trace) = trace.as_deref_mut() {
            for i in (0..episodes).filter(|&i| returns[i].is_none()) {
                trace.push(EvalStep {
                    episode: i,
                    t,
                    obs: obs.row(i).to_vec(),
                    action: if discrete_head {
                        vec![discrete[i] as f64]
                    } else {
                        continuous[i * ad..(i + 1) * ad]
                            .iter()
                            .map(|&a| a as f64)
                            .collect()
                    },
                    reward: env.rewards()[i],
                    terminated: env.terminated()[i],
                    truncated: env.truncated()[i],
                });
            }
        }
        for (i, ret, _) in env.finished_episodes() {
            returns[i].get_or_insert(ret);
        }
        t += 1;
    }
    Ok(returns
        .into_iter()
        .map(|x| x.expect("all finished"))
        .collect())
}

/// Mean and standard deviation of [`evaluate_episodes`]' returns.
pub fn evaluate(config: &TrainConfig, policy: &Policy) -> Result<(f64, f64)> {
    let r = evaluate_episodes(config, policy, None)?;
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    let std = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
    Ok((mean, std))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::native::Native;
    use crate::buffer::flat;

    /// A freshly initialised policy for `env_id`.
    fn policy(env_id: &str, seed: u64) -> Policy {
        let config = TrainConfig {
            env_id: env_id.into(),
            ..TrainConfig::default()
        };
        let env = make_with(env_id, &EnvOptions::new(1, 0)).unwrap();
        let head = head_for(&env.spec().action_space);
        Native::new(
            &config,
            env.obs_dim(),
            head,
            &mut rng::stream(seed, "init", 0),
        )
        .snapshot()
    }

    /// Collects `num_steps` steps of `num_envs` envs with `time_limit`, then replays the
    /// rollout's actions in a second batch of the same envs and checks every `next_values`
    /// entry: 0 after a termination, V(final observation) after a truncation, V(next
    /// observation) otherwise. Returns (terminated, truncated) row counts.
    fn check_bootstraps(env_id: &str, time_limit: u32) -> (usize, usize) {
        let (n, num_steps) = (8, 40);
        let options = EnvOptions {
            max_episode_steps: Some(time_limit),
            ..EnvOptions::new(n, 3)
        };
        let policy = policy(env_id, 5);
        let mut env = make_with(env_id, &options).unwrap();
        let od = env.obs_dim();
        let discrete = matches!(policy.head, Head::Categorical { .. });
        let ad = match &env.spec().action_space {
            Space::Box { low, .. } => low.len(),
            Space::Discrete { .. } => 1,
        };
        let mut rollout = Rollout::new(num_steps, n, od, ad, discrete);
        collect(
            &mut *env,
            &policy,
            &mut Actor::new(),
            &mut rollout,
            &mut rng::stream(3, "actions", 0),
            false,
            &mut Episodes::new(),
        )
        .unwrap();

        let mut replay = make_with(env_id, &options).unwrap();
        let mut scratch = Scratch::default();
        let (mut terminated, mut truncated) = (0, 0);
        for t in 0..num_steps {
            assert_eq!(
                replay.observations(),
                rollout.obs.index_axis(Axis(0), t),
                "the replay follows the rollout"
            );
            if discrete {
                let a = rollout.actions_discrete.row(t).to_vec();
                replay.step(Actions::Discrete(&a)).unwrap();
            } else {
                let a = rollout.actions_continuous.index_axis(Axis(0), t).to_owned();
                replay.step(Actions::Continuous(flat(&a))).unwrap();
            }
            for i in 0..n {
                let got = rollout.next_values[[t, i]];
                let (term, trunc) = (replay.terminated()[i], replay.truncated()[i]);
                assert_eq!(rollout.dones[[t, i]], term || trunc);
                let expected = if term {
                    terminated += 1;
                    0.0
                } else if trunc {
                    truncated += 1;
                    let fin = replay.final_observations().row(i).to_vec();
                    policy.values(&fin, 1, &mut scratch)[0]
                } else {
                    let next = replay.observations().row(i).to_vec();
                    policy.values(&next, 1, &mut scratch)[0]
                };
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "{env_id} step {t} env {i} (terminated {term}, truncated {trunc}): \
                     next value {got}, expected {expected}"
                );
                if trunc && !term {
                    assert_ne!(got, 0.0, "a truncated row bootstraps");
                }
            }
        }
        (terminated, truncated)
    }

    #[test]
    fn truncated_rows_bootstrap_from_the_final_observation_and_terminated_rows_do_not() {
        // CartPole cut at 12 steps: a random policy's episodes end both ways.
        let (term, trunc) = check_bootstraps("CartPole-v1", 12);
        assert!(
            term > 0 && trunc > 0,
            "terminated {term}, truncated {trunc}"
        );
        // Pendulum never terminates: every episode end is a truncation.
        let (term, trunc) = check_bootstraps("Pendulum-v1", 9);
        assert!(
            term == 0 && trunc >= 8 * 4,
            "terminated {term}, truncated {trunc}"
        );
    }

    #[test]
    fn an_episodic_rollout_holds_exactly_each_envs_first_episode() {
        // CartPole cut at 30 steps, a random policy: episodes of different lengths, some
        // terminated and some truncated; the envs that finish early keep stepping (autoreset)
        // until the last one finishes, and those steps are not part of the batch.
        let (n, limit) = (8, 30);
        let options = EnvOptions {
            max_episode_steps: Some(limit),
            ..EnvOptions::new(n, 11)
        };
        let policy = policy("CartPole-v1", 5);
        let mut env = make_with("CartPole-v1", &options).unwrap();
        let mut rollout = Rollout::new(limit as usize, n, env.obs_dim(), 1, true);
        let mut episodes = Episodes::new();
        let steps = collect(
            &mut *env,
            &policy,
            &mut Actor::new(),
            &mut rollout,
            &mut rng::stream(11, "actions", 0),
            true,
            &mut episodes,
        )
        .unwrap();
        let mut lengths = Vec::new();
        for i in 0..n {
            let end = (0..limit as usize)
                .find(|&t| rollout.dones[[t, i]])
                .expect("every episode ends within the time limit");
            lengths.push(end + 1);
            for t in 0..limit as usize {
                assert_eq!(
                    rollout.valid[[t, i]],
                    t <= end,
                    "env {i} step {t} (end {end})"
                );
            }
        }
        assert!(
            lengths.contains(&(limit as usize)) && lengths.iter().any(|&l| l < limit as usize),
            "some episodes truncated, some terminated earlier: {lengths:?}"
        );
        assert_eq!(steps, lengths.iter().sum::<usize>() as u64);
        assert_eq!(episodes.count, n as u64, "one episode per env is recorded");
    }
}
