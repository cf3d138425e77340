//! The training configuration: one struct, CleanRL's hyperparameter names, documented defaults
//! (CleanRL's `ppo.py` for CartPole-v1), read from TOML with unknown keys rejected.
//!
//! Resolution order, later wins: these defaults → the tuned file for (env, algo) shipped in
//! `benchmarks/configs/` → a user's `--config FILE.toml` → command-line flags.

use serde::{Deserialize, Serialize};

use gradgym_algorithms::kl::KlController;

pub mod prefs;
pub mod rlhf;

/// Which backend a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// `native` on the CPU, `libtorch` on CUDA.
    Auto,
    Native,
    Libtorch,
}

impl BackendKind {
    /// The backend that runs on `device`: `Auto` becomes `Native` on the CPU and `Libtorch`
    /// elsewhere.
    pub fn resolve(self, device: tch::Device) -> BackendKind {
        match self {
            BackendKind::Auto if device == tch::Device::Cpu => BackendKind::Native,
            BackendKind::Auto => BackendKind::Libtorch,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Native => "native",
            BackendKind::Libtorch => "libtorch",
        }
    }
}

/// Which learner trains the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    /// Williams 1992, on complete episodes.
    Reinforce,
    /// Synchronous advantage actor-critic (Mnih et al. 2016, A2C), n-step or GAE advantages.
    A2c,
    /// Schulman et al. 2017.
    Ppo,
}

impl Algo {
    pub const ALL: [&'static str; 3] = ["reinforce", "a2c", "ppo"];
    pub fn name(&self) -> &'static str {
        match self {
            Algo::Reinforce => "reinforce",
            Algo::A2c => "a2c",
            Algo::Ppo => "ppo",
        }
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "reinforce" => Ok(Algo::Reinforce),
            "a2c" => Ok(Algo::A2c),
            "ppo" => Ok(Algo::Ppo),
            other => Err(format!(
                "unknown algo `{other}`; valid: {}",
                Self::ALL.join(", ")
            )),
        }
    }
}

/// PPO's surrogate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PpoLoss {
    /// `L^CLIP` (eq. 7).
    Clip,
    /// `L^KLPEN` (eq. 8), with `kl_coef` and, if `kl_target` is set, the adaptive rule.
    Kl,
}

/// What REINFORCE weights ∇log π(a_t|s_t) with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnKind {
    /// The whole episode's discounted return R(τ).
    Total,
    /// The discounted return from step t on.
    RewardToGo,
}

/// One field of [`TrainConfig`]: its key (the TOML key; the flag is `--key-with-dashes`) and
/// its documentation, which `gradgym train --help` prints.
#[derive(Clone, Copy, Debug)]
pub struct FieldDoc {
    pub name: &'static str,
    pub doc: &'static str,
}

/// Declares [`TrainConfig`] once: each field with its doc comment, type and default. From the
/// one list come the struct, its `Default` (CleanRL's `ppo.py` for CartPole-v1) and
/// [`TrainConfig::FIELDS`], from which the command line makes one flag per field, so that no
/// field is repeated by hand anywhere.
macro_rules! train_config {
    ($($(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr),* $(,)?) => {
        /// The configuration of one training run, CleanRL's hyperparameter names.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct TrainConfig {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        impl Default for TrainConfig {
            /// CleanRL's `ppo.py` defaults (CartPole-v1).
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl TrainConfig {
            /// Every field, in declaration order.
            pub const FIELDS: &'static [FieldDoc] = &[
                $(FieldDoc { name: stringify!($field), doc: concat!($($doc, "\n",)*) },)*
            ];
        }
    };
}

