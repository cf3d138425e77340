//! The training configuration: one struct, CleanRL's hyperparameter names, documented defaults
//! (CleanRL's `ppo.py` for CartPole-v1), read from TOML with unknown keys rejected.
//!
//! Resolution order, later wins: these defaults → the tuned file for (env, algo) shipped in
//! `benchmarks/configs/` → a user's `--config FILE.toml` → command-line flags.

use serde::{Deserialize, Serialize};

use gradgym_algorithms::kl::KlController;

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Environment id (`gradgym envs list`).
    pub env_id: String,
    /// `reinforce`, `a2c` or `ppo`.
    pub algo: Algo,
    /// The run's seed; every random stream derives from it.
    pub seed: u64,
    /// Environment steps to train for (across all envs).
    pub total_timesteps: u64,
    /// `cpu` or `cuda` (`cuda:N` for a given GPU).
    pub device: String,
    /// Who computes gradient steps: `auto` (native on the CPU, libtorch on CUDA), `native`
    /// (plain Rust, CPU) or `libtorch` (autograd; the reference). See `agents/src/backend/`.
    pub backend: BackendKind,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Parallel environments.
    pub num_envs: usize,
    /// Steps per env per rollout (REINFORCE ignores it: it rolls complete episodes).
    pub num_steps: usize,
    /// Anneal the learning rate linearly to 0 over training.
    pub anneal_lr: bool,
    /// Discount factor γ.
    pub gamma: f64,
    /// GAE's λ (A2C: 1.0 gives n-step returns over `num_steps`).
    pub gae_lambda: f64,
    /// Minibatches per epoch (PPO).
    pub num_minibatches: usize,
    /// Epochs over each rollout (PPO).
    pub update_epochs: usize,
    /// Normalise advantages per minibatch.
    pub norm_adv: bool,
    /// PPO's ε.
    pub clip_coef: f64,
    /// Clip the value loss around the old values (PPO).
    pub clip_vloss: bool,
    /// Entropy bonus coefficient.
    pub ent_coef: f64,
    /// Value loss coefficient.
    pub vf_coef: f64,
    /// Global gradient-norm clip (0 disables it).
    pub max_grad_norm: f64,
    /// Stop the epochs of an update once the approximate KL exceeds this (PPO).
    pub target_kl: Option<f64>,
    /// PPO's surrogate: `clip` or `kl`.
    pub ppo_loss: PpoLoss,
    /// Initial β of the KL penalty (`ppo_loss = "kl"`).
    pub kl_coef: f64,
    /// With `ppo_loss = "kl"`: adapt β towards this KL (Schulman et al. 2017, section 4).
    pub kl_target: Option<f64>,
    /// REINFORCE's weights: `total` or `reward_to_go`.
    pub reinforce_return: ReturnKind,
    /// REINFORCE: subtract a learned state-value baseline.
    pub baseline: bool,
    /// Hidden layer widths of both MLPs.
    pub hidden_sizes: Vec<usize>,
    /// Initial log standard deviation of a Gaussian policy.
    pub log_std_init: f64,
    /// Adam's ε.
    pub adam_eps: f64,
    /// Deterministic evaluation episodes at the end of training.
    pub eval_episodes: usize,
    /// Threads libtorch may use (1 keeps parallel sweeps reproducible and fast).
    pub torch_threads: usize,
}

impl Default for TrainConfig {
    /// CleanRL's `ppo.py` defaults (CartPole-v1).
    fn default() -> Self {
        Self {
            env_id: "CartPole-v1".into(),
            algo: Algo::Ppo,
            seed: 1,
            total_timesteps: 500_000,
            device: "cpu".into(),
            backend: BackendKind::Auto,
            learning_rate: 2.5e-4,
            num_envs: 4,
            num_steps: 128,
            anneal_lr: true,
            gamma: 0.99,
            gae_lambda: 0.95,
            num_minibatches: 4,
            update_epochs: 4,
            norm_adv: true,
            clip_coef: 0.2,
            clip_vloss: true,
            ent_coef: 0.01,
            vf_coef: 0.5,
            max_grad_norm: 0.5,
            target_kl: None,
            ppo_loss: PpoLoss::Clip,
            kl_coef: 1.0,
            kl_target: None,
            reinforce_return: ReturnKind::RewardToGo,
            baseline: true,
            hidden_sizes: vec![64, 64],
            log_std_init: 0.0,
            adam_eps: 1e-5,
            eval_episodes: 10,
            torch_threads: 1,
        }
    }
}

/// A configuration that cannot run, naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("config field `{field}`: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
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
        Ok(())
    }

    /// Reads a TOML table over `self` (keys present replace fields; unknown keys are errors).
    pub fn overlay_toml(&self, text: &str, source: &str) -> Result<Self, String> {
        let mut base = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        let over: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{source}: {e}"))?;
        for (k, v) in over {
            base.insert(k, v);
        }
        base.try_into()
            .map_err(|e: toml::de::Error| format!("{source}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_cleanrl_ppo_and_valid() {
        let c = TrainConfig::default();
        c.validate().unwrap();
        assert_eq!(
            (c.batch_size(), c.minibatch_size(), c.num_iterations()),
            (512, 128, 976)
        );
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
    }
}
