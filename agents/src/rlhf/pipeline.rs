//! The stages of an RLHF run and the run folder they write. `gradgym rlhf` runs them all;
//! `gradgym rlhf sft|rm|rl|bon|sample` runs one, reading what it needs (`--sft`, `--rm`,
//! `--data`) from earlier runs or the user.
//!
//! ```text
//! <out>/manifest.json, config.toml, summary.json (status completed, failed or interrupted)
//! <out>/lm.csv                 stage, step, loss (pretraining and SFT)
//! <out>/pretrain/, sft/        model.safetensors + model.json
//! <out>/labels.jsonl           the comparisons fitted (TRL's prompt/chosen/rejected form; in an
//!                              `rl` run with rounds, those its `--rm` was fitted on)
//! <out>/held_out.jsonl         the comparisons kept out, for accuracy (empty when none are)
//! <out>/labels_round<r>.jsonl, held_out_round<r>.jsonl   online rounds' new labels
//! <out>/rm.csv                 round, step, loss of each reward-model fit
//! <out>/reward_model/          the reward model, normalised (round 1; later rounds in reward_model_round<r>/)
//! <out>/metrics.csv            one row per RL update (TRL's metric names where one exists)
//! <out>/eval.csv               the policy on the fixed evaluation prompts, every eval.every updates
//! <out>/best_of_n.csv          best-of-n for each n: proxy, gold, KL estimate and bound
//! <out>/samples.jsonl          sample texts: SFT, best-of-n and the policy at checkpoints
//! <out>/policy/                the final policy
//! ```
//!
//! Every stage draws from its own named stream of the run's seed, so a stage run alone on the
//! same inputs gives what it gives inside the whole pipeline.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use gradgym_algorithms::group::{group_mean_std, group_spread};
use gradgym_envs::rng::{self, Stream};
use gradgym_envs::text::{GoldJudge, Grammar, SHORTEST_DEMONSTRATION, Vocabulary};
use serde::Serialize;
use serde_json::json;
use tch::Device;

use super::best_of_n::{self, BonPoint, BonSample, mean_ci};
use super::data::{self, Comparison};
use super::learner::{TokenLearner, TokenUpdateStats};
use super::lm::{self, LmStage};
use super::reward::{self, Accuracy, FitReport, Normalisation};
use super::sequences::{Sequences, rows_f64, token_logprobs, token_stats};
use crate::config::PpoLoss;
use crate::config::rlhf::{ModelConfig, RlConfig, RlhfConfig, TextAlgo};
use crate::device::parse_device;
use crate::error::{catch_panics, check_interrupt, ended_status};
use crate::metrics::{Columns, MetricRow};
use crate::nn::gpt::{Gpt, GptConfig};
use crate::run_folder::{Existing, RunFolder, refuse_inputs_inside};

/// Lines passed to the progress callback that start with this are a progress bar's state
/// (`STAGE DONE/TOTAL …`: `pretrain`, `sft`, `reward-model` or `rl`), to be redrawn in place
/// on a terminal; elsewhere a caller may print one now and then.
pub const PROGRESS: &str = "\u{1b}progress:";

/// Which stages to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// pretrain → SFT → labels → reward model → best-of-n → RL → evaluation.
    All,
    /// Pretraining and SFT.
    Sft,
    /// Labels (or `--data`) and the reward model, on an SFT model.
    Rm,
    /// RL on an SFT model and a reward model.
    Rl,
    /// Best-of-n on an SFT model and a reward model.
    Bon,
    /// Samples of a model, scored by the gold judge (and a reward model if given).
    Sample,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::All => "all",
            Stage::Sft => "sft",
            Stage::Rm => "rm",
            Stage::Rl => "rl",
            Stage::Bon => "bon",
            Stage::Sample => "sample",
        }
    }
}

/// What a stage reads from outside the run.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// A folder with an SFT model (`model.safetensors`, `model.json`), or a run folder with
    /// `sft/`.
    pub sft: Option<PathBuf>,
    /// A reward model folder, or a run folder with `reward_model/`.
    pub reward_model: Option<PathBuf>,
    /// A preference JSONL file to fit instead of the judge's labels.
    pub data: Option<PathBuf>,
    /// `sample`: the model to sample (default: the SFT model).
    pub model: Option<PathBuf>,
    /// `sample`: how many prompts.
    pub samples: usize,
}

/// The columns of [`METRICS`] that RLOO and GRPO, without a value function, leave out.
pub const VALUE_METRICS: [&str; 3] = ["loss/value_avg", "val/error", "val/explained_variance"];

/// Metric columns of `metrics.csv`, in order.
pub const METRICS: [&str; 21] = [
    "update",
    "round",
    "sequences",
    "tokens",
    "objective/scores",
    "objective/gold_scores",
    "objective/kl",
    "objective/kl_k3",
    "objective/entropy",
    "objective/non_score_reward",
    "objective/rlhf_reward",
    "response_length",
    "eos_fraction",
    "beta",
    "policy/approxkl_avg",
    "policy/clipfrac_avg",
    "loss/policy_avg",
    "loss/value_avg",
    "val/error",
    "val/explained_variance",
    "gradient_steps",
];

#[derive(Serialize)]
struct Manifest<'a> {
    kind: &'static str,
    stage: &'static str,
    config: &'a RlhfConfig,
    seed: u64,
    git_revision: &'a str,
    gradgym_version: &'a str,
    libtorch_version: &'a str,
    device: String,
    cuda_available: bool,
    torch_threads: i32,
    /// What runs the RL stage's passes (`rl.backend` resolved on this device).
    rl_backend: &'static str,
    /// What sets the bits beyond the config: the native backend's products (`mkl` or
    /// `matrixmultiply`, `GRADGYM_SGEMM`) and MKL's reproducibility mode (`MKL_CBWR`, as the
    /// process found it; the binary sets `AUTO` unless told another).
    sgemm: &'static str,
    mkl_cbwr: Option<String>,
    model_parameters: usize,
    data: Option<String>,
    sft: Option<String>,
    reward_model: Option<String>,
    /// `sample --model`: the model sampled.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

/// The policy on a set of prompts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PolicyEval {
    pub proxy: f64,
    pub proxy_ci: f64,
    pub gold: f64,
    pub gold_ci: f64,
    /// KL(π‖p) per sequence, k1 and k3.
    pub kl: f64,
    pub kl_k3: f64,
    pub entropy: f64,
    pub response_length: f64,
    pub eos_fraction: f64,
}

/// A response with the reward model's score of it.
type Answer = (Vec<u32>, f64);

struct Run<'a> {
    config: &'a RlhfConfig,
    folder: RunFolder,
    judge: GoldJudge,
    device: Device,
    lm_csv: String,
    rm_csv: String,
    eval_csv: String,
    samples: String,
    progress: &'a mut dyn FnMut(&str),
    /// Set from outside (a signal handler) to stop the run at its next step.
    interrupt: Option<&'a AtomicBool>,
    /// The stage running now (`pretrain`, `labels`, `rl`, …): a panic caught from libtorch,
    /// which knows nothing of stages (an allocation that failed), is reported as during it.
    phase: &'static str,
}

