//! The config of an RLHF-on-text run (`gradgym rlhf --config FILE`): one TOML file with a
//! table per stage. Every field has a default, so an empty file is a valid config (the demo's
//! model, not its data sizes: the demo is configs/rlhf/demo.toml); an
//! unknown field, a value of the wrong type or out of range is an error naming `table.field`.
//!
//! ```toml
//! seed = 1
//! device = "cpu"
//! [model]        # the causal transformer (vocabulary: the review language's, 290 tokens)
//! [pretrain]     # next-token loss on the grammar's corpus
//! [sft]          # next-token loss on good demonstrations; the result is the reference p
//! [labels]       # comparisons of SFT samples, labelled by the synthetic human (gold judge)
//! [reward_model] # SFT body + scalar head, pairwise / K-way loss (+ Askell's LM term)
//! [rl]           # token-level PPO / REINFORCE / A2C on R = r − β log π/p, or RLOO / GRPO
//! [eval]         # gold and proxy scores, KL, best-of-n
//! ```
//!
//! Names follow CleanRL where the quantity is the same (`learning_rate`, `update_epochs`,
//! `num_minibatches`, `clip_coef`, `vf_coef`, `ent_coef`, `max_grad_norm`, `gae_lambda`).

use serde::{Deserialize, Serialize};

use super::{Algo, BackendKind, PpoLoss};
use crate::limits::{MOST_SIZE, MOST_STEPS, MOST_THREADS, over};
use crate::nn::sampling::SamplingConfig;
use gradgym_algorithms::kl::{KlController, ReferenceKl};

/// A problem with a config, naming its field (`table.field`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct RlhfConfigError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> RlhfConfigError {
    RlhfConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// The RL stage's algorithm on text (`rl.algo`): the classic tasks' three, and two that
/// sample `rl.num_generations` responses per prompt and need no value function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextAlgo {
    Reinforce,
    A2c,
    Ppo,
    /// REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024), with PPO's clip over
    /// its epochs: `gradgym_algorithms::group`.
    Rloo,
    /// Group relative policy optimisation (Shao et al. 2024): `gradgym_algorithms::group`.
    Grpo,
}

impl TextAlgo {
    pub const ALL: [&'static str; 5] = ["reinforce", "a2c", "ppo", "rloo", "grpo"];

    pub fn name(&self) -> &'static str {
        match self {
            TextAlgo::Reinforce => "reinforce",
            TextAlgo::A2c => "a2c",
            TextAlgo::Ppo => "ppo",
            TextAlgo::Rloo => "rloo",
            TextAlgo::Grpo => "grpo",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "rloo" => Ok(TextAlgo::Rloo),
            "grpo" => Ok(TextAlgo::Grpo),
            other => Algo::parse(other)
                .map(TextAlgo::from)
                .map_err(|_| format!("unknown algo `{other}`; valid: {}", Self::ALL.join(", "))),
        }
    }

    /// RLOO or GRPO: k responses per prompt, advantages within each group, no value function.
    pub fn grouped(&self) -> bool {
        matches!(self, TextAlgo::Rloo | TextAlgo::Grpo)
    }

    /// Several epochs of clipped steps (PPO, RLOO, GRPO), not one plain step per batch.
    pub fn clipped(&self) -> bool {
        matches!(self, TextAlgo::Ppo | TextAlgo::Rloo | TextAlgo::Grpo)
    }
}

impl From<Algo> for TextAlgo {
    fn from(a: Algo) -> Self {
        match a {
            Algo::Reinforce => TextAlgo::Reinforce,
            Algo::A2c => TextAlgo::A2c,
            Algo::Ppo => TextAlgo::Ppo,
        }
    }
}

/// GRPO's division of each advantage by its group's standard deviation (TRL's `scale_rewards`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleRewards {
    /// `(r − mean)/(std + 1e-4)` within the group, as Shao et al. (the default).
    Group,
    /// `r − mean`: no division (Liu et al. 2025's Dr. GRPO, TRL's `"none"`).
    None,
}

fn is_group(s: &ScaleRewards) -> bool {
    *s == ScaleRewards::Group
}

