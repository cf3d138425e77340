//! What an RLHF run's stages need of memory at the least, checked before the run starts.
//!
//! A batch too large for the machine used to start its run and then, where the kernel (not
//! `malloc`) ran out of memory, be killed mid-stage with no message, leaving its `.partial`
//! folder. Each training stage's need is bounded below here, from the model's shape and the
//! config's batch sizes, and a run whose need exceeds the machine's memory is refused before
//! anything is written, naming the batch size to lower.
//!
//! **The bound.** A training step keeps, for its backward pass, per sequence, layer and input
//! position at least the two LayerNorms' outputs, q/k/v, the attention's output, and the MLP's
//! hidden layer before and after its activation: 14 floats per unit of width (attention rows
//! are not counted: libtorch's fused attention keeps none); and per position the LM head reads,
//! the logits and their log-softmax (2 floats per vocabulary entry). A sequence of L tokens is
//! L − 1 input positions where the next token is predicted (pretraining, SFT, the reward
//! model's LM term, the RL policy), L where a score is read.
//! - Pretraining and SFT: a batch of rows (prompt and response) with the LM head on every
//!   input position.
//! - The reward model's fit: a batch of comparisons (at most as many as it trains on, of one
//!   K), each response scored, and with Askell's LM term (`lm_coef` > 0) one chosen response
//!   per comparison through the LM head.
//! - RL: the policy's step on one minibatch (PPO's `num_minibatches`; REINFORCE and A2C step
//!   on the whole batch), the LM head on the response (libtorch's learner frees the policy's
//!   step before the value network's).
//! - Ziegler's online rounds (`rl.rounds` > 1): the last refit's batch, of the first fit's
//!   comparisons and every later round's `labels.comparisons` (less the held-out share), while
//!   the policy (trained) and its reference stay in memory beside the new reward model.
//!
//! The networks of the config's shape add 16 bytes per parameter where they train (weights,
//! gradient, Adam's two moments) and 4 where they are frozen (the value network and the reward
//! model take the reward model's shape, which a `--rm` model may make smaller, so the RL stage
//! counts only the policy and its reference; an online refit, those two and the reward model it
//! fits, of the SFT model's shape). A stage that trains nothing (0 steps, epochs or
//! updates) needs nothing here.
//!
//! **Lengths.** A batch is padded to its longest sequence. Pretraining rows are at most the
//! prompt and the longest corpus response, SFT rows the prompt and the longest demonstration
//! that fits `rl.max_response` (the grammar's constants); a large batch nearly always has one
//! that long. Responses sampled from a model (the reward model's comparisons, RL's rollouts)
//! are taken at `rl.max_response`: the bound assumes a batch has one response that long, which
//! a policy that always stops sooner would not have; an online refit's rows are as long as the
//! longest label it reads from `--rm`'s run. Measured peaks on the demo model grow
//! 1.40 to 5.17 times as fast as the bound with the batch (docs/rlhf.md, "Memory"): a run it
//! lets through may still need more; one it refuses cannot fit (given that assumption).
//!
//! **The machine's memory** is the smallest of `MemTotal` (/proc/meminfo) and the memory limits
//! of the process's cgroup and its ancestors (cgroup v2 `memory.max`, v1
//! `memory.limit_in_bytes`) and the address space `RLIMIT_AS` (`ulimit -v`) leaves it, or
//! `GRADGYM_MEMORY_LIMIT` in GiB where it is set (0 turns the check off). A run on a GPU is not checked: its activations live in the GPU's memory, and
//! libtorch names an allocation the GPU refuses (`out of memory` with the stage).
//! `pipeline::run` checks once its inputs are read and before its folder is made, with the
//! shape of a language model brought as input (`--sft`, `--model`) where there is one.

use std::collections::BTreeMap;

use crate::host_memory::{address_space_left, proc_bytes};