impl Run<'_> {
    fn stream(&self, name: &str, index: u64) -> Stream {
        rng::stream(self.config.seed, &format!("rlhf/{name}"), index)
    }

    fn say(&mut self, line: &str) {
        (self.progress)(line);
    }

    fn text(&self, tokens: &[u32]) -> String {
        self.judge
            .grammar
            .vocab
            .decode(tokens)
            .expect("vocabulary tokens")
    }

    fn sample_line(
        &mut self,
        source: &str,
        update: Option<usize>,
        prompt: &[u32],
        response: &[u32],
        proxy: Option<f64>,
    ) -> Result<()> {
        let gold = self.judge.score(prompt, response)?.gold;
        let line = json!({
            "source": source,
            "update": update,
            "prompt": self.text(prompt),
            "response": self.text(response),
            "proxy": proxy,
            "gold": gold,
        });
        self.samples.push_str(&line.to_string());
        self.samples.push('\n');
        self.folder.write_text("samples.jsonl", &self.samples)
    }

    fn lm_stage(&mut self, model: &mut Gpt, stage: LmStage) -> Result<f64> {
        self.phase = stage.name();
        let cfg = match stage {
            LmStage::Pretrain => self.config.pretrain.stage(),
            LmStage::Sft => self.config.sft.stage(),
        };
        let mut rng = self.stream(stage.name(), 0);
        let grammar = Grammar::new();
        let every = (cfg.steps / 10).max(1);
        let mut lines = Vec::new();
        let mut last_report = String::new();
        let interrupt = self.interrupt;
        let progress = &mut self.progress;
        let name = stage.name();
        let tail = lm::train(
            model,
            &grammar,
            stage,
            &cfg,
            self.config.rl.max_response,
            &mut rng,
            |step, loss| {
                lines.push(format!("{},{step},{loss}", stage.name()));
                (progress)(&format!(
                    "{PROGRESS}{name} {}/{} loss {loss:.3}",
                    step + 1,
                    cfg.steps
                ));
                if (step + 1) % every == 0 {
                    last_report = format!(
                        "{} step {}/{}: loss {loss:.3}",
                        stage.name(),
                        step + 1,
                        cfg.steps
                    );
                }
                check_interrupt(interrupt, || {
                    format!("at {} step {}/{}", stage.name(), step + 1, cfg.steps)
                })
            },
        );
        // The steps taken are written even when the stage failed: they show how it got there.
        for l in lines {
            self.lm_csv.push_str(&l);
            self.lm_csv.push('\n');
        }
        self.folder.write_text("lm.csv", &self.lm_csv)?;
        let tail = tail?;
        if !last_report.is_empty() {
            self.say(&last_report);
        }
        Ok(tail)
    }

    fn evaluate(
        &self,
        policy: &Gpt,
        sft: &Gpt,
        rm: &Gpt,
        prompts: &[Vec<u32>],
        index: u64,
    ) -> Result<(PolicyEval, Vec<Answer>)> {
        let mut rng = self.stream("eval", index);
        let generated = reward::sample(
            policy,
            prompts,
            self.config.rl.max_response,
            &mut rng,
            self.interrupt,
        )
        .context("evaluation: sampling from the policy")?;
        let p: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        let r: Vec<&[u32]> = generated.iter().map(|g| g.tokens.as_slice()).collect();
        let proxy = reward::score_all(rm, &p, &r);
        let gold: Vec<f64> = p
            .iter()
            .zip(&r)
            .map(|(p, r)| self.judge.score(p, r).map(|s| s.gold))
            .collect::<Result<_, _>>()?;
        let (mut k1, mut k3, mut ent) = (0.0, 0.0, 0.0);
        for (pc, rc) in p.chunks(reward::CHUNK).zip(r.chunks(reward::CHUNK)) {
            let seqs = Sequences::pack(pc, rc, self.device);
            let (st, lr) =
                tch::no_grad(|| (token_stats(policy, &seqs), token_logprobs(sft, &seqs)));
            let lp = rows_f64(&st.logprobs);
            let lr = rows_f64(&lr);
            let e = rows_f64(&st.entropy);
            for i in 0..rc.len() {
                let n = seqs.lengths[i];
                for j in 0..n {
                    let d = lp[i][j] - lr[i][j];
                    k1 += d;
                    k3 += (-d).exp() - 1.0 + d;
                }
                ent += e[i][..n].iter().sum::<f64>() / n as f64;
            }
        }
        let m = prompts.len() as f64;
        let (proxy_mean, proxy_ci) = mean_ci(&proxy);
        let (gold_mean, gold_ci) = mean_ci(&gold);
        let eval = PolicyEval {
            proxy: proxy_mean,
            proxy_ci,
            gold: gold_mean,
            gold_ci,
            kl: k1 / m,
            kl_k3: k3 / m,
            entropy: ent / m,
            response_length: r.iter().map(|r| r.len()).sum::<usize>() as f64 / m,
            eos_fraction: r
                .iter()
                .filter(|r| r.last() == Some(&gradgym_envs::text::EOS))
                .count() as f64
                / m,
        };
        let out = generated
            .into_iter()
            .zip(proxy)
            .map(|(g, s)| (g.tokens, s))
            .collect();
        Ok((eval, out))
    }

    fn eval_row(&mut self, update: usize, policy: &str, e: &PolicyEval) -> Result<()> {
        if self.eval_csv.is_empty() {
            self.eval_csv.push_str("update,policy,proxy,proxy_ci,gold,gold_ci,kl,kl_k3,entropy,response_length,eos_fraction\n");
        }
        self.eval_csv.push_str(&format!(
            "{update},{policy},{},{},{},{},{},{},{},{},{}\n",
            e.proxy,
            ci_cell(e.proxy_ci),
            e.gold,
            ci_cell(e.gold_ci),
            e.kl,
            e.kl_k3,
            e.entropy,
            e.response_length,
            e.eos_fraction
        ));
        self.folder.write_text("eval.csv", &self.eval_csv)
    }

    /// Labels (or the user's data, read before the run) split into (train, held out), written
    /// into the folder.
    fn comparisons(
        &mut self,
        sft: &Gpt,
        data: Option<Vec<Comparison>>,
        round: u64,
    ) -> Result<(Vec<Comparison>, Vec<Comparison>)> {
        self.phase = "labels";
        let l = &self.config.labels;
        let all = match data {
            Some(mut c) => {
                // A repeated comparison can fall on both sides of the held-out split and
                // flatter the held-out accuracy: said, and kept (a user's repeats may be meant).
                let mut seen = std::collections::HashSet::new();
                let repeats = c
                    .iter()
                    .filter(|x| {
                        let mu: Vec<u64> = x.mu.iter().map(|m| m.to_bits()).collect();
                        !seen.insert((&x.prompt, &x.responses, mu))
                    })
                    .count();
                if repeats > 0 {
                    self.say(&format!(
                        "note: {repeats} of the {} comparisons given repeat an earlier one; each is kept, \
                         and a repeat may fall on both sides of the held-out split",
                        c.len()
                    ));
                }
                reward::shuffle(&mut c, &mut self.stream("split", round));
                c
            }
            None => {
                check_interrupt(self.interrupt, || "before labelling".into())?;
                let mut human = reward::human(l, self.stream("human", round))?;
                reward::label(
                    sft,
                    &self.judge,
                    &mut human,
                    l,
                    l.comparisons,
                    self.config.rl.max_response,
                    &mut self.stream("labels", round),
                    self.interrupt,
                )?
            }
        };
        let held = data::held_out_count(all.len(), l.held_out);
        let (train, held_out) = all.split_at(all.len() - held);
        // Written as they are made: labels.jsonl for the first round, labels_round<r>.jsonl
        // for each later one (its new labels only).
        let tag = if round == 0 {
            String::new()
        } else {
            format!("_round{}", round + 1)
        };
        for (name, part) in [("labels", train), ("held_out", held_out)] {
            data::write_jsonl(
                &self.folder.path().join(format!("{name}{tag}.jsonl")),
                part,
                &self.judge.grammar,
            )?;
        }
        // After they are written: labels a signal arrived during are kept.
        check_interrupt(self.interrupt, || "after labelling".into())?;
        Ok((train.to_vec(), held_out.to_vec()))
    }

    fn fit_reward_model(
        &mut self,
        sft: &Gpt,
        train: &[Comparison],
        held_out: &[Comparison],
        round: u64,
    ) -> Result<(Gpt, FitReport, Normalisation, Accuracy)> {
        self.phase = "reward_model";
        let mut rm = sft.with_scalar_head(&mut self.stream("rm-init", round))?;
        let mut lines = Vec::new();
        let interrupt = self.interrupt;
        let mut fit_rng = self.stream("rm-fit", round);
        let steps = reward::fit_steps(train, &self.config.reward_model);
        let progress = &mut self.progress;
        let report = reward::fit(
            &mut rm,
            train,
            &self.config.reward_model,
            &mut fit_rng,
            |step, loss| {
                lines.push(format!("{},{step},{loss}", round + 1));
                (progress)(&format!(
                    "{PROGRESS}reward-model {}/{steps} loss {loss:.3} (round {})",
                    step + 1,
                    round + 1
                ));
                check_interrupt(interrupt, || {
                    format!("at reward-model step {} (round {})", step + 1, round + 1)
                })
            },
        );
        // Written even when the fit failed, as lm.csv is.
        if self.rm_csv.is_empty() {
            self.rm_csv.push_str("round,step,loss\n");
        }
        for l in lines {
            self.rm_csv.push_str(&l);
            self.rm_csv.push('\n');
        }
        self.folder.write_text("rm.csv", &self.rm_csv)?;
        let report = report?;
        let norm = if self.config.reward_model.normalize_samples > 0 {
            reward::normalise(
                &mut rm,
                sft,
                &self.judge.grammar,
                self.config.reward_model.normalize_samples,
                self.config.rl.max_response,
                &mut self.stream("normalise", round),
                self.interrupt,
            )?
        } else {
            Normalisation {
                mean: 0.0,
                std: 1.0,
            }
        };
        let acc = if held_out.is_empty() {
            Accuracy {
                label: f64::NAN,
                gold: f64::NAN,
                gold_pairs: 0,
            }
        } else {
            reward::accuracy(&rm, held_out, &self.judge, self.config.labels.margin)?
        };
        let percent = |x: f64| {
            if x.is_finite() {
                format!("{:.1}%", 100.0 * x)
            } else {
                "n/a".into()
            }
        };
        let held = if held_out.is_empty() {
            "no comparisons held out".to_string()
        } else {
            format!(
                "held out: {} of labels, {} of {} gold-ordered pairs",
                percent(acc.label),
                percent(acc.gold),
                acc.gold_pairs
            )
        };
        self.say(&format!(
            "reward model (round {}): {} comparison{}, loss {:.3}; {held}",
            round + 1,
            train.len(),
            if train.len() == 1 { "" } else { "s" },
            report.train_loss,
        ));
        Ok((rm, report, norm, acc))
    }
}