/// The transformer's shape (its vocabulary is the review language's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Positions: the 8-token prompt plus the longest response must fit.
    pub context: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
}

impl ModelConfig {
    /// `context 32, width 64, 2 layers, 4 heads`.
    pub fn describe(&self) -> String {
        format!(
            "context {}, width {}, {} layers, {} heads",
            self.context, self.width, self.layers, self.heads
        )
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            context: 32,
            width: 64,
            layers: 2,
            heads: 4,
        }
    }
}

/// A next-token stage (pretraining or SFT): AdamW steps on batches of fresh sequences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmStageConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
}

/// The `[pretrain]` and `[sft]` tables: the same fields, different defaults.
macro_rules! lm_table {
    ($name:ident, $steps:expr, $batch:expr, $lr:expr, $wd:expr) => {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            pub steps: usize,
            pub batch_size: usize,
            pub learning_rate: f64,
            pub weight_decay: f64,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    steps: $steps,
                    batch_size: $batch,
                    learning_rate: $lr,
                    weight_decay: $wd,
                }
            }
        }

        impl $name {
            pub fn stage(&self) -> LmStageConfig {
                LmStageConfig {
                    steps: self.steps,
                    batch_size: self.batch_size,
                    learning_rate: self.learning_rate,
                    weight_decay: self.weight_decay,
                }
            }
        }
    };
}

lm_table!(PretrainConfig, 600, 32, 3e-3, 0.01);
lm_table!(SftConfig, 300, 32, 1e-3, 0.01);

/// Comparisons made by the synthetic human from the gold judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelsConfig {
    /// Comparisons per round (each of `num_responses` SFT samples for one prompt).
    pub comparisons: usize,
    /// Responses per comparison: 2 (pairwise, Stiennon) or K > 2 (best of K, Ziegler: 4).
    pub num_responses: usize,
    /// The share kept out of fitting, for held-out accuracy.
    pub held_out: f64,
    /// The human's Boltzmann temperature (0: always the better response).
    pub temperature: f64,
    /// Gold scores closer than this are a tie (μ = ½, ½).
    pub margin: f64,
    /// The chance the human answers at random.
    pub epsilon: f64,
    /// Sampling temperature of the responses shown.
    pub sample_temperature: f64,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            comparisons: 2000,
            num_responses: 2,
            held_out: 0.1,
            temperature: 0.0,
            margin: 0.05,
            epsilon: 0.0,
            sample_temperature: 1.0,
        }
    }
}

/// The reward model: the SFT network with a scalar head, trained on the comparisons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardModelConfig {
    /// Passes over the training comparisons.
    pub epochs: usize,
    /// Comparisons per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// γ of Askell et al.'s `γ·L_pref + β·L_LM`: the preference loss's weight.
    pub preference_coef: f64,
    /// β of the same: the next-token loss on the chosen response (0: off).
    pub lm_coef: f64,
    /// Normalise so that the SFT policy's samples score mean 0 and std 1 (Ziegler, Stiennon),
    /// estimated on this many samples (0: no normalisation).
    pub normalize_samples: usize,
}

impl Default for RewardModelConfig {
    fn default() -> Self {
        Self {
            epochs: 2,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            preference_coef: 1.0,
            lm_coef: 0.0,
            normalize_samples: 512,
        }
    }
}