use crate::config::gib;
use crate::config::rlhf::RlhfConfig;
use crate::rlhf::data::{Comparison, held_out_count};
use crate::rlhf::pipeline::Stage;
use gradgym_envs::text::{LONGEST_CORPUS_RESPONSE, LONGEST_DEMONSTRATION, PROMPT_LEN};

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

/// Floats a training step keeps per sequence of `positions` input positions, `predicted` of
/// which go through the language-model head (0: no LM head): see the module's bound.
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
/// `data`: the comparisons the first reward-model fit trains on where they are known before
/// the run, whose number and K size its batches: a `--data` file's (else the config's labels
/// do), or for an `rl` run the training labels beside its `--rm`, which its online rounds'
/// refits train on besides their own.
pub fn needs(config: &RlhfConfig, stage: Stage, data: Option<&[Comparison]>) -> Vec<Need> {
    let m = &config.model;
    let vocab = gradgym_envs::text::Vocabulary::new().len();
    let params = crate::limits::gpt_parameters(vocab, m.context, m.width, m.layers);
    let act = |positions: usize, predicted: usize| {
        4 * activation_floats(m.layers, m.width, vocab, positions, predicted)
    };
    // A row of `response` tokens after the prompt, within the context.
    let row = |response: usize| (PROMPT_LEN + response).min(m.context);
    let mut out = Vec::new();
    if matches!(stage, Stage::All | Stage::Sft) {
        let pretrain = config.pretrain.batch_size;
        if config.pretrain.steps > 0 {
            let l = row(LONGEST_CORPUS_RESPONSE);
            out.push(Need {
                stage: "pretrain",
                field: "pretrain.batch_size",
                value: pretrain,
                unit: "sequences",
                bytes: 16 * params + pretrain as u128 * act(l - 1, l - 1),
                advice: "",
            });
        }
        let sft = config.sft.batch_size;
        if config.sft.steps > 0 {
            let l = row(LONGEST_DEMONSTRATION.min(config.rl.max_response));
            out.push(Need {
                stage: "sft",
                field: "sft.batch_size",
                value: sft,
                unit: "sequences",
                bytes: 16 * params + sft as u128 * act(l - 1, l - 1),
                advice: "",
            });
        }
    }
    // The reward model's batch: comparisons of one K, no more than the fit trains on, rows as
    // long as its longest response (an online run's labels from --rm may be longer than
    // `rl.max_response`: their reward model's context bounds them).
    let longest_given = data
        .and_then(|d| {
            d.iter()
                .flat_map(|c| c.responses.iter().map(Vec::len))
                .max()
        })
        .unwrap_or(0);
    let rm_bytes = |train: &BTreeMap<usize, usize>| {
        let rm = config.reward_model.batch_size;
        let l = row(config.rl.max_response.max(longest_given));
        let lm = config.reward_model.lm_coef > 0.0;
        train
            .iter()
            .map(|(&k, &n)| {
                let batch = rm.min(n) as u128;
                let scores = k as u128 * act(l, 0);
                let chosen = if lm { act(l - 1, l - 1) } else { 0 };
                batch * (scores + chosen)
            })
            .max()
            .unwrap_or(0)
    };
    let first_fit = first_fit(config, stage, data);
    if matches!(stage, Stage::All | Stage::Rm) && config.reward_model.epochs > 0 {
        out.push(Need {
            stage: "reward_model",
            field: "reward_model.batch_size",
            value: config.reward_model.batch_size,
            unit: "comparisons",
            bytes: 16 * params + rm_bytes(&first_fit),
            advice: "",
        });
    }
    if matches!(stage, Stage::All | Stage::Rl) && config.rl.updates > 0 {
        let rl = &config.rl;
        let (minibatches, advice) = if config.algo().clipped() {
            (rl.num_minibatches.max(1), " or raise `rl.num_minibatches`")
        } else {
            (1, "")
        };
        let minibatch = rl.batch_size.div_ceil(minibatches) as u128;
        let l = row(rl.max_response);
        out.push(Need {
            stage: "rl",
            field: "rl.batch_size",
            value: rl.batch_size,
            unit: if config.algo().grouped() {
                "responses"
            } else {
                "prompts"
            },
            bytes: 16 * params + 4 * params + minibatch * act(l - 1, l - PROMPT_LEN),
            advice,
        });
        // Ziegler's online rounds: the last refit trains on the first fit's comparisons and
        // every later round's, beside the policy and its reference.
        if rl.rounds > 1 && config.reward_model.epochs > 0 {
            let labels = &config.labels;
            let per_round =
                labels.comparisons - held_out_count(labels.comparisons, labels.held_out);
            let mut last = first_fit;
            *last.entry(labels.num_responses).or_default() += (rl.rounds - 1) * per_round;
            out.push(Need {
                stage: "online refit",
                field: "reward_model.batch_size",
                value: config.reward_model.batch_size,
                unit: "comparisons",
                bytes: (16 + 4 + 16) * params + rm_bytes(&last),
                advice: "",
            });
        }
    }
    out
}