/// The transformer of a config's `[model]` table, over the review language's vocabulary.
pub fn model_config(config: &RlhfConfig) -> GptConfig {
    let m = &config.model;
    GptConfig {
        vocab: Vocabulary::new().len(),
        context: m.context,
        width: m.width,
        layers: m.layers,
        heads: m.heads,
        scalar_head: false,
    }
}

/// The shape of the language model `stage` takes as its model (`sample`: `--model`, else
/// `--sft`; `rm`, `rl`, `bon`: `--sft`), read from its `model.json` alone, so that a command
/// line can make it the config's `[model]` before the config is checked. `None` when the stage
/// takes none or the file cannot be read (loading the model then says why).
pub fn input_shape(stage: Stage, inputs: &Inputs) -> Option<(ModelConfig, PathBuf)> {
    let (path, sub) = match stage {
        Stage::All | Stage::Sft => return None,
        Stage::Sample if inputs.model.is_some() => (inputs.model.as_ref()?, "policy"),
        _ => (inputs.sft.as_ref()?, "sft"),
    };
    let json = model_dir(path, sub).join("model.json");
    let text = std::fs::read_to_string(&json).ok()?;
    let c: GptConfig = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text)).ok()?;
    // A shape that is not a model's is left to the model's loading, which names its file.
    (!c.scalar_head && c.validate().is_ok()).then(|| (shape_of(&c), json))
}

/// `path` if it holds a model (`model.json`), else the run folder's `path/sub`.
fn model_dir(path: &Path, sub: &str) -> PathBuf {
    if path.join("model.json").exists() {
        path.to_path_buf()
    } else {
        path.join(sub)
    }
}

fn load_model(path: &Path, sub: &str, device: Device) -> Result<Gpt> {
    if !path.exists() {
        anyhow::bail!("no such folder");
    }
    if !path.is_dir() {
        anyhow::bail!("not a folder (it wants a model folder or a run folder)");
    }
    let dir = model_dir(path, sub);
    // A `model.json` that is there but is no file (a folder, a broken link) is named as such.
    if let Some(odd) = [path.join("model.json"), path.join(sub).join("model.json")]
        .into_iter()
        .find(|m| m.symlink_metadata().is_ok() && !m.is_file())
    {
        anyhow::bail!("{} is not a file", odd.display());
    }
    if !dir.join("model.json").is_file() {
        // A run folder of another stage: say which of its models there is, and what it is.
        let others = [
            ("sft", "the SFT model (--sft)"),
            ("policy", "a policy (sample --model)"),
            ("reward_model", "a reward model (--rm)"),
        ];
        // An online run's reward models are one per round: `reward_model_round<k>/`.
        let last_round = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let k: usize = name.strip_prefix("reward_model_round")?.parse().ok()?;
                path.join(&name).join("model.json").is_file().then_some(k)
            })
            .max();
        let round_hint = last_round.filter(|_| sub == "reward_model").map(|k| {
            format!(
                "; it is an online run, whose last round's reward model (--rm) is in {}",
                path.join(format!("reward_model_round{k}")).display()
            )
        });
        let hint = round_hint
            .or_else(|| {
                others
                    .iter()
                    .filter(|(o, _)| *o != sub && path.join(o).join("model.json").is_file())
                    .map(|(o, what)| format!("; it holds {what} in {}", path.join(o).display()))
                    .next()
            })
            .unwrap_or_default();
        anyhow::bail!(
            "holds no model: neither {} nor {} exists{hint}",
            path.join("model.json").display(),
            path.join(sub).join("model.json").display()
        );
    }
    Gpt::load(&dir, device).with_context(|| format!("cannot load the model in {}", dir.display()))
}

/// An input model (`flag` is the option that named it), checked against what the run needs: a
/// reward model (`scalar`) or a language model; the review language's vocabulary; a context
/// that holds the prompt plus the response. (A language model's shape becomes the run's
/// `[model]`: see [`run`].)
fn load_input(
    path: &Path,
    sub: &str,
    flag: &str,
    scalar: bool,
    config: &RlhfConfig,
    device: Device,
) -> Result<Gpt> {
    let model =
        load_model(path, sub, device).with_context(|| format!("{flag} {}", path.display()))?;
    let c = &model.config;
    let p = path.display();
    if c.scalar_head != scalar {
        anyhow::bail!(
            "{flag} {p}: {}",
            if scalar {
                "not a reward model (its model.json has no scalar head); it wants the reward_model/ of an `rlhf rm` run"
            } else {
                "a reward model (its model.json has a scalar head); it wants a language model: an SFT model or a policy"
            }
        );
    }
    let vocab = Vocabulary::new().len();
    anyhow::ensure!(
        c.vocab == vocab,
        "{flag} {p}: a vocabulary of {} tokens; the review language has {vocab}",
        c.vocab
    );
    {
        let needed = gradgym_envs::text::PROMPT_LEN + config.rl.max_response;
        anyhow::ensure!(
            c.context >= needed,
            "{flag} {p}: the model's context ({}) cannot hold the {}-token prompt plus rl.max_response = {} tokens",
            c.context,
            gradgym_envs::text::PROMPT_LEN,
            config.rl.max_response
        );
    }
    Ok(model)
}

