//! What an RLHF run's stages need of memory at the least, checked before the run starts.
//!
//! A batch too large for the machine used to start its run and then, where the kernel (not
//! `malloc`) ran out of memory, be killed mid-stage with no message, leaving its `.partial`
//! folder. Each training stage's need is bounded below here, from the model's shape and the
//! config's batch sizes alone, and a run whose need exceeds the machine's memory is refused
//! before anything is written, naming the batch size to lower.
//!
//! **The bound.** A training step keeps, for its backward pass, per sequence, layer and
//! position at least the two LayerNorms' outputs, q/k/v, the attention's output, and the MLP's
//! hidden layer before and after its activation: 14 floats per unit of width (attention rows
//! are not counted: libtorch's fused attention keeps none); and per position whose next token
//! is predicted, the logits and their log-softmax (2 floats per vocabulary entry). The RL
//! stage counts one network's step on a minibatch (libtorch's learner frees the policy's
//! before the value network's). The networks of the config's shape a stage holds add 16 bytes
//! per parameter where they train (weights, gradient, Adam's two moments) and 4 where they are
//! frozen (a reward model brought with `--rm` may be smaller, so the RL stage counts only the
//! policy and its reference). Lengths are
//! the longest the stage can draw (a batch is padded to its longest sequence, which a large
//! batch nearly always reaches). Measured peaks on the demo model grow 1.42 to 5.03 times as
//! fast as this bound with the batch (docs/rlhf.md, "Memory"), so a run it lets through may
//! still need more; one it refuses cannot fit.
//!
//! **The machine's memory** is the smaller of `MemTotal` (/proc/meminfo) and the cgroup's
//! `memory.max`, or `GRADGYM_MEMORY_LIMIT` in GiB where it is set (0 turns the check off). A
//! run on a GPU is not checked: its activations live in the GPU's memory, and libtorch names an
//! allocation the GPU refuses (`out of memory` with the stage).

use crate::config::rlhf::RlhfConfig;
use crate::rlhf::pipeline::Stage;
use gradgym_envs::text::PROMPT_LEN;

/// A stage's least need of memory, and the config field that sizes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    /// The stage, as the run's messages name it (`pretrain`, `sft`, `reward_model`, `rl`).
    pub stage: &'static str,
    /// The batch-size field to lower.
    pub field: &'static str,
    /// The field's value, and what it counts (`sequences`, `comparisons`, `prompts`).
    pub value: usize,
    pub unit: &'static str,
    /// Bytes, at least.
    pub bytes: u128,
    /// What else would help (another field), if anything.
    pub advice: &'static str,
}

/// Floats a training step keeps per sequence of `positions` positions, `predicted` of which
/// go through the language-model head (0: no LM head): see the module's bound.
pub fn activation_floats(
    layers: usize,
    width: usize,
    vocab: usize,
    positions: usize,
    predicted: usize,
) -> u128 {
    let (l, w, v, t, p) = (
        layers as u128,
        width as u128,
        vocab as u128,
        positions as u128,
        predicted as u128,
    );
    l * t * 14 * w + 2 * p * v
}

/// The least need of each training stage `stage` runs, in the order the run meets them.
pub fn needs(config: &RlhfConfig, stage: Stage) -> Vec<Need> {
    let m = &config.model;
    let vocab = gradgym_envs::text::Vocabulary::new().len();
    let params = crate::limits::gpt_parameters(vocab, m.context, m.width, m.layers);
    let act = |positions: usize, predicted: usize| {
        4 * activation_floats(m.layers, m.width, vocab, positions, predicted)
    };
    // A (prompt, response) sequence: the prompt and the longest response, within the context.
    let sequence = (PROMPT_LEN + config.rl.max_response).min(m.context);
    let response = sequence.saturating_sub(PROMPT_LEN);
    let mut out = Vec::new();
    if matches!(stage, Stage::All | Stage::Sft) {
        // Pretraining predicts every position after <bos>; SFT the response's.
        let pretrain = config.pretrain.batch_size;
        out.push(Need {
            stage: "pretrain",
            field: "pretrain.batch_size",
            value: pretrain,
            unit: "sequences",
            bytes: 16 * params + pretrain as u128 * act(m.context, m.context - 1),
            advice: "",
        });
        let sft = config.sft.batch_size;
        out.push(Need {
            stage: "sft",
            field: "sft.batch_size",
            value: sft,
            unit: "sequences",
            bytes: 16 * params + sft as u128 * act(sequence, response),
            advice: "",
        });
    }
    if matches!(stage, Stage::All | Stage::Rm) {
        // Each comparison's K responses; the LM term predicts the chosen response's tokens.
        let rm = config.reward_model.batch_size;
        let k = config.labels.num_responses as u128;
        let predicted = if config.reward_model.lm_coef > 0.0 {
            response
        } else {
            0
        };
        out.push(Need {
            stage: "reward_model",
            field: "reward_model.batch_size",
            value: rm,
            unit: "comparisons",
            bytes: 16 * params + rm as u128 * k * act(sequence, predicted),
            advice: "",
        });
    }
    if matches!(stage, Stage::All | Stage::Rl) {
        // The policy's gradient step on a minibatch (LM head over the response), and the
        // policy in training beside the frozen reference, both of the config's shape. The
        // value network and the reward model take the reward model's shape, which may be
        // smaller, so they are not counted.
        let rl = &config.rl;
        let minibatch = rl.batch_size.div_ceil(rl.num_minibatches.max(1)) as u128;
        out.push(Need {
            stage: "rl",
            field: "rl.batch_size",
            value: rl.batch_size,
            unit: "prompts",
            bytes: 16 * params + 4 * params + minibatch * act(sequence, response),
            advice: " or raise `rl.num_minibatches`",
        });
    }
    out
}