/// Token-level RL on R(x, y) = r(x, y) − β log π(y|x)/p(y|x).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlConfig {
    /// `ppo`, `reinforce` (reward-to-go minus a learned baseline) or `a2c` (GAE, one step per
    /// batch), as on the classic tasks; or, on text only, `rloo` or `grpo` ([`TextAlgo`]).
    pub algo: String,
    /// `rloo` and `grpo`: responses sampled per prompt (TRL's name), k; 4 when unset
    /// ([`RlConfig::generations`]). `batch_size` counts responses, so each batch holds
    /// `batch_size / k` prompts. Refused under the other algorithms; left out of a run's
    /// config.toml while unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_generations: Option<usize>,
    /// `grpo`: `group` (the default) divides each advantage by its group's standard deviation;
    /// `none` does not (Dr. GRPO). Refused under the other algorithms; left out of a run's
    /// config.toml while `group`.
    #[serde(skip_serializing_if = "is_group")]
    pub scale_rewards: ScaleRewards,
    /// Policy updates (batches of rollouts) in all, over all rounds.
    pub updates: usize,
    /// Responses per batch: one per prompt, or for `rloo` and `grpo` `num_generations` per
    /// prompt (`batch_size / num_generations` prompts).
    pub batch_size: usize,
    /// Response tokens at most (`<eos>` included).
    pub max_response: usize,
    pub learning_rate: f64,
    /// The value function's learning rate (it is its own network, initialised from the reward
    /// model, as in Stiennon et al.).
    pub value_learning_rate: f64,
    /// CleanRL's (and TRL's default linear schedule): both learning rates fall linearly over
    /// the updates of all rounds, to `1/updates` of their start at the last. Off by default
    /// here; left out of a run's config.toml while off.
    #[serde(skip_serializing_if = "is_false")]
    pub anneal_lr: bool,
    pub update_epochs: usize,
    pub num_minibatches: usize,
    pub clip_coef: f64,
    /// PPO's policy surrogate: `clip` (`L^CLIP`, the default) or `kl` (`L^KLPEN`: the ratio
    /// times the advantage minus `kl_coef` times the k3 estimate of KL[π_old ‖ π] per token),
    /// as the classic tasks' `ppo_loss`. Left out of a run's config.toml while `clip`.
    #[serde(skip_serializing_if = "is_clip")]
    pub ppo_loss: PpoLoss,
    /// PPO-KL's β toward the policy before the update (its initial β with `ppo_kl_target`).
    /// Not the KL to the SFT reference, which is `beta`. Read only with `ppo_loss = "kl"`;
    /// left out of a run's config.toml at its default, 1.
    #[serde(skip_serializing_if = "is_default_kl_coef")]
    pub kl_coef: f64,
    /// With `ppo_loss = "kl"`: after each update halve `kl_coef` if the KL the update moved
    /// the policy by (measured after it over the batch, Schulman's d) fell below this / 1.5,
    /// double it above this × 1.5 (Schulman et al. 2017, section 4). The classic tasks call it `kl_target`, which here is Ziegler's controller of
    /// the KL to the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppo_kl_target: Option<f64>,
    /// CleanRL's early stop: no more epochs in an update once the approximate KL to the old
    /// policy (k3, mean over its last minibatch's real tokens) passes this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_kl: Option<f64>,
    pub clip_vloss: bool,
    pub vf_coef: f64,
    pub ent_coef: f64,
    pub max_grad_norm: f64,
    pub gamma: f64,
    pub gae_lambda: f64,
    pub norm_adv: bool,
    /// β of the KL penalty (the initial β when `kl_target` is set).
    pub beta: f64,
    /// Set: Ziegler's adaptive β aiming the KL per sequence at this.
    pub kl_target: Option<f64>,
    /// The adaptive controller's horizon, in sequences (Ziegler: 10,000).
    pub kl_horizon: f64,
    /// Subtracted from the score of a response that did not end with `<eos>`.
    pub missing_eos_penalty: f64,
    /// Ziegler's online mode: this many rounds of (sample the current policy, label, refit the
    /// reward model on every label so far, optimise). 1: offline.
    pub rounds: usize,
    /// Write samples.jsonl entries every this many updates (and at the last). They are an
    /// evaluation's samples: an update they fall on is evaluated too (eval.csv gains its row).
    pub samples_every: usize,
    /// What runs the RL stage's passes of the policy and the value function: `auto` (the
    /// default: native on the CPU, libtorch on a GPU, as the classic tasks' `backend`),
    /// `native` (plain Rust on the CPU, `agents/src/nn/gpt_native.rs`) or `libtorch`
    /// (autograd). Left out of a run's config.toml while `auto`; the manifest's `rl_backend`
    /// names the backend that ran (`native` for every committed run in `results/rlhf*`).
    #[serde(skip_serializing_if = "is_auto")]
    pub backend: BackendKind,
}

fn is_auto(b: &BackendKind) -> bool {
    *b == BackendKind::Auto
}

impl RlConfig {
    /// RLOO's and GRPO's responses per prompt: `num_generations`, else 4.
    pub fn generations(&self) -> usize {
        self.num_generations.unwrap_or(DEFAULT_GENERATIONS)
    }