/// The comparisons the reward model at `--rm path` was fitted on, when it comes from a run
/// folder (the folder itself, or the model's folder inside it): that folder's `labels.jsonl` and
/// `held_out.jsonl`, and, for `reward_model_round<r>/` of an online run, each round's
/// `labels_round<k>.jsonl` and `held_out_round<k>.jsonl` (k = 2 … r) that its refits added.
/// Where the run's `summary.json` counts the labels that reward model saw
/// (`rm_comparisons_round<r>`), the labels found must be that many. `None` when there are no
/// labels to find: no `labels.jsonl`, or a `reward_model_round<r>/` outside a run folder.
fn labels_of_reward_model(
    path: &Path,
    source: &RewardModelSource,
    grammar: &Grammar,
    (max_response, limit): (usize, &str),
) -> Result<Option<(Vec<Comparison>, Vec<Comparison>)>> {
    let RewardModelSource {
        folder,
        round,
        summary,
    } = source;
    let round = *round;
    if round > 1 && !source.is_run() {
        // A round's reward model copied out of its run: its labels are not beside it.
        return Ok(None);
    }
    // `used`: what the reward model of `round` did with the file; a file without it is
    // optional.
    let read = |name: &str, used: Option<&str>| -> Result<Vec<Comparison>> {
        let file = folder.join(name);
        match std::fs::metadata(&file) {
            // An empty file is what a run writes when it holds nothing out.
            Ok(m) if m.is_file() && m.len() == 0 => Ok(Vec::new()),
            Ok(m) if m.is_file() => data::read_jsonl_within(&file, grammar, max_response, limit),
            _ => match used {
                Some(used) => anyhow::bail!(
                    "--rm {}: {} is missing: the reward model of round {round} was {used} it",
                    path.display(),
                    file.display()
                ),
                None => Ok(Vec::new()),
            },
        }
    };
    if round == 1 && !folder.join("labels.jsonl").is_file() {
        return Ok(None);
    }
    // A run writes a held-out file beside each label file, even empty; a folder that is not a
    // run's (no summary.json) may hold labels alone. (An `rl` run whose --rm had no labels
    // beside it writes its rounds' files alone.)
    let measured = |labels: &str| {
        (summary.is_some() && folder.join(labels).is_file()).then_some("measured on")
    };
    let mut train = read("labels.jsonl", (round == 1).then_some("fitted on"))?;
    let mut held = read("held_out.jsonl", measured("labels.jsonl"))?;
    for k in 2..=round {
        let labels = format!("labels_round{k}.jsonl");
        train.extend(read(&labels, Some("fitted on"))?);
        held.extend(read(
            &format!("held_out_round{k}.jsonl"),
            measured(&labels),
        )?);
    }
    // What the run itself counted, where it did: an online run per round, an `rm` stage or a
    // one-round run as `comparisons`.
    let keys = [
        Some(format!("rm_comparisons_round{round}")),
        (round == 1).then(|| "comparisons".to_string()),
    ];
    let counted = keys.into_iter().flatten().find_map(|key| {
        let n = summary.as_ref()?.get(&key)?.as_u64()?;
        Some((key, n))
    });
    if let Some((key, n)) = counted {
        anyhow::ensure!(
            train.len() as u64 == n,
            "--rm {}: the labels found in {} number {}, but its summary.json says the reward \
             model of round {round} was fitted on {n} ({key}): a label file is missing or was \
             changed",
            path.display(),
            folder.display(),
            train.len()
        );
    }
    Ok(Some((train, held)))
}

/// Where the reward model at `--rm path` comes from, found once per run.
struct RewardModelSource {
    /// The folder that holds the labels and the summary of the run that fitted it (the path
    /// itself, or the run folder its model folder sits in).
    folder: PathBuf,
    /// r for a `reward_model_round<r>/` of an online run, else 1.
    round: usize,
    /// That folder's `summary.json`, where it has one (one that does not parse is an error).
    summary: Option<serde_json::Value>,
}

impl RewardModelSource {
    /// The path is resolved first, so that `.` or a link names the model's own folder and its
    /// run folder.
    fn of(path: &Path) -> Result<Self> {
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let (folder, round) = if !resolved.join("model.json").is_file() {
            (resolved, 1)
        } else {
            let round = resolved
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("reward_model_round"))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|&r| r >= 2)
                .unwrap_or(1);
            match resolved.parent() {
                Some(parent) if !resolved.join("labels.jsonl").is_file() => {
                    (parent.to_path_buf(), round)
                }
                _ => (resolved, 1),
            }
        };
        let file = folder.join("summary.json");
        let summary = match std::fs::read_to_string(&file) {
            Ok(text) => Some(serde_json::from_str(&text).with_context(|| {
                format!(
                    "--rm {}: {} is not valid JSON (a run's summary, damaged or cut short)",
                    path.display(),
                    file.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "--rm {}: cannot read {}",
                    path.display(),
                    file.display()
                )));
            }
        };
        Ok(Self {
            folder,
            round,
            summary,
        })
    }

    /// Whether the folder is a run's (its `manifest.json` beside the summary).
    fn is_run(&self) -> bool {
        self.folder.join("manifest.json").is_file()
    }
}

/// `[model]` as a model's shape.
fn shape_of(c: &GptConfig) -> ModelConfig {
    ModelConfig {
        context: c.context,
        width: c.width,
        layers: c.layers,
        heads: c.heads,
    }
}

fn need<'a>(p: &'a Option<PathBuf>, flag: &str, stage: Stage) -> Result<&'a Path> {
    p.as_deref()
        .ok_or_else(|| anyhow::anyhow!("`gradgym rlhf {}` needs {flag}", stage.name()))
}

fn eval_prompts(config: &RlhfConfig, grammar: &Grammar) -> Vec<Vec<u32>> {
    let mut rng = rng::stream(config.seed, "rlhf/eval-prompts", 0);
    reward::prompts(grammar, config.eval.prompts, &mut rng).1
}