/// The memory a run may plan for, in bytes, and where the figure comes from; `None`: no check
/// (`GRADGYM_MEMORY_LIMIT=0`, or nothing readable).
pub fn available() -> anyhow::Result<Option<(u128, String)>> {
    if let Some(v) = std::env::var_os("GRADGYM_MEMORY_LIMIT") {
        let s = v.to_string_lossy();
        let gib: f64 = s
            .trim()
            .parse()
            .ok()
            .filter(|g: &f64| g.is_finite() && *g >= 0.0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "GRADGYM_MEMORY_LIMIT={s}: not a number of GiB (0 turns the memory check off)"
                )
            })?;
        if gib == 0.0 {
            return Ok(None);
        }
        return Ok(Some((
            (gib * GIB) as u128,
            "planned for, GRADGYM_MEMORY_LIMIT".to_string(),
        )));
    }
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u128>().ok())
            .map(|kib| kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u128>().ok());
    Ok(match (total, cgroup) {
        (Some(t), Some(c)) if c < t => {
            Some((c, "this machine has, the cgroup's memory.max".to_string()))
        }
        (Some(t), _) => Some((t, "this machine has, MemTotal".to_string())),
        (None, Some(c)) => Some((c, "this machine has, the cgroup's memory.max".to_string())),
        (None, None) => None,
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// Refuses a run on the CPU whose stages need more memory than the machine has, naming the
/// first such stage's batch-size field.
pub fn check(config: &RlhfConfig, stage: Stage) -> anyhow::Result<()> {
    let Some((limit, source)) = available()? else {
        return Ok(());
    };
    let (what, how) = source
        .split_once(", ")
        .unwrap_or(("this machine has", &source));
    for n in needs(config, stage) {
        if n.bytes > limit {
            anyhow::bail!(
                "field `{}`: {} {} need at least {:.1} GiB in the {} stage (activations kept for the backward pass, and the networks' weights and optimiser state), more than the {:.1} GiB {what} ({how}); lower `{}`{} (GRADGYM_MEMORY_LIMIT=GiB sets the memory gradgym plans for; 0 turns this check off)",
                n.field,
                n.value,
                n.unit,
                n.bytes as f64 / GIB,
                n.stage,
                limit as f64 / GIB,
                n.field,
                n.advice
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound's arithmetic on the demo model: 2 layers of width 64, 32 positions, 290
    /// tokens.
    #[test]
    fn the_bound_counts_what_a_step_keeps() {
        // 2 · 32 · 14 · 64 + 2 · 31 · 290
        assert_eq!(activation_floats(2, 64, 290, 32, 31), 57_344 + 17_980);
        // No LM head: the body alone.
        assert_eq!(activation_floats(2, 64, 290, 32, 0), 57_344);
        let c = RlhfConfig::default();
        let n = needs(&c, Stage::All);
        let stages: Vec<&str> = n.iter().map(|n| n.stage).collect();
        assert_eq!(stages, ["pretrain", "sft", "reward_model", "rl"]);
        assert!(needs(&c, Stage::Rl).iter().all(|n| n.stage == "rl"));
        assert!(needs(&c, Stage::Bon).is_empty());
        // Twice the batch, about twice the activations; more minibatches, less.
        let mut big = c.clone();
        big.rl.batch_size *= 2;
        let rl = |c: &RlhfConfig| needs(c, Stage::Rl)[0].bytes;
        assert!(rl(&big) > rl(&c));
        big.rl.num_minibatches *= 4;
        assert!(rl(&big) < rl(&c));
    }
}
