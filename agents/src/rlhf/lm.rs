//! The two next-token stages before RL: pretraining on the grammar's corpus (every token after
//! `<bos>` is a target: prompt and response alike) and supervised fine-tuning on good
//! demonstrations (only the response is a target). Each step draws a fresh batch from the
//! grammar with the run's stream, so the data is unlimited and reproducible from the seed.
//! AdamW with a linear warm-up over the first 5% of steps, then cosine decay to 10% (nanoGPT's
//! schedule); gradients clipped to norm 1.

use anyhow::Result;
use gradgym_envs::rng::Stream;
use gradgym_envs::text::{Grammar, PROMPT_LEN, Style};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};

use crate::config::rlhf::LmStageConfig;
use crate::nn::gpt::Gpt;

/// Which stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LmStage {
    Pretrain,
    Sft,
}

impl LmStage {
    pub fn name(self) -> &'static str {
        match self {
            LmStage::Pretrain => "pretrain",
            LmStage::Sft => "sft",
        }
    }
}

/// A batch of grammar text: tokens `[B, L]` and the target mask `[B, L]`.
pub fn batch(
    grammar: &Grammar,
    stage: LmStage,
    batch_size: usize,
    context: usize,
    max_response: usize,
    rng: &mut Stream,
    device: Device,
) -> (Tensor, Tensor) {
    let mut rows = Vec::with_capacity(batch_size);
    while rows.len() < batch_size {
        let request = grammar.sample_request(rng);
        let prompt = grammar.prompt(request);
        match stage {
            LmStage::Pretrain => {
                let mut r = grammar.sample_response(request, Style::Corpus, rng);
                r.truncate(context - PROMPT_LEN);
                rows.push((prompt, r));
            }
            LmStage::Sft => {
                // Demonstrations that do not fit are redrawn, so every target ends with <eos>.
                let r = grammar.sample_response(request, Style::Demonstration, rng);
                if r.len() <= max_response {
                    rows.push((prompt, r));
                }
            }
        }
    }
    let l = rows.iter().map(|(p, r)| p.len() + r.len()).max().unwrap();
    let mut tokens = vec![0i64; batch_size * l];
    let mut mask = vec![0f32; batch_size * l];
    for (i, (p, r)) in rows.iter().enumerate() {
        for (j, &t) in p.iter().chain(r).enumerate() {
            tokens[i * l + j] = t as i64;
            let target = match stage {
                LmStage::Pretrain => j >= 1,
                LmStage::Sft => j >= PROMPT_LEN,
            };
            if target {
                mask[i * l + j] = 1.0;
            }
        }
    }
    let shape = [batch_size as i64, l as i64];
    (
        Tensor::from_slice(&tokens).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// The learning rate at `step` of `total`: warm-up over 5%, cosine decay to 10%.
pub fn learning_rate(base: f64, step: usize, total: usize) -> f64 {
    let warmup = (total / 20).max(1);
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
    base * (0.1 + 0.9 * cosine)
}

/// Trains `model` for the stage; `report(step, loss)` is called after every step, and an
/// error it returns stops the training (an interruption). Returns the mean loss of the last
/// 10% of steps (at least of the last step).
pub fn train(
    model: &mut Gpt,
    grammar: &Grammar,
    stage: LmStage,
    config: &LmStageConfig,
    max_response: usize,
    rng: &mut Stream,
    mut report: impl FnMut(usize, f64) -> Result<()>,
) -> Result<f64> {
    let device = model.vs.device();
    let mut opt =
        nn::adamw(0.9, 0.95, config.weight_decay).build(&model.vs, config.learning_rate)?;
    // The last tenth of the steps, and at least the last one.
    let tail_from = config.steps.saturating_sub((config.steps / 10).max(1));
    let (mut tail, mut n) = (0.0, 0usize);
    for step in 0..config.steps {
        let (tokens, mask) = batch(
            grammar,
            stage,
            config.batch_size,
            model.config.context,
            max_response,
            rng,
            device,
        );
        opt.set_lr(learning_rate(config.learning_rate, step, config.steps));
        let loss = model.masked_lm_loss(&tokens, &mask);
        let value = loss.to_kind(Kind::Double).double_value(&[]);
        if !value.is_finite() {
            anyhow::bail!(
                "{}: non-finite next-token loss ({value}) at step {} of {} (counting from 1, \
                 as the progress lines do); lower {}.learning_rate",
                stage.name(),
                step + 1,
                config.steps,
                stage.name()
            );
        }
        opt.backward_step_clip_norm(&loss, 1.0);
        if step >= tail_from {
            tail += value;
            n += 1;
        }
        report(step, value)?;
    }
    Ok(if n == 0 { f64::NAN } else { tail / n as f64 })
}