    /// PPO-KL's β toward the old policy (`ppo_loss = "kl"`): fixed at `kl_coef`, or adapted
    /// toward `ppo_kl_target`.
    pub fn ppo_kl(&self) -> KlController {
        match self.ppo_kl_target {
            None => KlController::Fixed { beta: self.kl_coef },
            Some(target) => KlController::Adaptive {
                beta: self.kl_coef,
                target,
            },
        }
    }
}

/// `rl.num_generations` when a config does not set it: k = 4, one of the two Ahmadian et al.
/// 2024 ran RLOO with (TRL defaults to 2 for RLOO and 8 for GRPO).
const DEFAULT_GENERATIONS: usize = 4;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_clip(l: &PpoLoss) -> bool {
    *l == PpoLoss::Clip
}

/// PPO-KL's initial β when a config does not set it (Schulman et al. 2017 start at 1, as the
/// classic tasks' `kl_coef`).
const DEFAULT_KL_COEF: f64 = 1.0;

fn is_default_kl_coef(c: &f64) -> bool {
    c.to_bits() == DEFAULT_KL_COEF.to_bits()
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            algo: "ppo".into(),
            num_generations: None,
            scale_rewards: ScaleRewards::Group,
            updates: 60,
            batch_size: 64,
            max_response: 24,
            learning_rate: 3e-4,
            value_learning_rate: 3e-4,
            anneal_lr: false,
            update_epochs: 4,
            num_minibatches: 4,
            clip_coef: 0.2,
            ppo_loss: PpoLoss::Clip,
            kl_coef: DEFAULT_KL_COEF,
            ppo_kl_target: None,
            target_kl: None,
            clip_vloss: true,
            vf_coef: 0.1,
            ent_coef: 0.0,
            max_grad_norm: 1.0,
            gamma: 1.0,
            gae_lambda: 0.95,
            norm_adv: true,
            beta: 0.05,
            kl_target: None,
            kl_horizon: 10_000.0,
            missing_eos_penalty: 0.0,
            rounds: 1,
            samples_every: 20,
            backend: BackendKind::Auto,
        }
    }
}

/// Evaluation: fresh prompts, scored by the reward model (proxy) and the gold judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Prompts per evaluation.
    pub prompts: usize,
    /// Evaluate every this many updates (and at the last, and wherever `rl.samples_every`
    /// asks for samples).
    pub every: usize,
    /// The n of best-of-n (each at most `samples_per_prompt`).
    pub best_of_n: Vec<usize>,
    /// Reference samples drawn per prompt for best-of-n's estimates (its expected scores and KL).
    pub samples_per_prompt: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            prompts: 128,
            every: 10,
            best_of_n: vec![1, 2, 4, 8, 16, 32, 64],
            samples_per_prompt: 128,
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlhfConfig {
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch's intra-op threads (0: its default).
    pub threads: usize,
    pub model: ModelConfig,
    pub pretrain: PretrainConfig,
    pub sft: SftConfig,
    pub labels: LabelsConfig,
    pub reward_model: RewardModelConfig,
    pub rl: RlConfig,
    pub eval: EvalConfig,
    /// How `gradgym rlhf sample` draws its texts: `temperature`, `top_k` (0: every token),
    /// `top_p` (1: every token). RL, best-of-n, the reward model's normalisation and
    /// evaluation always sample the model itself (temperature 1, no cut): the policy gradient
    /// and the KL estimates are of that distribution (labelling has its own
    /// `labels.sample_temperature`). Left out of a run's config.toml while it is the default.
    #[serde(skip_serializing_if = "is_plain_sampling")]
    pub sample: SamplingConfig,
}

fn is_plain_sampling(s: &SamplingConfig) -> bool {
    *s == SamplingConfig::default()
}

impl Default for RlhfConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            device: "cpu".into(),
            threads: 0,
            model: ModelConfig::default(),
            pretrain: PretrainConfig::default(),
            sft: SftConfig::default(),
            labels: LabelsConfig::default(),
            reward_model: RewardModelConfig::default(),
            rl: RlConfig::default(),
            eval: EvalConfig::default(),
            sample: SamplingConfig::default(),
        }
    }
}