/// `x` to four decimals, or in scientific notation where that would hide it or run long
/// (β = 1e-6 is not `0.0000`, and 1e300 is not 301 digits).
fn compact(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-3..1e4).contains(&x.abs()) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// Runs `stage` into `out` and returns the summary it sealed the folder with.
pub fn run(
    config: &RlhfConfig,
    stage: Stage,
    inputs: &Inputs,
    out: &Path,
    existing: Existing,
    progress: &mut dyn FnMut(&str),
    interrupt: Option<&AtomicBool>,
) -> Result<serde_json::Value> {
    config.validate()?;
    let device = parse_device(&config.device).map_err(anyhow::Error::msg)?;
    // Set even when the config leaves the count to libtorch: setting it also turns off MKL's
    // own choice of thread count call by call (MKL_DYNAMIC), one way the last bits of a
    // product could vary between runs. The `gradgym` binary also puts MKL in its
    // reproducibility mode (MKL_CBWR, benchmarks/src/main.rs); a program that calls this
    // library itself should set MKL_CBWR=AUTO before its first libtorch call for the same
    // guarantee.
    let threads = if config.threads > 0 {
        config.threads as i32
    } else {
        tch::get_num_threads()
    };
    tch::set_num_threads(threads);
    // Bad input fails here, before anything is written: the data file and the input models
    // (each read once, here).
    if let Some(d) = &inputs.data {
        match std::fs::metadata(d) {
            Err(e) => anyhow::bail!("--data {}: cannot read it: {e}", d.display()),
            Ok(m) if !m.is_file() => anyhow::bail!("--data {}: not a file", d.display()),
            Ok(_) => {}
        }
    }
    let mut data_in = match &inputs.data {
        Some(d) => Some(data::read_jsonl(
            d,
            &Grammar::new(),
            config.rl.max_response,
        )?),
        None => None,
    };
    if matches!(stage, Stage::All | Stage::Sft) {
        anyhow::ensure!(
            config.rl.max_response >= SHORTEST_DEMONSTRATION,
            "field `rl.max_response`: {} tokens hold no demonstration for supervised fine-tuning (the shortest is {SHORTEST_DEMONSTRATION}, `<eos>` included); ask for at least {SHORTEST_DEMONSTRATION}",
            config.rl.max_response
        );
    }
    if matches!(stage, Stage::All | Stage::Rm) && inputs.data.is_none() {
        anyhow::ensure!(
            config.labels.comparisons >= 1,
            "field `labels.comparisons`: 0 comparisons leave the reward model nothing to fit; ask for some, or give --data FILE"
        );
    }
    // Each online round labels `labels.comparisons` of the current policy's samples.
    if matches!(stage, Stage::All | Stage::Rl) && config.rl.rounds > 1 {
        anyhow::ensure!(
            config.labels.comparisons >= 1,
            "field `labels.comparisons`: 0, so online rounds 2 to {} (`rl.rounds`) would label none of the policy's samples and refit the reward model on the labels it already had; ask for some, or set rl.rounds = 1",
            config.rl.rounds
        );
    }
    anyhow::ensure!(
        stage != Stage::Bon || !config.eval.best_of_n.is_empty(),
        "field `eval.best_of_n`: empty, so `gradgym rlhf bon` has nothing to do; list the n to evaluate"
    );
    if stage == Stage::Sample {
        anyhow::ensure!(
            inputs.model.is_none() || inputs.sft.is_none(),
            "`gradgym rlhf sample` samples one model: give --model DIR or --sft DIR, not both"
        );
        anyhow::ensure!(
            (1..=config.eval.prompts).contains(&inputs.samples),
            "--samples {}: must be 1 to eval.prompts = {} (the evaluation prompts it answers)",
            inputs.samples,
            config.eval.prompts
        );
    }
    let sft_in = match stage {
        Stage::All | Stage::Sft => None,
        Stage::Sample if inputs.sft.is_none() => None,
        _ => {
            let path = need(&inputs.sft, "--sft DIR", stage)?;
            Some(load_input(path, "sft", "--sft", false, config, device)?)
        }
    };
    let model_in = match (&inputs.model, stage) {
        (Some(path), Stage::Sample) => Some(load_input(
            path, "policy", "--model", false, config, device,
        )?),
        (None, Stage::Sample) if sft_in.is_none() => {
            anyhow::bail!("`gradgym rlhf sample` needs --model DIR or --sft DIR")
        }
        _ => None,
    };
    let rm_path = match stage {
        Stage::Rl | Stage::Bon => Some(need(&inputs.reward_model, "--rm DIR", stage)?),
        Stage::Sample => inputs.reward_model.as_deref(),
        _ => None,
    };
    let rm_in = rm_path
        .map(|path| load_input(path, "reward_model", "--rm", true, config, device))
        .transpose()?;
    // Where an rl or bon run's reward model was fitted.
    let rm_source = match stage {
        Stage::Rl | Stage::Bon => rm_path.map(RewardModelSource::of).transpose()?,
        _ => None,
    };
    // Online rounds refit on every label so far: those of the reward model's run too.
    let prior_labels = match (stage, rm_path, &rm_source) {
        (Stage::Rl, Some(path), Some(source)) if config.rl.rounds > 1 => {
            // The refits fit a reward model built on the SFT body on them, so its context
            // bounds their responses (not `rl.max_response`, the policy's; nor --rm's context:
            // that model never scores them).
            let context = sft_in
                .as_ref()
                .map_or(config.model.context, |m| m.config.context);
            let longest = context.saturating_sub(gradgym_envs::text::PROMPT_LEN);
            let limit = format!(
                "the context of the SFT body the refits build on ({context}) less the \
                 {}-token prompt",
                gradgym_envs::text::PROMPT_LEN
            );
            labels_of_reward_model(path, source, &Grammar::new(), (longest, &limit)).with_context(
                || {
                    format!(
                        "rl.rounds = {}: online rounds refit the reward model on the labels of \
                     --rm's run as well",
                        config.rl.rounds
                    )
                },
            )?
        }
        _ => None,
    };
    // A language model brought as input is the run's model: its own model.json gives `[model]`
    // (the config's is replaced, and said so), so that the run's config.toml and manifest
    // describe the model that ran.
    let adopted;
    let config = match model_in
        .as_ref()
        .map(|m| (m, "--model", inputs.model.as_deref()))
        .or(sft_in.as_ref().map(|m| (m, "--sft", inputs.sft.as_deref())))
    {
        Some((m, flag, Some(path))) if shape_of(&m.config) != config.model => {
            let mut c = config.clone();
            c.model = shape_of(&m.config);
            c.validate().map_err(|e| {
                anyhow::anyhow!("{flag} {}: the model's shape: {e}", path.display())
            })?;
            progress(&format!(
                "{flag} {}: the model has {}; the run uses that instead of the config's [model] ({})",
                path.display(),
                c.model.describe(),
                config.model.describe()
            ));
            adopted = c;
            &adopted
        }
        _ => config,
    };
    let given: Vec<(&str, &Path)> = [
        ("--sft", &inputs.sft),
        ("--rm", &inputs.reward_model),
        ("--model", &inputs.model),
        ("--data", &inputs.data),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
    .collect();
    refuse_inputs_inside(out, &given)?;
    // A batch the machine cannot hold is refused here rather than killed mid-stage: the
    // model's shape is the input model's where one was brought, and the comparisons the first
    // reward-model fit trains on are the data file's or, for online rounds, those beside --rm.
    if device == Device::Cpu {
        let prior = prior_labels.as_ref().map(|(train, _)| train.as_slice());
        let first = data_in.as_deref().or(prior);
        crate::rlhf::memory::check(config, stage, first)?;
    }
    // A signal while the inputs were read (a large --data file takes seconds) ends the run
    // before its folder exists: nothing is written, and --out stays free.
    check_interrupt(interrupt, || "while its inputs were read".into())?;
    let folder = RunFolder::create_as(out, existing, crate::run_folder::FolderKind::Rlhf)?;
    let mut run = Run {
        config,
        folder,
        judge: GoldJudge::new(),
        device,
        lm_csv: "stage,step,loss\n".into(),
        rm_csv: String::new(),
        eval_csv: String::new(),
        samples: String::new(),
        progress,
        interrupt,
        phase: "setup",
    };
    let mc = model_config(config);
    run.folder.write_json(
        "manifest.json",
        &Manifest {
            kind: "rlhf",
            stage: stage.name(),
            config,
            seed: config.seed,
            git_revision: crate::build_info::git_revision(),
            gradgym_version: crate::build_info::GRADGYM_VERSION,
            libtorch_version: crate::build_info::LIBTORCH_VERSION,
            device: format!("{device:?}"),
            cuda_available: tch::Cuda::is_available(),
            torch_threads: tch::get_num_threads(),
            rl_backend: config.rl.backend.resolve(device).name(),
            sgemm: crate::nn::gpt_native::sgemm_name(),
            mkl_cbwr: std::env::var("MKL_CBWR").ok(),
            model_parameters: mc.num_parameters(),
            data: inputs.data.as_ref().map(|p| p.display().to_string()),
            sft: inputs.sft.as_ref().map(|p| p.display().to_string()),
            reward_model: inputs
                .reward_model
                .as_ref()
                .map(|p| p.display().to_string()),
            model: inputs.model.as_ref().map(|p| p.display().to_string()),
        },
    )?;
    run.folder
        .write_text("config.toml", &toml::to_string(config)?)?;
    if stage != Stage::Sample && config.sample != crate::nn::sampling::SamplingConfig::default() {
        run.say(
            "note: [sample] is read by `gradgym rlhf sample` alone: this run's RL, best-of-n, \
             normalisation and evaluation sample the model itself (temperature 1, no cut)",
        );
    }
    if config.rl.ppo_loss == PpoLoss::Clip
        && config.rl.kl_coef != RlConfig::default().kl_coef
        && matches!(stage, Stage::All | Stage::Rl)
    {
        // TRL's `kl_coef` is the KL to the reference: a user bringing that name gets told.
        run.say(&format!(
            "note: rl.kl_coef = {} is PPO-KL's penalty toward the old policy, read only by \
             rl.algo = \"ppo\" with rl.ppo_loss = \"kl\"; the KL penalty toward the SFT \
             reference is rl.beta ({})",
            config.rl.kl_coef, config.rl.beta
        ));
    }
    if config.algo().grouped() && matches!(stage, Stage::All | Stage::Rl) {
        // What RLOO and GRPO, with no value function and advantages of their own, leave unread.
        let (rl, d) = (&config.rl, RlConfig::default());
        let unread: Vec<&str> = [
            ("norm_adv", rl.norm_adv != d.norm_adv),
            (
                "value_learning_rate",
                rl.value_learning_rate != d.value_learning_rate,
            ),
            ("vf_coef", rl.vf_coef != d.vf_coef),
            ("clip_vloss", rl.clip_vloss != d.clip_vloss),
            ("gamma", rl.gamma != d.gamma),
            ("gae_lambda", rl.gae_lambda != d.gae_lambda),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        if !unread.is_empty() {
            run.say(&format!(
                "note: rl.algo = \"{}\" has no value function and takes its advantages within \
                 each group of rl.num_generations responses: rl.{} {} not read",
                rl.algo,
                unread.join(", rl."),
                if unread.len() == 1 { "is" } else { "are" }
            ));
        }
    }
    let mut summary = serde_json::Map::new();
    summary.insert("stage".into(), json!(stage.name()));
    // From here on the folder exists: whatever ends the stages (a non-finite loss, a libtorch
    // panic, a signal) seals it with what they wrote and a status saying why.
    let outcome = catch_panics(|| -> Result<()> {
        // Pretraining and SFT.
        let sft = match stage {
            Stage::All | Stage::Sft => {
                let mut model = Gpt::new(mc.clone(), device, &mut run.stream("init", 0))?;
                let pre = run.lm_stage(&mut model, LmStage::Pretrain)?;
                model.save(&run.folder.path().join("pretrain"))?;
                let mut sft = model.duplicate()?;
                let s = run.lm_stage(&mut sft, LmStage::Sft)?;
                sft.save(&run.folder.path().join("sft"))?;
                summary.insert("pretrain_loss".into(), json!(pre));
                summary.insert("sft_loss".into(), json!(s));
                sft
            }
            _ => match sft_in {
                Some(sft) => sft,
                // `sample` with --model: the model sampled.
                None => model_in.as_ref().expect("checked above").duplicate()?,
            },
        };
        if stage == Stage::Sft {
            return Ok(());
        }
        if stage == Stage::Sample {
            run.phase = "sample";
            let model = match model_in {
                Some(m) => m,
                None => sft.duplicate()?,
            };
            let rm = rm_in;
            let prompts = eval_prompts(config, &run.judge.grammar);
            let prompts = &prompts[..inputs.samples.min(prompts.len()).max(1)];
            let generated = reward::sample_with(
                &model,
                prompts,
                config.rl.max_response,
                &config.sample,
                &mut run.stream("sample", 0),
                run.interrupt,
            )
            .context("sample: sampling from the model")?;
            let proxies: Vec<Option<f64>> = match &rm {
                Some(rm) => {
                    let p: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
                    let r: Vec<&[u32]> = generated.iter().map(|g| g.tokens.as_slice()).collect();
                    reward::score_all(rm, &p, &r)
                        .into_iter()
                        .map(Some)
                        .collect()
                }
                None => vec![None; generated.len()],
            };
            let scored: Vec<f64> = proxies.iter().flatten().copied().collect();
            if !scored.is_empty() {
                let (m, ci) = mean_ci(&scored);
                summary.insert("proxy".into(), json!(m));
                summary.insert("proxy_ci".into(), json!(ci));
            }
            for ((p, g), s) in prompts.iter().zip(&generated).zip(proxies) {
                run.sample_line("model", None, p, &g.tokens, s)?;
            }
            let golds: Vec<f64> = prompts
                .iter()
                .zip(&generated)
                .map(|(p, g)| run.judge.score(p, &g.tokens).map(|s| s.gold))
                .collect::<Result<_, _>>()?;
            let (g, ci) = mean_ci(&golds);
            summary.insert("gold".into(), json!(g));
            summary.insert("gold_ci".into(), json!(ci));
            return Ok(());
        }

        // Labels and the reward model.
        let mut all_train = Vec::new();
        let mut all_held = Vec::new();
        let rm = match stage {
            Stage::All | Stage::Rm => {
                let (train, held) = run.comparisons(&sft, data_in.take(), 0)?;
                let (rm, fit, norm, acc) = run.fit_reward_model(&sft, &train, &held, 0)?;
                rm.save(&run.folder.path().join("reward_model"))?;
                summary.insert("rm_train_loss".into(), json!(fit.train_loss));
                summary.insert("rm_lm_loss".into(), json!(finite_or_null(fit.lm_loss)));
                summary.insert("rm_label_accuracy".into(), json!(finite_or_null(acc.label)));
                summary.insert("rm_gold_accuracy".into(), json!(finite_or_null(acc.gold)));
                summary.insert("rm_gold_pairs".into(), json!(acc.gold_pairs));
                summary.insert(
                    "rm_normalisation".into(),
                    json!({"mean": norm.mean, "std": norm.std}),
                );
                summary.insert("comparisons".into(), json!(train.len()));
                all_train = train;
                all_held = held;
                rm
            }
            _ => {
                let source = rm_source.as_ref().expect("found above for rl and bon");
                let round = source.round;
                // What the reward model was fitted on, when it comes from a run folder: the
                // counts of its own round (an online run's `reward_model_round<r>` saw more
                // labels, and scored otherwise, than its first).
                if let Some(v) = source.summary.as_ref().filter(|_| source.is_run()) {
                    let keys = if round > 1 {
                        [
                            format!("rm_comparisons_round{round}"),
                            format!("rm_gold_accuracy_round{round}"),
                        ]
                    } else {
                        ["comparisons".into(), "rm_gold_accuracy".into()]
                    };
                    for (ours, theirs) in ["comparisons", "rm_gold_accuracy"].iter().zip(keys) {
                        if let Some(x) = v.get(&theirs) {
                            summary.insert(format!("reward_model_{ours}"), x.clone());
                        }
                    }
                }
                if let Some((train, held)) = prior_labels {
                    // Kept with this run's own rounds, so that its folder holds every label
                    // its refits saw (and a later `--rm DIR/reward_model_round<r>` finds them).
                    let folder = run.folder.path().to_path_buf();
                    data::write_jsonl(&folder.join("labels.jsonl"), &train, &run.judge.grammar)?;
                    data::write_jsonl(&folder.join("held_out.jsonl"), &held, &run.judge.grammar)?;
                    all_train = train;
                    all_held = held;
                }
                rm_in.expect("loaded above for rl and bon")
            }
        };
        anyhow::ensure!(
            rm.config.scalar_head,
            "the reward model has no scalar head (`scalar_head` in its model.json)"
        );
        if stage == Stage::Rm {
            return Ok(());
        }

        let prompts = eval_prompts(config, &run.judge.grammar);
        // The reference's own scores: the baseline every method is compared with.
        check_interrupt(run.interrupt, || "before evaluating the SFT policy".into())?;
        run.phase = "eval";
        let (sft_eval, sft_samples) = run.evaluate(&sft, &sft, &rm, &prompts, 0)?;
        run.eval_row(0, "sft", &sft_eval)?;
        summary.insert("sft".into(), serde_json::to_value(&sft_eval)?);

        // Best-of-n.
        check_interrupt(run.interrupt, || "before best-of-n".into())?;
        run.phase = "best-of-n";
        // An empty `eval.best_of_n` leaves best-of-n out of a whole run (`bon` refuses it).
        if matches!(stage, Stage::All | Stage::Bon) && !config.eval.best_of_n.is_empty() {
            let ns = &config.eval.best_of_n;
            // Samples are shown for best-of-4, or of all a prompt's samples when it has fewer.
            let show = 4.min(config.eval.samples_per_prompt);
            let (points, shown) = best_of_n::evaluate(
                &sft,
                &rm,
                &run.judge,
                &prompts,
                config.eval.samples_per_prompt,
                ns,
                config.rl.max_response,
                show,
                &mut run.stream("bon", 0),
                run.interrupt,
            )?;
            write_bon(&run, &points)?;
            for (i, s) in shown.iter().enumerate().take(8) {
                run.sample_line(
                    "sft",
                    None,
                    &prompts[i],
                    &sft_samples[i].0,
                    Some(sft_samples[i].1),
                )?;
                let BonSample {
                    prompt,
                    response,
                    proxy,
                    ..
                } = s;
                run.sample_line(
                    &format!("best_of_{show}"),
                    None,
                    prompt,
                    response,
                    Some(*proxy),
                )?;
            }
            summary.insert("best_of_n".into(), serde_json::to_value(points.iter().map(|p| json!({"n": p.n, "proxy": p.proxy, "gold": p.gold, "gold_ci": p.gold_ci, "kl": p.kl, "kl_bound": p.kl_bound})).collect::<Vec<_>>())?);
            run.say(&format!(
                "best-of-n: {}",
                points
                    .iter()
                    .map(|p| format!(
                        "n={} gold {:.3} KL {:.2}≤{:.2}",
                        p.n, p.gold, p.kl, p.kl_bound
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if stage == Stage::Bon {
            return Ok(());
        }

        // RL.
        run.phase = "rl";
        let rl = &config.rl;
        let mut learner = TokenLearner::from_models(config.algo(), rl.clone(), &sft, &rm)?;
        let mut rm = rm;
        let mut kl = config.reference_kl();
        let mut prompt_rng = run.stream("rl-prompts", 0);
        let mut sample_rng = run.stream("rl-sample", 0);
        let mut minibatch_rng = run.stream("minibatch", 0);
        let grouped = config.algo().grouped();
        // RLOO and GRPO have no value function, and report their groups' spread instead.
        let mut columns = Columns::new(
            METRICS
                .iter()
                .filter(|c| !(grouped && VALUE_METRICS.contains(c))),
        );
        if grouped {
            columns.extend(["reward_std", "frac_reward_zero_std"]);
        }
        // PPO-KL's β toward the old policy, where it exists.
        let ppo_kl = learner.kl_penalised();
        if ppo_kl {
            columns.extend(["policy/kl_coef", "policy/kl_after"]);
        }
        if rl.anneal_lr {
            columns.extend(["learning_rate"]);
        }
        columns.extend(["eval/gold_scores", "eval/scores", "eval/kl"]);
        run.folder.start_metrics(columns)?;
        if rl.rounds > 1 {
            // The labels the first refit starts from: this run's, or those found beside `--rm`.
            summary.insert("rm_comparisons_round1".into(), json!(all_train.len()));
            if all_train.is_empty() {
                run.say(
                    "note: no labels.jsonl beside --rm: the online rounds refit the reward model \
                 on the policy's labels alone",
                );
            }
        }
        let starts = round_starts(rl.updates, rl.rounds);
        let (mut sequences, mut tokens) = (0u64, 0u64);
        let mut round = 0;
        for update in 0..rl.updates {
            check_interrupt(run.interrupt, || {
                format!("after RL update {update}/{}", rl.updates)
            })?;
            if round + 1 < starts.len() && update == starts[round + 1] {
                round += 1;
                // Ziegler's online mode: label the current policy's samples, refit on every label.
                let (train, held) = run.comparisons(&learner.policy, None, round as u64)?;
                let folder = run.folder.path().to_path_buf();
                let r = round + 1;
                all_train.extend(train);
                all_held.extend(held);
                let (new_rm, _, _, acc) =
                    run.fit_reward_model(&sft, &all_train, &all_held, round as u64)?;
                new_rm.save(&folder.join(format!("reward_model_round{r}")))?;
                summary.insert(
                    format!("rm_gold_accuracy_round{r}"),
                    json!(finite_or_null(acc.gold)),
                );
                summary.insert(format!("rm_comparisons_round{r}"), json!(all_train.len()));
                rm = new_rm;
                run.phase = "rl";
            }
            // RLOO and GRPO: batch_size / k prompts, each k times in a row (its group).
            let batch_prompts = if grouped {
                let k = rl.generations();
                let (_, distinct) =
                    reward::prompts(&run.judge.grammar, rl.batch_size / k, &mut prompt_rng);
                distinct
                    .into_iter()
                    .flat_map(|p| std::iter::repeat_n(p, k))
                    .collect()
            } else {
                reward::prompts(&run.judge.grammar, rl.batch_size, &mut prompt_rng).1
            };
            let generated = reward::sample(
                &learner.policy,
                &batch_prompts,
                rl.max_response,
                &mut sample_rng,
                run.interrupt,
            )
            .context("rl: sampling the batch from the policy")?;
            let p: Vec<&[u32]> = batch_prompts.iter().map(|p| p.as_slice()).collect();
            let r: Vec<&[u32]> = generated.iter().map(|g| g.tokens.as_slice()).collect();
            let beta = kl.beta();
            // CleanRL's schedule: 1 at the first update, 1/updates at the last.
            let frac = 1.0 - update as f64 / rl.updates as f64;
            if rl.anneal_lr {
                learner.scale_learning_rates(frac);
            }
            let rollout = learner.rollout(&sft, &rm, &p, &r, beta);
            let stats: TokenUpdateStats = learner
                .update_until(&rollout, &mut minibatch_rng, run.interrupt)
                .with_context(|| format!("RL update {}/{}", update + 1, rl.updates))?;
            let b = r.len() as f64;
            let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
            let k1 = mean(&rollout.kl_k1);
            kl.update(k1, r.len());
            let gold: Vec<f64> = p
                .iter()
                .zip(&r)
                .map(|(p, r)| run.judge.score(p, r).map(|s| s.gold))
                .collect::<Result<_, _>>()?;
            sequences += r.len() as u64;
            let n_tokens: usize = r.iter().map(|r| r.len()).sum();
            tokens += n_tokens as u64;
            let mut row = MetricRow::new();
            row.set("update", (update + 1) as f64)
                .set("round", (round + 1) as f64)
                .set("sequences", sequences as f64)
                .set("tokens", tokens as f64)
                .set("objective/scores", mean(&rollout.scores))
                .set("objective/gold_scores", mean(&gold))
                .set("objective/kl", k1)
                .set("objective/kl_k3", mean(&rollout.kl_k3))
                .set("objective/entropy", mean(&rollout.entropy))
                .set("objective/non_score_reward", -beta * k1)
                .set("objective/rlhf_reward", mean(&rollout.total_reward))
                .set("response_length", n_tokens as f64 / b)
                .set(
                    "eos_fraction",
                    r.iter()
                        .filter(|r| r.last() == Some(&gradgym_envs::text::EOS))
                        .count() as f64
                        / b,
                )
                .set("beta", beta)
                .set("policy/approxkl_avg", stats.approx_kl)
                .set("policy/clipfrac_avg", stats.clipfrac)
                .set("loss/policy_avg", stats.policy_loss)
                .set("gradient_steps", stats.gradient_steps as f64);
            if grouped {
                // TRL's metrics, over the scores (no KL): GRPOTrainer's `reward_std` is the
                // mean standard deviation within a group, RLOOTrainer's the whole batch's.
                let (within, flat) = group_spread(&rollout.scores, rl.generations());
                let std = if config.algo() == TextAlgo::Rloo {
                    group_mean_std(&rollout.scores).1
                } else {
                    within
                };
                row.set("reward_std", std).set("frac_reward_zero_std", flat);
            } else {
                row.set("loss/value_avg", stats.value_loss)
                    .set("val/error", stats.value_error)
                    .set("val/explained_variance", stats.explained_variance);
            }
            if ppo_kl {
                row.set("policy/kl_coef", stats.kl_coef)
                    .set("policy/kl_after", stats.kl_after);
            }
            if rl.anneal_lr {
                row.set("learning_rate", rl.learning_rate * frac);
            }
            let last = update + 1 == rl.updates;
            // Samples are an evaluation's: an update they are due at is evaluated too.
            let sampled = (update + 1) % rl.samples_every == 0 || last;
            if (update + 1) % config.eval.every == 0 || sampled {
                let (e, samples) =
                    run.evaluate(&learner.policy, &sft, &rm, &prompts, (update + 1) as u64)?;
                run.eval_row(update + 1, config.algo().name(), &e)?;
                // The evaluated policy is kept: a run that a signal or a failure ends later
                // still holds it, summary.json saying which update it is.
                learner.policy.save(&run.folder.path().join("policy"))?;
                summary.insert("policy".into(), serde_json::to_value(&e)?);
                summary.insert("policy_update".into(), json!(update + 1));
                row.set("eval/gold_scores", e.gold)
                    .set("eval/scores", e.proxy)
                    .set("eval/kl", e.kl);
                if sampled {
                    for (i, (resp, s)) in samples.iter().enumerate().take(8) {
                        run.sample_line(
                            config.algo().name(),
                            Some(update + 1),
                            &prompts[i],
                            resp,
                            Some(*s),
                        )?;
                    }
                }
                run.say(&format!(
                    "rl update {}/{}: proxy {:.3} gold {:.3} (SFT {:.3}) KL {:.2} β {}",
                    update + 1,
                    rl.updates,
                    e.proxy,
                    e.gold,
                    sft_eval.gold,
                    e.kl,
                    compact(beta)
                ));
            }
            run.folder.append(&row)?;
            // A progress bar's line (the caller draws it on a terminal, or drops it).
            run.say(&format!(
                "{PROGRESS}rl {}/{} proxy {:.3} gold {:.3} KL {:.2}",
                update + 1,
                rl.updates,
                mean(&rollout.scores),
                mean(&gold),
                k1
            ));
        }
        // The last update was evaluated, so its policy is saved; with no updates the policy
        // is the SFT model.
        if rl.updates == 0 {
            learner.policy.save(&run.folder.path().join("policy"))?;
            summary.insert("policy".into(), serde_json::to_value(&sft_eval)?);
        }
        // A completed run's policy is its last update's.
        summary.remove("policy_update");
        summary.insert("algo".into(), json!(config.algo().name()));
        summary.insert("final_beta".into(), json!(kl.beta()));
        Ok(())
    });
    // A signal that came after the last check (while the last scores were computed or the
    // files written) still ends the run as interrupted, its files kept: a signal always
    // gives exit 130, as the acknowledgement on stderr said it would.
    let interrupt = run.interrupt;
    let outcome = outcome.and_then(|()| {
        check_interrupt(interrupt, || {
            "at the end of the run, its files written".into()
        })
    });
    finish(run, summary, outcome)
}

/// A run that started but did not complete: it failed (a non-finite loss, a libtorch panic) or
/// was interrupted, and its folder was sealed with what it had written, `summary.json`'s
/// `status` saying which and `error` why.
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct RunEnded {
    /// The sealed folder.
    pub folder: PathBuf,
    /// `failed` or `interrupted`.
    pub status: &'static str,
    pub error: anyhow::Error,
}

/// Seals the run's folder with `summary` and the outcome's status.
fn finish(
    run: Run<'_>,
    mut summary: serde_json::Map<String, serde_json::Value>,
    outcome: Result<()>,
) -> Result<serde_json::Value> {
    let phase = run.phase;
    let outcome = outcome.map_err(|e| {
        if e.is::<crate::error::Panicked>() {
            e.context(format!("during {phase}"))
        } else {
            e
        }
    });
    let status = outcome.as_ref().map_or_else(ended_status, |()| "completed");
    summary.insert("status".into(), json!(status));
    if let Err(e) = &outcome {
        summary.insert("error".into(), json!(format!("{e:#}")));
    }
    let folder = run.folder.seal_as(&summary, status)?;
    match outcome {
        Ok(()) => Ok(json!({"folder": folder.display().to_string(), "summary": summary})),
        Err(error) => Err(RunEnded {
            folder,
            status,
            error,
        }
        .into()),
    }
}

/// The first update of each of `rounds` online rounds over `updates` updates: round r starts
/// at ⌊r·updates/rounds⌋, so every round has ⌊updates/rounds⌋ or one more (`rounds` ≤ `updates`,
/// as the config's validation requires).
pub fn round_starts(updates: usize, rounds: usize) -> Vec<usize> {
    (0..rounds).map(|r| r * updates / rounds).collect()
}

fn write_bon(run: &Run<'_>, points: &[BonPoint]) -> Result<()> {
    let mut s = String::from("n,proxy,gold,gold_ci,kl,kl_bound,sqrt_kl\n");
    for p in points {
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            p.n,
            p.proxy,
            p.gold,
            ci_cell(p.gold_ci),
            p.kl,
            p.kl_bound,
            p.kl.max(0.0).sqrt()
        ));
    }
    run.folder.write_text("best_of_n.csv", &s)
}

/// A CSV cell of an interval's half-width: empty where there is none (one prompt: NaN), as
/// the CSV readers take an empty cell for a value not there.
fn ci_cell(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        x.to_string()
    }
}

fn finite_or_null(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn compact_numbers_stay_short_and_never_read_as_zero() {
        use super::compact;
        assert_eq!(compact(0.1), "0.1000");
        assert_eq!(compact(0.0), "0.0000");
        assert_eq!(compact(1e-6), "1.000e-6");
        assert_eq!(compact(1e308), "1.000e308");
        assert_eq!(compact(-25000.0), "-2.500e4");
    }
}