train_config! {
    /// Environment id (`gradgym envs list`).
    env_id: String = "CartPole-v1".into(),
    /// `reinforce`, `a2c` or `ppo`.
    algo: Algo = Algo::Ppo,
    /// The run's seed; every random stream derives from it.
    seed: u64 = 1,
    /// Environment steps to train for (across all envs).
    total_timesteps: u64 = 500_000,
    /// `cpu` or `cuda` (`cuda:N` for a given GPU).
    device: String = "cpu".into(),
    /// Who computes gradient steps: `auto` (native on the CPU, libtorch on CUDA), `native`
    /// (plain Rust, CPU) or `libtorch` (autograd; the reference). See `agents/src/backend/`.
    backend: BackendKind = BackendKind::Auto,
    /// Adam's learning rate.
    learning_rate: f64 = 2.5e-4,
    /// Parallel environments.
    num_envs: usize = 4,
    /// Steps per env per rollout (REINFORCE ignores it: it rolls complete episodes).
    num_steps: usize = 128,
    /// Anneal the learning rate linearly to 0 over training.
    anneal_lr: bool = true,
    /// Discount factor γ.
    gamma: f64 = 0.99,
    /// GAE's λ (A2C: 1.0 gives n-step returns over `num_steps`).
    gae_lambda: f64 = 0.95,
    /// Minibatches per epoch (PPO).
    num_minibatches: usize = 4,
    /// Epochs over each rollout (PPO).
    update_epochs: usize = 4,
    /// Normalise advantages per minibatch.
    norm_adv: bool = true,
    /// PPO's ε.
    clip_coef: f64 = 0.2,
    /// Clip the value loss around the old values (PPO).
    clip_vloss: bool = true,
    /// Entropy bonus coefficient.
    ent_coef: f64 = 0.01,
    /// Value loss coefficient.
    vf_coef: f64 = 0.5,
    /// Global gradient-norm clip (0 disables it).
    max_grad_norm: f64 = 0.5,
    /// Stop the epochs of an update once the approximate KL exceeds this (PPO).
    target_kl: Option<f64> = None,
    /// PPO's surrogate: `clip` or `kl`.
    ppo_loss: PpoLoss = PpoLoss::Clip,
    /// Initial β of PPO-KL's penalty toward the policy before each update (`ppo_loss = "kl"`);
    /// the KL to a frozen reference is `ref_kl_coef`.
    kl_coef: f64 = 1.0,
    /// With `ppo_loss = "kl"`: adapt β towards this KL (Schulman et al. 2017, section 4).
    kl_target: Option<f64> = None,
    /// β of a KL penalty toward a frozen reference policy p, paid at every step:
    /// r_t − β·(log π(a_t|s_t) − log p(a_t|s_t)), the per-token form of Ziegler et al.
    /// 2019's R(x, y) = r(x, y) − β log π(y|x)/p(y|x). The reference is the policy at the
    /// start of training. 0 turns it off. Not `kl_coef`, which is PPO-KL's penalty toward
    /// the policy before each update.
    ref_kl_coef: f64 = 0.0,
    /// REINFORCE's weights: `total` or `reward_to_go`.
    reinforce_return: ReturnKind = ReturnKind::RewardToGo,
    /// REINFORCE: subtract a learned state-value baseline.
    baseline: bool = true,
    /// Hidden layer widths of both MLPs.
    hidden_sizes: Vec<usize> = vec![64, 64],
    /// Initial log standard deviation of a Gaussian policy.
    log_std_init: f64 = 0.0,
    /// Adam's ε.
    adam_eps: f64 = 1e-5,
    /// Deterministic evaluation episodes at the end of training.
    eval_episodes: usize = 10,
    /// Also save the policy every this many iterations, into `checkpoints/iter-<NNNNNN>/` of the
    /// run folder (the iteration in six digits: `iter-000002`) (0: only the final policy, `policy.safetensors`).
    checkpoint_every: u64 = 0,
    /// Threads libtorch may use (1 keeps parallel sweeps reproducible and fast).
    torch_threads: usize = 1,
    /// Learn from synthetic preferences instead of the env's reward: a `[prefs]` table
    /// (label budget, segments, the synthetic human, the reward-model ensemble, query
    /// strategy, mode; see `agents/src/config/prefs.rs` and docs/preferences.md). Unset: the
    /// learner is paid the env's reward.
    prefs: Option<prefs::PrefsConfig> = None,
}

/// A configuration that cannot run, naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("config field `{field}`: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