impl RlhfConfig {
    /// Parses TOML text (from `source`, for the message), then validates it.
    pub fn from_toml(text: &str, source: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        Ok(config)
    }

    /// The algorithm of the RL stage.
    pub fn algo(&self) -> TextAlgo {
        TextAlgo::parse(&self.rl.algo).expect("validated")
    }

    /// The KL coefficient's schedule.
    pub fn reference_kl(&self) -> ReferenceKl {
        match self.rl.kl_target {
            None => ReferenceKl::Fixed { beta: self.rl.beta },
            Some(target) => ReferenceKl::Adaptive {
                beta: self.rl.beta,
                target,
                horizon: self.rl.kl_horizon,
            },
        }
    }

    /// Every problem is named by its `table.field`.
    pub fn validate(&self) -> Result<(), RlhfConfigError> {
        crate::device::parse_device(&self.device).map_err(|m| bad("device", m))?;
        let (m, l, r, rl, e) = (
            &self.model,
            &self.labels,
            &self.reward_model,
            &self.rl,
            &self.eval,
        );
        let sizes = [
            ("model.context", m.context),
            ("model.width", m.width),
            ("model.layers", m.layers),
            ("model.heads", m.heads),
            ("pretrain.batch_size", self.pretrain.batch_size),
            ("sft.batch_size", self.sft.batch_size),
            ("labels.comparisons", l.comparisons),
            ("labels.num_responses", l.num_responses),
            ("reward_model.batch_size", r.batch_size),
            ("reward_model.normalize_samples", r.normalize_samples),
            ("rl.batch_size", rl.batch_size),
            ("rl.max_response", rl.max_response),
            ("eval.prompts", e.prompts),
            ("eval.samples_per_prompt", e.samples_per_prompt),
        ];
        let steps = [
            ("pretrain.steps", self.pretrain.steps),
            ("sft.steps", self.sft.steps),
            ("reward_model.epochs", r.epochs),
            ("rl.updates", rl.updates),
            ("rl.update_epochs", rl.update_epochs),
            ("rl.num_minibatches", rl.num_minibatches),
            ("rl.rounds", rl.rounds),
        ];
        if let Some((f, message)) = over(&sizes, MOST_SIZE)
            .or_else(|| over(&steps, MOST_STEPS))
            .or_else(|| over(&[("threads", self.threads)], MOST_THREADS))
        {
            return Err(bad(f, message));
        }
        self.sample
            .validate()
            .map_err(|(f, m)| bad(&format!("sample.{f}"), m))?;
        for (f, v) in [
            ("model.context", m.context),
            ("model.width", m.width),
            ("model.layers", m.layers),
            ("model.heads", m.heads),
        ] {
            if v == 0 {
                return Err(bad(f, "must be at least 1"));
            }
        }
        if m.width % m.heads != 0 {
            return Err(bad(
                "model.heads",
                format!("{} heads do not divide width {}", m.heads, m.width),
            ));
        }
        let vocab = gradgym_envs::text::Vocabulary::new().len();
        if let Some(problem) =
            crate::limits::too_many_parameters(vocab, m.context, m.width, m.layers)
        {
            return Err(bad("model.width", problem));
        }
        let prompt = gradgym_envs::text::PROMPT_LEN;
        if self.rl.backend == BackendKind::Native && self.device != "cpu" {
            return Err(bad(
                "rl.backend",
                format!(
                    "`native` runs on the CPU only, and device = \"{}\"; use `libtorch` or `auto`",
                    self.device
                ),
            ));
        }
        if prompt + self.rl.max_response > m.context {
            return Err(bad(
                "model.context",
                format!(
                    "{} positions cannot hold the {prompt}-token prompt plus rl.max_response = {} tokens",
                    m.context, self.rl.max_response
                ),
            ));
        }
        for (table, s) in [
            ("pretrain", self.pretrain.stage()),
            ("sft", self.sft.stage()),
        ] {
            if s.batch_size == 0 {
                return Err(bad(&format!("{table}.batch_size"), "must be at least 1"));
            }
            positive(&format!("{table}.learning_rate"), s.learning_rate)?;
            at_least_zero(&format!("{table}.weight_decay"), s.weight_decay)?;
        }
        if l.num_responses < 2 {
            return Err(bad("labels.num_responses", "a comparison needs at least 2"));
        }
        if !(l.held_out >= 0.0 && l.held_out < 1.0) {
            return Err(bad(
                "labels.held_out",
                format!("must be in [0, 1), got {}", l.held_out),
            ));
        }
        at_least_zero("labels.temperature", l.temperature)?;
        at_least_zero("labels.margin", l.margin)?;
        if !(0.0..=1.0).contains(&l.epsilon) {
            return Err(bad(
                "labels.epsilon",
                format!("must be in [0, 1], got {}", l.epsilon),
            ));
        }
        positive("labels.sample_temperature", l.sample_temperature)?;
        if r.batch_size == 0 {
            return Err(bad("reward_model.batch_size", "must be at least 1"));
        }
        positive("reward_model.learning_rate", r.learning_rate)?;
        at_least_zero("reward_model.weight_decay", r.weight_decay)?;
        at_least_zero("reward_model.preference_coef", r.preference_coef)?;
        at_least_zero("reward_model.lm_coef", r.lm_coef)?;
        if r.normalize_samples == 1 {
            return Err(bad(
                "reward_model.normalize_samples",
                "a standard deviation needs at least 2 samples (0 turns normalisation off)",
            ));
        }
        let algo = TextAlgo::parse(&rl.algo).map_err(|m| bad("rl.algo", m))?;
        if algo.grouped() {
            let k = rl.generations();
            if k < 2 {
                return Err(bad(
                    "rl.num_generations",
                    format!(
                        "{} needs at least 2 responses per prompt to compare, got {k}",
                        algo.name()
                    ),
                ));
            }
            if rl.batch_size % k != 0 {
                return Err(bad(
                    "rl.num_generations",
                    format!(
                        "rl.batch_size ({}) counts responses and must be a multiple of it ({k})",
                        rl.batch_size
                    ),
                ));
            }
        }
        if rl.scale_rewards != ScaleRewards::Group && algo != TextAlgo::Grpo {
            return Err(bad(
                "rl.scale_rewards",
                format!(
                    "divides GRPO's advantages by their group's spread; rl.algo is `{}` (set \
                     rl.algo = \"grpo\")",
                    rl.algo
                ),
            ));
        }
        if !algo.grouped() && rl.num_generations.is_some() {
            return Err(bad(
                "rl.num_generations",
                format!(
                    "responses per prompt of rloo and grpo; rl.algo `{}` samples one per prompt",
                    rl.algo
                ),
            ));
        }
        for (f, v) in [
            ("rl.batch_size", rl.batch_size),
            ("rl.max_response", rl.max_response),
            ("rl.update_epochs", rl.update_epochs),
            ("rl.num_minibatches", rl.num_minibatches),
            ("rl.rounds", rl.rounds),
            ("rl.samples_every", rl.samples_every),
        ] {
            if v == 0 {
                return Err(bad(f, "must be at least 1"));
            }
        }
        if rl.rounds > rl.updates.max(1) {
            return Err(bad(
                "rl.rounds",
                format!(
                    "{} rounds of {} updates: every round needs at least one update",
                    rl.rounds, rl.updates
                ),
            ));
        }
        if rl.num_minibatches > rl.batch_size {
            return Err(bad(
                "rl.num_minibatches",
                format!(
                    "{} minibatches of a batch of {} {}",
                    rl.num_minibatches,
                    rl.batch_size,
                    if algo.grouped() {
                        "responses"
                    } else {
                        "prompts"
                    }
                ),
            ));
        }
        positive("rl.learning_rate", rl.learning_rate)?;
        positive("rl.value_learning_rate", rl.value_learning_rate)?;
        positive("rl.clip_coef", rl.clip_coef)?;
        at_least_zero("rl.vf_coef", rl.vf_coef)?;
        at_least_zero("rl.ent_coef", rl.ent_coef)?;
        positive("rl.max_grad_norm", rl.max_grad_norm)?;
        for (f, v) in [("rl.gamma", rl.gamma), ("rl.gae_lambda", rl.gae_lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(f, format!("must be in [0, 1], got {v}")));
            }
        }
        at_least_zero("rl.missing_eos_penalty", rl.missing_eos_penalty)?;
        at_least_zero("rl.kl_coef", rl.kl_coef)?;
        for (f, v) in [
            ("rl.ppo_kl_target", rl.ppo_kl_target),
            ("rl.target_kl", rl.target_kl),
        ] {
            if let Some(v) = v {
                positive(f, v)?;
            }
        }
        if rl.ppo_loss == PpoLoss::Kl && self.algo() != TextAlgo::Ppo {
            return Err(bad(
                "rl.ppo_loss",
                format!(
                    "`kl` is PPO's surrogate; rl.algo is `{}` (set rl.algo = \"ppo\")",
                    rl.algo
                ),
            ));
        }
        if rl.target_kl.is_some() && !self.algo().clipped() {
            return Err(bad(
                "rl.target_kl",
                format!(
                    "stops PPO's epochs early; rl.algo `{}` takes one step per batch",
                    rl.algo
                ),
            ));
        }
        if rl.ppo_kl_target.is_some() && rl.ppo_loss == PpoLoss::Kl && rl.kl_coef == 0.0 {
            return Err(bad(
                "rl.kl_coef",
                "the adaptive rule (rl.ppo_kl_target) only halves or doubles β, so it would stay 0",
            ));
        }
        if rl.ppo_kl_target.is_some() && rl.ppo_loss != PpoLoss::Kl {
            return Err(bad(
                "rl.ppo_kl_target",
                "adapts PPO-KL's kl_coef, which only rl.ppo_loss = \"kl\" reads (the KL to the \
                 SFT reference is rl.beta, adapted by rl.kl_target)",
            ));
        }
        // Checked whether or not rl.kl_target reads it: config.toml and the manifest keep it.
        positive("rl.kl_horizon", rl.kl_horizon)?;
        self.reference_kl()
            .validate(rl.batch_size)
            .map_err(|(f, m)| {
                let field = match f {
                    "beta" => "rl.beta",
                    "kl_target" => "rl.kl_target",
                    _ => "rl.kl_horizon",
                };
                bad(field, m)
            })?;
        if e.samples_per_prompt == 0 {
            return Err(bad("eval.samples_per_prompt", "must be at least 1"));
        }
        if e.prompts == 0 {
            return Err(bad("eval.prompts", "must be at least 1"));
        }
        if e.every == 0 {
            return Err(bad("eval.every", "must be at least 1"));
        }