/// Comparisons per K that the first reward-model fit trains on, as far as is known before the
/// run: a `--data` file's or the config's labels (a `rm` or whole run), less the held-out
/// share (off the total first, so a K group keeps at least its count less that share); the
/// training labels beside `--rm` (an `rl` run, none where there are none).
fn first_fit(
    config: &RlhfConfig,
    stage: Stage,
    data: Option<&[Comparison]>,
) -> BTreeMap<usize, usize> {
    let labels = &config.labels;
    let mut by_k: BTreeMap<usize, usize> = BTreeMap::new();
    let total = match (data, stage) {
        (Some(d), _) => {
            for c in d {
                *by_k.entry(c.responses.len()).or_default() += 1;
            }
            d.len()
        }
        (None, Stage::All | Stage::Rm) => {
            by_k.insert(labels.num_responses, labels.comparisons);
            labels.comparisons
        }
        (None, _) => 0,
    };
    let held = match stage {
        Stage::Rl => 0,
        _ => held_out_count(total, labels.held_out),
    };
    by_k.values_mut().for_each(|n| *n = n.saturating_sub(held));
    by_k
}

/// The memory a run may plan for, in bytes, and where the figure comes from (`this machine
/// has, MemTotal` or `planned for, GRADGYM_MEMORY_LIMIT`); `None`: no check
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
    let total = proc_bytes("/proc/meminfo", "MemTotal");
    let mut best = total.map(|t| (t, "this machine has, MemTotal".to_string()));
    if let Some((c, file)) = cgroup_limit() {
        if best.as_ref().is_none_or(|(t, _)| c < *t) {
            best = Some((c, format!("this machine allows this process, {file}")));
        }
    }
    if let Some((left, how)) = address_space_left() {
        if best.as_ref().is_none_or(|(t, _)| left < *t) {
            best = Some((left, format!("this process may still map, {how}")));
        }
    }
    Ok(best)
}

/// The smallest memory limit of this process's cgroups and their ancestors, and its file:
/// cgroup v2's `memory.max` (a number, or `max` for none), v1's `memory.limit_in_bytes`.
fn cgroup_limit() -> Option<(u128, String)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut files = Vec::new();
    for line in own.lines() {
        // `hierarchy:controllers:path`; v2 is `0::path`, v1's memory line names `memory`.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, file) = if controllers.is_empty() {
            ("/sys/fs/cgroup".to_string(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory".to_string(), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = std::path::PathBuf::from(&root);
        files.push(dir.join(file));
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            files.push(dir.join(file));
        }
    }
    files
        .into_iter()
        .filter_map(|f| {
            let v = std::fs::read_to_string(&f)
                .ok()?
                .trim()
                .parse::<u128>()
                .ok()?;
            Some((v, f.display().to_string()))
        })
        .min_by_key(|(v, _)| *v)
}