/// The memory a classic run (or `envs bench`) may plan to allocate, in bytes, with where that
/// figure comes from as a phrase (`this machine has 20.3 GiB available`): the less of
/// `MemAvailable` (/proc/meminfo) and the address space `RLIMIT_AS` (`ulimit -v`) leaves this
/// process. Past either, an allocation in Rust's own buffers aborts the process, so a config
/// is refused before it runs. `None` where neither can be read.
pub fn available_memory() -> Option<(u128, String)> {
    let free = crate::host_memory::proc_bytes("/proc/meminfo", "MemAvailable")
        .map(|b| (b, format!("this machine has {} available", gib(b))));
    let left = crate::host_memory::address_space_left()
        .map(|(b, how)| (b, format!("this process may still map {} ({how})", gib(b))));
    [free, left].into_iter().flatten().min_by_key(|(b, _)| *b)
}

/// Bytes one env of a batch holds, roughly: its f64 state, observations, final observations,
/// rewards, flags and counters.
pub fn env_batch_bytes_per_env(obs_dim: usize) -> u128 {
    8 * 8 + 2 * 4 * obs_dim as u128 + 64
}

/// A size for a message: GiB with one decimal from 1 GiB up, a smaller unit below (two sizes
/// under a GiB both read "0.2 GiB", need and limit alike).
pub fn gib(bytes: u128) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u128 << 30) as f64)
    } else {
        crate::error::human_bytes(bytes as u64)
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

impl TrainConfig {
    /// Samples per rollout (PPO, A2C).
    pub fn batch_size(&self) -> usize {
        self.num_envs * self.num_steps
    }
    /// Samples per PPO minibatch.
    pub fn minibatch_size(&self) -> usize {
        self.batch_size() / self.num_minibatches
    }
    /// Rollout–update iterations (PPO, A2C).
    pub fn num_iterations(&self) -> u64 {
        self.total_timesteps / self.batch_size() as u64
    }
    /// How the step budget is used, when it is not used exactly: PPO and A2C run whole
    /// rollouts of `num_envs × num_steps`, so a budget that is not a multiple is rounded down
    /// (CleanRL's arithmetic); REINFORCE rolls complete episodes and stops once the budget is
    /// reached, so its last batch overshoots.
    pub fn budget_note(&self) -> Option<String> {
        if self.algo == Algo::Reinforce {
            return Some(format!(
                "REINFORCE collects complete episodes until total_timesteps = {} is reached; \
                 the last batch may go past it",
                self.total_timesteps
            ));
        }
        let planned = self.num_iterations() * self.batch_size() as u64;
        (planned != self.total_timesteps).then(|| {
            format!(
                "total_timesteps = {} is not a multiple of num_envs × num_steps = {}: \
                 {} iterations, {} steps will run",
                self.total_timesteps,
                self.batch_size(),
                self.num_iterations(),
                planned
            )
        })
    }

    pub fn kl_controller(&self) -> KlController {
        match self.kl_target {
            Some(target) => KlController::Adaptive {
                beta: self.kl_coef,
                target,
            },
            None => KlController::Fixed { beta: self.kl_coef },
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        gradgym_envs::spec(&self.env_id).map_err(|e| bad("env_id", e.to_string()))?;
        for (field, value) in [
            ("num_envs", self.num_envs),
            ("num_steps", self.num_steps),
            ("num_minibatches", self.num_minibatches),
            ("update_epochs", self.update_epochs),
            ("torch_threads", self.torch_threads),
        ] {
            if value == 0 {
                return Err(bad(field, "must be at least 1"));
            }
        }
        if let Some((f, m)) = crate::limits::over(
            &[("torch_threads", self.torch_threads)],
            crate::limits::MOST_THREADS,
        )
        .or_else(|| {
            // It sizes a buffer: past the cap, the allocation's size overflowed (a panic after
            // training) instead of a config error before it. (num_envs and num_steps have
            // their own checks below: overflow, then the memory estimate.)
            crate::limits::over(
                &[("eval_episodes", self.eval_episodes)],
                crate::limits::MOST_SIZE,
            )
        }) {
            return Err(bad(f, m));
        }
        // The gradient steps of one iteration: a signal stops a run between iterations, so
        // an iteration must end in reasonable time (2²⁴ steps of a tiny minibatch take
        // minutes, not the days an unchecked update_epochs could).
        let steps = (self.update_epochs as u128) * (self.num_minibatches as u128);
        if steps > crate::limits::MOST_SIZE as u128 {
            return Err(bad(
                "update_epochs",
                format!(
                    "update_epochs × num_minibatches = {} × {} gradient steps per iteration is more than gradgym allows ({})",
                    self.update_epochs,
                    self.num_minibatches,
                    crate::limits::MOST_SIZE
                ),
            ));
        }
        if self.num_envs.checked_mul(self.num_steps).is_none() {
            return Err(bad(
                "num_steps",
                format!(
                    "num_envs × num_steps = {} × {} overflows",
                    self.num_envs, self.num_steps
                ),
            ));
        }
        if self.total_timesteps == 0 {
            return Err(bad("total_timesteps", "must be at least 1"));
        }
        if self.hidden_sizes.is_empty() || self.hidden_sizes.contains(&0) {
            return Err(bad(
                "hidden_sizes",
                format!(
                    "needs at least one layer, all widths ≥ 1 (got {:?})",
                    self.hidden_sizes
                ),
            ));
        }
        // A width whose weight matrix would overflow an allocation's size (a panic).
        if let Some(w) = self
            .hidden_sizes
            .iter()
            .find(|&&w| w > crate::limits::MOST_SIZE)
        {
            return Err(bad(
                "hidden_sizes",
                format!(
                    "a width of {w} is more than gradgym allows ({})",
                    crate::limits::MOST_SIZE
                ),
            ));
        }
        if let Some(m) = crate::limits::mlp_too_many_parameters(&self.hidden_sizes, 1) {
            return Err(bad("hidden_sizes", m));
        }
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(field, format!("must be a positive number (got {v})")))
            }
        };
        let non_negative = |field: &'static str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(bad(field, format!("must be ≥ 0 (got {v})")))
            }
        };
        positive("learning_rate", self.learning_rate)?;
        positive("adam_eps", self.adam_eps)?;
        positive("clip_coef", self.clip_coef)?;
        non_negative("ent_coef", self.ent_coef)?;
        non_negative("vf_coef", self.vf_coef)?;
        non_negative("max_grad_norm", self.max_grad_norm)?;
        non_negative("kl_coef", self.kl_coef)?;
        non_negative("ref_kl_coef", self.ref_kl_coef)?;
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return Err(bad(
                "gamma",
                format!("must be in (0, 1] (got {})", self.gamma),
            ));
        }
        if !(0.0..=1.0).contains(&self.gae_lambda) {
            return Err(bad(
                "gae_lambda",
                format!("must be in [0, 1] (got {})", self.gae_lambda),
            ));
        }
        if let Some(t) = self.target_kl {
            positive("target_kl", t)?;
        }
        if let Some(t) = self.kl_target {
            positive("kl_target", t)?;
        }
        if self.target_kl.is_some() && self.algo != Algo::Ppo {
            return Err(bad(
                "target_kl",
                format!(
                    "stops PPO's epochs early; algo `{}` takes one step per batch",
                    self.algo.name()
                ),
            ));
        }
        if self.kl_target.is_some() && self.ppo_loss != PpoLoss::Kl {
            return Err(bad(
                "kl_target",
                "adapts PPO-KL's kl_coef, which only ppo_loss = \"kl\" reads",
            ));
        }
        if self.kl_target.is_some() && self.kl_coef == 0.0 {
            return Err(bad(
                "kl_coef",
                "the adaptive rule (kl_target) only halves or doubles β, so it would stay 0",
            ));
        }
        if !self.log_std_init.is_finite() {
            return Err(bad("log_std_init", "must be finite"));
        }
        if self.algo == Algo::Ppo && self.batch_size() % self.num_minibatches != 0 {
            return Err(bad(
                "num_minibatches",
                format!(
                    "must divide num_envs × num_steps = {} (got {})",
                    self.batch_size(),
                    self.num_minibatches
                ),
            ));
        }
        if self.algo != Algo::Reinforce && self.total_timesteps < self.batch_size() as u64 {
            return Err(bad(
                "total_timesteps",
                format!(
                    "is smaller than one rollout of num_envs × num_steps = {}",
                    self.batch_size()
                ),
            ));
        }
        if self.backend == BackendKind::Native && self.device != "cpu" {
            return Err(bad(
                "backend",
                format!(
                    "`native` runs on the CPU only, and device = \"{}\"; use `libtorch` or `auto`",
                    self.device
                ),
            ));
        }
        crate::device::parse_device(&self.device).map_err(|e| bad("device", e))?;
        if let Some(prefs) = &self.prefs {
            prefs.validate(self)?;
        }
        // A config checked for other machines (a Slurm script's nodes) is not bound by this
        // one's memory; `--emit-slurm` checks it against `[slurm] mem` instead.
        let available =
            available_memory().filter(|_| !crate::device::checking_for_other_machines());
        if let Some((available, has)) = available {
            let need = self.memory_estimate();
            // A preference run's store may be what does not fit: named by the field that
            // sets its largest part.
            if let Some(p) = self.prefs.as_ref().filter(|_| need > available) {
                let (labels, round, window) = p.memory_parts(self);
                let rest = need - (labels + round + window);
                if labels + round >= window.max(rest) {
                    return Err(bad(
                        "prefs.labels",
                        format!(
                            "{} labels of {} segments × {} transitions would need about {} of \
                             memory for the labels and one round's candidates ({} for the \
                             whole run); {has}",
                            p.labels,
                            p.num_segments,
                            p.segment_length,
                            gib(labels + round),
                            gib(need),
                        ),
                    ));
                }
                if window >= rest {
                    // More than one rollout kept only where a segment outgrows one.
                    let or_segment = if p.rollout_window(self) > 1 {
                        " or prefs.segment_length"
                    } else {
                        ""
                    };
                    return Err(bad(
                        "num_envs",
                        format!(
                            "the {} rollout(s) a {}-transition segment may span, of num_envs = \
                             {} × {} steps, would need about {} of memory for the preference \
                             loop ({} for the whole run); {has}: lower \
                             num_envs{or_segment}",
                            p.rollout_window(self),
                            p.segment_length,
                            self.num_envs,
                            self.rollout_steps(),
                            gib(window),
                            gib(need),
                        ),
                    ));
                }
            }
            if need > available {
                // Named by what is largest: the network's copies of its parameters, or what
                // grows with the rollout (its buffer, the envs, a minibatch's activations).
                let network = self.parameter_memory_estimate();
                if network >= need - network {
                    return Err(bad(
                        "hidden_sizes",
                        format!(
                            "hidden_sizes = {:?} is {} parameters: their copies (weights, \
                             gradients, Adam's two moments, the acting and evaluated policies', a \
                             checkpoint's) would need about {} of memory ({} for the whole run); {has}",
                            self.hidden_sizes,
                            self.parameter_count(),
                            gib(network),
                            gib(need),
                        ),
                    ));
                }
                return Err(bad(
                    "num_envs",
                    format!(
                        "num_envs = {} × {} steps per rollout would need about {} of memory \
                         (rollout buffer, envs and a minibatch's activations; {} for the whole \
                         run); {has}",
                        self.num_envs,
                        self.rollout_steps(),
                        gib(need - network),
                        gib(need),
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Steps per env in one rollout buffer: `num_steps`, or REINFORCE's time limit.
    pub(crate) fn rollout_steps(&self) -> u64 {
        if self.algo == Algo::Reinforce {
            gradgym_envs::spec(&self.env_id).map_or(0, |s| s.max_episode_steps as u64)
        } else {
            self.num_steps as u64
        }
    }

    /// Bytes the run allocates up front, roughly (in u128, so no product overflows): the
    /// rollout buffer `[T, N]` (observations, actions, log-probs, rewards, values, next
    /// values, flags), the learner's gathered copies of it, and the env batch.
    pub fn memory_estimate(&self) -> u128 {
        let (obs_dim, action_dim) = gradgym_envs::spec(&self.env_id).map_or((1, 1), |s| {
            (s.observation_space.dim(), s.action_space.dim())
        });
        let samples = self.num_envs as u128 * self.rollout_steps() as u128;
        // Observations twice (buffer + minibatch copies), actions, 8 floats and 2 flags.
        let per_sample = 2 * 4 * obs_dim as u128 + 8 * action_dim as u128 + 8 * 4 + 2;
        samples * per_sample
            + self.num_envs as u128 * env_batch_bytes_per_env(obs_dim)
            + self.prefs_memory_estimate()
            + self.activation_memory_estimate()
            + self.parameter_memory_estimate()
    }

    /// The networks' input width (the observation), the actor's output width (logits, or
    /// means) and its log σ parameters (one per action dimension of a continuous space).
    fn network_dims(&self) -> (u128, u128, u128) {
        gradgym_envs::spec(&self.env_id).map_or((1, 1, 0), |s| {
            let obs = s.observation_space.dim() as u128;
            match s.action_space {
                gradgym_envs::Space::Discrete { n } => (obs, n.max(1) as u128, 0),
                ref b => (obs, b.dim() as u128, b.dim() as u128),
            }
        })
    }

    /// Parameters of the actor and the critic (two MLPs of `hidden_sizes`) and log σ.
    pub fn parameter_count(&self) -> u128 {
        let (obs, outputs, log_std) = self.network_dims();
        let mlp = |out: u128| {
            let mut widths: Vec<u128> = vec![obs];
            widths.extend(self.hidden_sizes.iter().map(|&h| h as u128));
            widths.push(out);
            widths.windows(2).map(|w| (w[0] + 1) * w[1]).sum::<u128>()
        };
        mlp(outputs) + mlp(1) + log_std
    }

    /// Bytes of the parameters' copies a run holds at once, roughly: weights, gradients,
    /// Adam's two moments, the acting policy's copy, a checkpoint's bytes and the evaluation's
    /// policy; counted as seven f32 copies (a CartPole run of `hidden_sizes = [3000, 3000]`,
    /// 18.0 M parameters, peaked 476 MB above a 512-step run's, 6.6 copies).
    pub fn parameter_memory_estimate(&self) -> u128 {
        7 * 4 * self.parameter_count()
    }

    /// Bytes of one gradient step's activations, roughly: each layer's output of both networks
    /// for a minibatch (PPO's `batch / num_minibatches`, else the whole rollout) and two
    /// backward buffers of the widest layer.
    fn activation_memory_estimate(&self) -> u128 {
        let (obs, outputs, _) = self.network_dims();
        let samples = self.num_envs as u128 * self.rollout_steps() as u128;
        let n = if self.algo == Algo::Ppo {
            samples.div_ceil(self.num_minibatches.max(1) as u128)
        } else {
            samples
        };
        let hidden: u128 = self.hidden_sizes.iter().map(|&h| h as u128).sum();
        let widest = self
            .hidden_sizes
            .iter()
            .map(|&h| h as u128)
            .chain([obs, outputs])
            .max()
            .unwrap_or(1);
        4 * n * (2 * (obs + hidden) + outputs + 1 + 2 * widest)
    }

    /// The preference loop's share of [`TrainConfig::memory_estimate`] (0 without `[prefs]`).
    fn prefs_memory_estimate(&self) -> u128 {
        self.prefs.as_ref().map_or(0, |p| p.memory_estimate(self))
    }

    /// Reads a TOML table over `self`: keys present replace fields, nested tables merge key
    /// by key ([`deep_merge`]), unknown keys are errors naming `source` and the key.
    pub fn overlay_toml(&self, text: &str, source: &str) -> Result<Self, String> {
        let mut base = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        let over: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{source}: {e}"))?;
        deep_merge(&mut base, over);
        base.try_into()
            .map_err(|e: toml::de::Error| format!("{source}: {e}"))
    }

    /// The config as the TOML a run folder keeps beside its results.
    pub fn echo_toml(&self) -> Result<String, toml::ser::Error> {
        Ok(format!(
            "# Resolved by gradgym; `gradgym train --config` on this file repeats the run.\n{}",
            toml::to_string(self)?
        ))
    }
}

/// Merges `over` into `base`: a table in both merges key by key (recursively); anything else
/// in `over` replaces what `base` has. So a later layer that sets one key of a nested table
/// keeps the table's other keys.
pub fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_cleanrl_ppo_and_valid() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        // CleanRL's own budget is not a whole number of rollouts: 976 × 512 = 499,712.
        let note = c.budget_note().unwrap();
        assert!(note.contains("976 iterations, 499712 steps"), "{note}");
        let exact = TrainConfig {
            total_timesteps: 512 * 10,
            ..c.clone()
        };
        assert_eq!(exact.budget_note(), None);
        assert_eq!(
            (c.batch_size(), c.minibatch_size(), c.num_iterations()),
            (512, 128, 976)
        );
    }

    /// Sizes under a GiB keep their digits: a need and a limit that differ never read alike,
    /// and a tiny GRADGYM_MEMORY_LIMIT (the RLHF check's messages use this too) does not read
    /// "0.0 GiB".
    #[test]
    fn sizes_in_messages_keep_their_digits_under_a_gib() {
        assert_eq!(gib(3 << 30), "3.0 GiB");
        assert_eq!(gib(2 << 30), "2.0 GiB");
        assert_eq!(gib(200 << 20), "200.0 MiB");
        assert_ne!(gib(230 << 20), gib(190 << 20));
        assert_eq!(gib(5 << 20), "5.0 MiB");
        assert_eq!(gib(512), "512 bytes");
        assert_eq!(gib(107), "107 bytes");
    }

    /// The preference loop's memory counts in the run's estimate: each label holds K segments
    /// of reward-model inputs (CartPole: 4 observations + 2 one-hot actions, f32).
    #[test]
    fn a_preference_runs_label_store_counts_in_its_memory_estimate() {
        let plain = TrainConfig {
            env_id: "FixedHorizonCartPole-v0".into(),
            ..TrainConfig::default()
        };
        let with = |labels: u64, segment_length: usize| TrainConfig {
            prefs: Some(prefs::PrefsConfig {
                labels,
                segment_length,
                ..Default::default()
            }),
            ..plain.clone()
        };
        let extra = |c: &TrainConfig| c.memory_estimate() - plain.memory_estimate();
        // The default budget: about 1000 × 2 × 10 × 6 × 4 bytes, well under a few MiB.
        let small = extra(&with(1000, 10));
        assert!((1000 * 2 * 10 * 6 * 4..4 << 20).contains(&small), "{small}");
        // 2²⁴ labels of 500-step segments: the labels alone are 2²⁴ × 2 × 500 × 6 × 4 bytes.
        let big = extra(&with(1 << 24, 500));
        assert!(big >= (1u128 << 24) * 2 * 500 * 6 * 4, "{big}");
        assert!(big < (1u128 << 24) * 2 * 500 * 6 * 4 * 2, "{big}");
        // A2C's 5-step rollouts and 500-step segments: 101 rollouts of every env are kept, so
        // the window, not the labels, is what grows with num_envs.
        let mut a2c = with(100, 500);
        (a2c.algo, a2c.num_steps, a2c.num_envs) = (Algo::A2c, 5, 4_000_000);
        let p = a2c.prefs.clone().unwrap();
        assert_eq!(p.rollout_window(&a2c), 101);
        let (labels, round, window) = p.memory_parts(&a2c);
        assert!(labels + round < 1 << 24, "{labels} {round}");
        // Each transition: observation, action, reward, flags and input row, held twice.
        assert_eq!(window, 101 * 4_000_000 * 5 * 2 * (16 + 8 + 8 + 2 + 24));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let c = TrainConfig::default();
        let e = c.overlay_toml("learning_rat = 0.1", "my.toml").unwrap_err();
        assert!(e.contains("my.toml") && e.contains("learning_rat"), "{e}");
        let e = c
            .overlay_toml("num_envs = \"four\"", "my.toml")
            .unwrap_err();
        assert!(e.contains("num_envs"), "{e}");
        let over = c.overlay_toml("num_envs = 0", "my.toml").unwrap();
        assert_eq!(over.validate().unwrap_err().field, "num_envs");
        let over = c.overlay_toml("env_id = \"CartPole-v0\"", "x").unwrap();
        let e = over.validate().unwrap_err();
        assert!(e.to_string().contains("CartPole-v1"), "{e}");
        let over = c.overlay_toml("num_minibatches = 3", "x").unwrap();
        assert_eq!(over.validate().unwrap_err().field, "num_minibatches");
        let over = c.overlay_toml("gamma = 1.5\nalgo = \"a2c\"", "x").unwrap();
        assert_eq!(over.validate().unwrap_err().field, "gamma");
        assert!(c.overlay_toml("algo = \"dqn\"", "x").is_err());
        let over = c.overlay_toml("ref_kl_coef = -0.1", "x").unwrap();
        assert_eq!(over.validate().unwrap_err().field, "ref_kl_coef");
        // PPO-KL's knobs where nothing reads them, and a β its adaptive rule cannot move.
        for (text, field) in [
            ("algo = \"a2c\"\ntarget_kl = 0.01", "target_kl"),
            ("kl_target = 0.01", "kl_target"),
            (
                "ppo_loss = \"kl\"\nkl_coef = 0.0\nkl_target = 0.01",
                "kl_coef",
            ),
        ] {
            let over = c.overlay_toml(text, "x").unwrap();
            assert_eq!(over.validate().unwrap_err().field, field, "{text}");
        }
        let fine = "ppo_loss = \"kl\"\nkl_coef = 0.5\nkl_target = 0.01\ntarget_kl = 0.02";
        c.overlay_toml(fine, "x").unwrap().validate().unwrap();
        let over = c
            .overlay_toml("num_envs = 4294967296\nnum_steps = 4294967296", "x")
            .unwrap();
        assert_eq!(over.validate().unwrap_err().field, "num_steps");
        // Large but not overflowing: refused by the memory estimate before any allocation.
        let over = c
            .overlay_toml(
                "num_envs = 4000000\nnum_steps = 1000000\ntotal_timesteps = 10000000000000",
                "x",
            )
            .unwrap();
        let e = over.validate().unwrap_err();
        assert_eq!(e.field, "num_envs");
        assert!(e.message.contains("would need about"), "{e}");
        // Each refused before training: a huge eval_episodes used to panic after it, a huge
        // update_epochs to run one iteration for days, deaf to signals.
        for (toml, field) in [
            ("eval_episodes = 9223372036854775807", "eval_episodes"),
            ("update_epochs = 9223372036854775807", "update_epochs"),
            ("update_epochs = 5000000", "update_epochs"),
            // Each width within its cap, their product not (before: an abort, exit 134).
            ("hidden_sizes = [16777216, 16777216]", "hidden_sizes"),
        ] {
            let over = c.overlay_toml(toml, "x").unwrap();
            let e = over.validate().unwrap_err();
            assert_eq!(e.field, field, "{toml}");
            assert!(e.message.contains("more than gradgym allows"), "{e}");
        }
        assert!(
            c.overlay_toml("update_epochs = 4000000", "x")
                .unwrap()
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn nested_tables_merge_key_by_key() {
        let mut base: toml::Table = "a = 1\n[t]\nx = 1\ny = 2\n[t.deep]\np = 1\nq = 2"
            .parse()
            .unwrap();
        let over: toml::Table = "b = 3\n[t]\ny = 20\n[t.deep]\nq = 30".parse().unwrap();
        deep_merge(&mut base, over);
        let expected: toml::Table = "a = 1\nb = 3\n[t]\nx = 1\ny = 20\n[t.deep]\np = 1\nq = 30"
            .parse()
            .unwrap();
        assert_eq!(base, expected);
        // A table replaces a non-table and the other way round.
        let mut base: toml::Table = "t = 1".parse().unwrap();
        deep_merge(&mut base, "[t]\nx = 1".parse().unwrap());
        assert_eq!(base["t"]["x"].as_integer(), Some(1));
    }

    #[test]
    fn fields_list_every_key_with_its_doc() {
        let keys: Vec<String> = match serde_json::to_value(TrainConfig::default()).unwrap() {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            _ => unreachable!(),
        };
        let mut names: Vec<String> = TrainConfig::FIELDS
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        names.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(names, keys);
        for f in TrainConfig::FIELDS {
            assert!(!f.doc.trim().is_empty(), "`{}` has no doc", f.name);
        }
    }

    #[test]
    fn the_echo_reads_back_to_the_same_config() {
        let c = TrainConfig {
            target_kl: Some(0.02),
            hidden_sizes: vec![8, 3],
            ..TrainConfig::default()
        };
        let echo = c.echo_toml().unwrap();
        assert_eq!(TrainConfig::default().overlay_toml(&echo, "echo"), Ok(c));
    }
}