        if let Some(&n) = e
            .best_of_n
            .iter()
            .find(|&&n| n == 0 || n > e.samples_per_prompt)
        {
            return Err(bad(
                "eval.best_of_n",
                format!(
                    "n = {n} must be in 1..=eval.samples_per_prompt ({})",
                    e.samples_per_prompt
                ),
            ));
        }
        // Each n is a row of best_of_n.csv and a point of the curve Gao's form is fitted to.
        if let Some(w) = e.best_of_n.windows(2).find(|w| w[0] >= w[1]) {
            return Err(bad(
                "eval.best_of_n",
                format!(
                    "{} after {}: list each n once, in increasing order",
                    w[1], w[0]
                ),
            ));
        }
        Ok(())
    }
}

fn positive(field: &str, v: f64) -> Result<(), RlhfConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(field, format!("must be a positive number, got {v}")))
    }
}

fn at_least_zero(field: &str, v: f64) -> Result<(), RlhfConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(field, format!("must be a number ≥ 0, got {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_and_valid() {
        let c = RlhfConfig::from_toml("", "t.toml").unwrap();
        assert_eq!(c, RlhfConfig::default());
    }

    #[test]
    fn problems_name_their_field() {
        for (text, field) in [
            ("[rl]\nbeta = -0.1", "rl.beta"),
            ("[rl]\nmax_response = 40", "model.context"),
            ("[rl]\nalgo = \"dqn\"", "rl.algo"),
            ("[labels]\nnum_responses = 1", "labels.num_responses"),
            ("[eval]\nbest_of_n = [1, 500]", "eval.best_of_n"),
            ("[eval]\nbest_of_n = [1, 2, 2]", "eval.best_of_n"),
            ("[eval]\nbest_of_n = [4, 1, 2]", "eval.best_of_n"),
            ("[rl]\nkl_target = 0.0", "rl.kl_target"),
            ("[rl]\nkl_target = 6.0\nbeta = 0.0", "rl.beta"),
            (
                "[rl]\nkl_target = 6.0\nkl_horizon = 12.0\nbatch_size = 64",
                "rl.kl_horizon",
            ),
            // Unread without kl_target, but written to config.toml and the manifest.
            ("[rl]\nkl_horizon = nan", "rl.kl_horizon"),
            ("[rl]\nkl_horizon = -1.0", "rl.kl_horizon"),
            ("[rl]\nupdates = 3\nrounds = 4", "rl.rounds"),
            ("[rl]\nalgo = \"a2c\"\nppo_loss = \"kl\"", "rl.ppo_loss"),
            ("[rl]\nppo_loss = \"kl\"\nkl_coef = -1.0", "rl.kl_coef"),
            (
                "[rl]\nppo_loss = \"kl\"\nppo_kl_target = 0.0",
                "rl.ppo_kl_target",
            ),
            ("[rl]\nppo_kl_target = 0.01", "rl.ppo_kl_target"),
            ("[rl]\ntarget_kl = -0.01", "rl.target_kl"),
            ("[rl]\nalgo = \"a2c\"\ntarget_kl = 0.01", "rl.target_kl"),
            (
                "[rl]\nppo_loss = \"kl\"\nkl_coef = 0.0\nppo_kl_target = 0.01",
                "rl.kl_coef",
            ),
            ("[sample]\ntop_p = 0.0", "sample.top_p"),
            ("[sample]\ntemperature = -1.0", "sample.temperature"),
            ("[rl]\nbatch_size = 9223372036854775807", "rl.batch_size"),
            ("[model]\ncontext = 9223372036854775807", "model.context"),
            ("[eval]\nsamples_per_prompt = 0", "eval.samples_per_prompt"),
            ("threads = 2147483648", "threads"),
            // Each size within its cap, their product not: 5·10¹⁰ parameters.
            ("[model]\nwidth = 65536\nheads = 1", "model.width"),
            (
                "[model]\ncontext = 16777216\nwidth = 16777216",
                "model.width",
            ),
            (
                "[reward_model]\nepochs = 9223372036854775807",
                "reward_model.epochs",
            ),
        ] {
            let e = RlhfConfig::from_toml(text, "t.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{field}`")), "{text}: {e}");
        }
        let e = RlhfConfig::from_toml("[rl]\nbeta_typo = 1", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("beta_typo") && e.contains("t.toml"), "{e}");
        // A misspelt surrogate: toml's message, with the file, line and the values allowed.
        let e = RlhfConfig::from_toml("[rl]\nppo_loss = \"kll\"", "t.toml")
            .unwrap_err()
            .to_string();
        for part in ["t.toml", "line 2", "ppo_loss", "`kll`", "`clip` or `kl`"] {
            assert!(e.contains(part), "{part}: {e}");
        }
    }

    #[test]
    fn the_parameter_count_of_the_check_is_the_models() {
        use crate::nn::gpt::GptConfig;
        for (context, width, layers, heads) in [(64, 128, 2, 4), (40, 64, 3, 2), (8, 8, 1, 1)] {
            let shape = GptConfig {
                vocab: 512,
                context,
                width,
                layers,
                heads,
                scalar_head: false,
            };
            let n = crate::limits::gpt_parameters(512, context, width, layers);
            assert_eq!(n, shape.num_parameters() as u128, "{shape:?}");
            assert!(shape.validate().is_ok());
        }
        // The bench model's 470,528; and a checkpoint's shape past the cap is refused too.
        assert_eq!(crate::limits::gpt_parameters(512, 64, 128, 2), 470_528);
        let huge = GptConfig {
            vocab: 512,
            context: 64,
            width: 16384,
            layers: 1,
            heads: 1,
            scalar_head: false,
        };
        assert_eq!(huge.validate().unwrap_err().0, "width");
    }
}