const GIB: f64 = (1u64 << 30) as f64;

/// Refuses a run on the CPU whose stages need more memory than the machine has, naming the
/// first such stage's batch-size field.
pub fn check(config: &RlhfConfig, stage: Stage, data: Option<&[Comparison]>) -> anyhow::Result<()> {
    let needs = needs(config, stage, data);
    if needs.is_empty() {
        return Ok(());
    }
    let Some((limit, source)) = available()? else {
        return Ok(());
    };
    let (what, how) = source
        .split_once(", ")
        .unwrap_or(("this machine has", &source));
    for n in needs {
        if n.bytes > limit {
            anyhow::bail!(
                "field `{}`: {} {} need at least {} in the {} stage (activations kept for the backward pass, and the networks' weights and optimiser state), more than the {} {what} ({how}); lower `{}`{} (GRADGYM_MEMORY_LIMIT=GiB sets the memory gradgym plans for; 0 turns this check off)",
                n.field,
                n.value,
                n.unit,
                gib(n.bytes),
                n.stage,
                gib(limit),
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

    /// The bound's arithmetic on the demo model: 2 layers of width 64, 290 tokens.
    #[test]
    fn the_bound_counts_what_a_step_keeps() {
        // 2 · 31 · 14 · 64 + 2 · 31 · 290
        assert_eq!(activation_floats(2, 64, 290, 31, 31), 55_552 + 17_980);
        // No LM head: the body alone.
        assert_eq!(activation_floats(2, 64, 290, 32, 0), 57_344);
        let c = RlhfConfig::default();
        let n = needs(&c, Stage::All, None);
        let stages: Vec<&str> = n.iter().map(|n| n.stage).collect();
        assert_eq!(stages, ["pretrain", "sft", "reward_model", "rl"]);
        assert!(needs(&c, Stage::Rl, None).iter().all(|n| n.stage == "rl"));
        assert!(needs(&c, Stage::Bon, None).is_empty());
        let rl = |c: &RlhfConfig| needs(c, Stage::Rl, None)[0].bytes;
        let rm = |c: &RlhfConfig, d: Option<&[Comparison]>| needs(c, Stage::Rm, d)[0].bytes;
        // Twice the batch, more; PPO's minibatches, less; REINFORCE steps on the whole batch.
        let mut big = c.clone();
        big.rl.batch_size *= 2;
        assert!(rl(&big) > rl(&c));
        big.rl.num_minibatches *= 4;
        assert!(rl(&big) < rl(&c));
        let mut whole = big.clone();
        whole.rl.algo = "reinforce".into();
        big.rl.num_minibatches = 1;
        assert_eq!(rl(&whole), rl(&big));
        // A stage that trains nothing needs nothing.
        let mut none = c.clone();
        (
            none.pretrain.steps,
            none.reward_model.epochs,
            none.rl.updates,
        ) = (0, 0, 0);
        let stages: Vec<&str> = needs(&none, Stage::All, None)
            .iter()
            .map(|n| n.stage)
            .collect();
        assert_eq!(stages, ["sft"]);
        // The reward model's batch holds no more comparisons than it trains on.
        let mut few = c.clone();
        few.labels.comparisons = 10;
        few.labels.held_out = 0.2;
        let mut many = few.clone();
        many.reward_model.batch_size = 1000;
        few.reward_model.batch_size = 8;
        assert_eq!(rm(&few, None), rm(&many, None));
        // A preference file's own K and count, not the config's.
        let pair = Comparison {
            prompt: vec![0; PROMPT_LEN],
            responses: vec![vec![4], vec![5]],
            mu: vec![1.0, 0.0],
        };
        let mut four = pair.clone();
        four.responses = vec![vec![4], vec![5], vec![6], vec![7]];
        four.mu = vec![1.0, 0.0, 0.0, 0.0];
        let mut k4 = c.clone();
        k4.labels.num_responses = 4;
        k4.labels.held_out = 0.0;
        let pairs = vec![pair.clone(); 100];
        let mut k2 = k4.clone();
        k2.labels.num_responses = 2;
        k2.labels.comparisons = 100;
        assert_eq!(rm(&k4, Some(&pairs)), rm(&k2, None));
        let mut mixed = pairs.clone();
        mixed.extend(vec![four; 100]);
        assert!(rm(&k4, Some(&mixed)) > rm(&k4, Some(&pairs)));
    }

    /// Ziegler's online rounds: the last refit trains on every label so far.
    #[test]
    fn an_online_refit_counts_every_label_so_far() {
        let stages = |c: &RlhfConfig, stage| -> Vec<&str> {
            needs(c, stage, None).iter().map(|n| n.stage).collect()
        };
        let refit = |c: &RlhfConfig, stage, d: Option<&[Comparison]>| {
            needs(c, stage, d)
                .into_iter()
                .find(|n| n.stage == "online refit")
                .map(|n| n.bytes)
        };
        let mut c = RlhfConfig::default();
        assert_eq!(c.rl.rounds, 1);
        assert_eq!(stages(&c, Stage::All).last(), Some(&"rl"));
        // Few labels a round, a batch that would hold them all.
        (c.rl.rounds, c.labels.comparisons, c.labels.held_out) = (2, 10, 0.2);
        c.reward_model.batch_size = 1000;
        assert_eq!(
            stages(&c, Stage::All),
            ["pretrain", "sft", "reward_model", "rl", "online refit"]
        );
        assert_eq!(stages(&c, Stage::Rl), ["rl", "online refit"]);
        // Round 2's refit trains on 16 comparisons, the first fit on 8, and the policy and its
        // reference stay beside it.
        let first = needs(&c, Stage::Rm, None)[0].bytes;
        let params = crate::limits::gpt_parameters(
            gradgym_envs::text::Vocabulary::new().len(),
            c.model.context,
            c.model.width,
            c.model.layers,
        );
        let act = first - 16 * params;
        assert_eq!(refit(&c, Stage::All, None), Some(36 * params + 2 * act));
        // An rl run knows only its own rounds' labels, and those beside --rm.
        assert_eq!(refit(&c, Stage::Rl, None), Some(36 * params + act));
        let pair = Comparison {
            prompt: vec![0; PROMPT_LEN],
            responses: vec![vec![4], vec![5]],
            mu: vec![1.0, 0.0],
        };
        let beside = vec![pair; 8];
        assert_eq!(
            refit(&c, Stage::Rl, Some(&beside)),
            Some(36 * params + 2 * act)
        );
        // Labels beside --rm longer than `rl.max_response` (their reward model's context
        // allowed them) are sized at their own length.
        let mut short = c.clone();
        short.rl.max_response = 6;
        let long_pair = Comparison {
            prompt: vec![0; PROMPT_LEN],
            responses: vec![vec![4; 20], vec![5; 3]],
            mu: vec![1.0, 0.0],
        };
        let long = vec![long_pair; 8];
        let beside_short = refit(&short, Stage::Rl, Some(&beside)).unwrap();
        let beside_long = refit(&short, Stage::Rl, Some(&long)).unwrap();
        assert!(
            beside_long > beside_short,
            "{beside_long} vs {beside_short}"
        );
        let mut wide = c.clone();
        wide.rl.max_response = 20;
        assert_eq!(Some(beside_long), refit(&wide, Stage::Rl, Some(&long)));
        // A third round adds its labels; a batch smaller than them caps the need.
        c.rl.rounds = 3;
        assert_eq!(refit(&c, Stage::All, None), Some(36 * params + 3 * act));
        c.reward_model.batch_size = 8;
        assert_eq!(refit(&c, Stage::All, None), Some(36 * params + act));
        // No fit, no refit.
        c.reward_model.epochs = 0;
        assert_eq!(refit(&c, Stage::All, None), None);
    }
}
