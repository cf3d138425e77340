//! A small GPT-style causal transformer in tch, the policy of RLHF on text (issue 13, item 3).
//!
//! Token and position embeddings, `layers` pre-LayerNorm blocks (multi-head causal
//! self-attention, then a 4× MLP with GELU, each with a residual), a final LayerNorm and an
//! unembedding tied to the token embedding. The layout and names follow GPT-2 as nanoGPT writes
//! it (`transformer.wte.weight`, `transformer.h.<i>.attn.c_attn.weight [3·width, width]`, …,
//! PyTorch `Linear` layout `[outputs, inputs]`), so a checkpoint reads as one without gradgym.
//!
//! - **Initialisation** from the caller's stream, never tch's generator: every weight
//!   N(0, 0.02), the residual projections N(0, 0.02/√(2·layers)) (GPT-2), biases 0, LayerNorms
//!   1 and 0.
//! - **KV cache**: [`Gpt::forward_cached`] runs new tokens against the keys and values of the
//!   earlier ones, so generation costs one position per step; a test checks it gives the logits
//!   of a full forward pass.
//! - **Checkpoints**: [`Gpt::save`] writes `model.safetensors` (float32) and `model.json`
//!   (the [`GptConfig`]); [`Gpt::load`] checks every name and shape.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use gradgym_envs::rng::{Stream, standard_normal};
use safetensors::tensor::SafeTensors;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::checkpoint::{read_f32_tensor, write_f32_safetensors};
use crate::run_folder::write_atomic;

/// The architecture (`model.json` beside the weights).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub vocab: usize,
    /// Positions the model can attend over (prompt plus response).
    pub context: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    /// A scalar head `score.weight [1, width]`, `score.bias [1]` read from the final hidden
    /// state: the reward model and the value function. The language-model head (tied
    /// unembedding) is there either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scalar_head: bool,
}

impl GptConfig {
    /// The GPT-2-shaped model of the throughput benchmark: vocabulary 512, context 64, width
    /// 128, 2 layers, 4 heads (470,528 parameters).
    pub fn bench() -> Self {
        Self {
            vocab: 512,
            context: 64,
            width: 128,
            layers: 2,
            heads: 4,
            scalar_head: false,
        }
    }

    /// The settings' problems, naming the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [
            ("vocab", self.vocab),
            ("context", self.context),
            ("width", self.width),
            ("layers", self.layers),
            ("heads", self.heads),
        ] {
            if v == 0 {
                return Err((field, "must be at least 1".into()));
            }
        }
        if self.width % self.heads != 0 {
            return Err((
                "heads",
                format!("{} heads do not divide width {}", self.heads, self.width),
            ));
        }
        Ok(())
    }

    /// Every parameter tensor: (name, shape), in the order they are initialised and saved.
    pub fn parameters(&self) -> Vec<(String, Vec<i64>)> {
        let (w, v, c) = (self.width as i64, self.vocab as i64, self.context as i64);
        let mut out = vec![
            ("transformer.wte.weight".to_string(), vec![v, w]),
            ("transformer.wpe.weight".to_string(), vec![c, w]),
        ];
        for i in 0..self.layers {
            let p = format!("transformer.h.{i}");
            out.extend([
                (format!("{p}.ln_1.weight"), vec![w]),
                (format!("{p}.ln_1.bias"), vec![w]),
                (format!("{p}.attn.c_attn.weight"), vec![3 * w, w]),
                (format!("{p}.attn.c_attn.bias"), vec![3 * w]),
                (format!("{p}.attn.c_proj.weight"), vec![w, w]),
                (format!("{p}.attn.c_proj.bias"), vec![w]),
                (format!("{p}.ln_2.weight"), vec![w]),
                (format!("{p}.ln_2.bias"), vec![w]),
                (format!("{p}.mlp.c_fc.weight"), vec![4 * w, w]),
                (format!("{p}.mlp.c_fc.bias"), vec![4 * w]),
                (format!("{p}.mlp.c_proj.weight"), vec![w, 4 * w]),
                (format!("{p}.mlp.c_proj.bias"), vec![w]),
            ]);
        }
        out.extend([
            ("transformer.ln_f.weight".to_string(), vec![w]),
            ("transformer.ln_f.bias".to_string(), vec![w]),
        ]);
        if self.scalar_head {
            out.extend([
                ("score.weight".to_string(), vec![1, w]),
                ("score.bias".to_string(), vec![1]),
            ]);
        }
        out
    }

    /// Parameters in all.
    pub fn num_parameters(&self) -> usize {
        self.parameters()
            .iter()
            .map(|(_, s)| s.iter().product::<i64>() as usize)
            .sum()
    }
}

/// The keys and values of the positions run so far, per layer (`[B, heads, T, head_dim]`).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, |(k, _)| k.size()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The transformer: its parameters live in a `VarStore` (for optimisers), by name.
pub struct Gpt {
    pub config: GptConfig,
    pub vs: nn::VarStore,
    params: HashMap<String, Tensor>,
}

impl std::fmt::Debug for Gpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt").field("config", &self.config).finish()
    }
}

impl Gpt {
    /// A model initialised from `rng` (see the module doc) on `device`.
    pub fn new(config: GptConfig, device: Device, rng: &mut Stream) -> Result<Self> {
        config
            .validate()
            .map_err(|(f, m)| anyhow!("model field `{f}`: {m}"))?;
        let residual = 0.02 / ((2 * config.layers) as f64).sqrt();
        let values: Vec<(String, Vec<i64>, Vec<f32>)> = config
            .parameters()
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<i64>() as usize;
                let v = if name.ends_with(".bias") {
                    vec![0.0; n]
                } else if name.contains(".ln_") {
                    vec![1.0; n]
                } else {
                    let std = if name.ends_with("c_proj.weight") {
                        residual
                    } else if name == "score.weight" {
                        // lm-human-preferences' reward head: N(0, 1/(width + 1)).
                        1.0 / ((config.width + 1) as f64).sqrt()
                    } else {
                        0.02
                    };
                    (0..n)
                        .map(|_| (standard_normal(rng) * std) as f32)
                        .collect()
                };
                (name, shape, v)
            })
            .collect();
        Self::from_values(config, device, values)
    }

    fn from_values(
        config: GptConfig,
        device: Device,
        values: Vec<(String, Vec<i64>, Vec<f32>)>,
    ) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut params = HashMap::new();
        for (name, shape, v) in values {
            // Names with dots are not VarStore paths: keep them flat.
            let var = root.zeros(&name.replace('.', "__"), &shape);
            tch::no_grad(|| {
                let mut var = var.shallow_clone();
                var.copy_(&Tensor::from_slice(&v).reshape(&shape).to_device(device));
            });
            params.insert(name, var);
        }
        Ok(Self { config, vs, params })
    }

    fn p(&self, name: &str) -> &Tensor {
        &self.params[name]
    }

    fn values(&self) -> Vec<(String, Vec<i64>, Vec<f32>)> {
        self.named_parameters()
            .into_iter()
            .map(|(n, t)| {
                let shape = t.size();
                let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).view([-1])).expect("floats");
                (n, shape, v)
            })
            .collect()
    }

    /// An independent copy (its own `VarStore`) with the same weights, on the same device.
    pub fn duplicate(&self) -> Result<Self> {
        Self::from_values(self.config.clone(), self.vs.device(), self.values())
    }

    /// A copy of this body with a fresh scalar head drawn from `rng` (N(0, 1/(width + 1)),
    /// bias 0): the reward model initialised from the SFT model. (The value function starts as
    /// the reward model, body and head: that is [`Gpt::duplicate`].)
    pub fn with_scalar_head(&self, rng: &mut Stream) -> Result<Self> {
        let config = GptConfig {
            scalar_head: true,
            ..self.config.clone()
        };
        let mut values: Vec<_> = self
            .values()
            .into_iter()
            .filter(|(n, _, _)| !n.starts_with("score."))
            .collect();
        let w = config.width;
        let std = 1.0 / ((w + 1) as f64).sqrt();
        values.push((
            "score.weight".into(),
            vec![1, w as i64],
            (0..w)
                .map(|_| (standard_normal(rng) * std) as f32)
                .collect(),
        ));
        values.push(("score.bias".into(), vec![1], vec![0.0]));
        Self::from_values(config, self.vs.device(), values)
    }

    /// Overwrites the scalar head: `score = gain · score + shift` (folds a reward
    /// normalisation into the weights, so a saved reward model scores already normalised).
    pub fn rescale_head(&mut self, gain: f64, shift: f64) {
        assert!(self.config.scalar_head, "a model with a scalar head");
        tch::no_grad(|| {
            let mut w = self.params["score.weight"].shallow_clone();
            let _ = w.g_mul_scalar_(gain);
            let mut b = self.params["score.bias"].shallow_clone();
            let _ = b.g_mul_scalar_(gain);
            let _ = b.g_add_scalar_(shift);
        });
    }

    /// Copies of every parameter on the CPU, by name, in [`GptConfig::parameters`] order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.config
            .parameters()
            .into_iter()
            .map(|(n, _)| {
                let t = self.p(&n).to_device(Device::Cpu).detach().copy();
                (n, t)
            })
            .collect()
    }

    fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        x.matmul(&w.tr()) + b
    }

    /// Logits `[B, T, vocab]` of `tokens` `[B, T]` (int64), all positions, no cache.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        self.forward_cached(tokens, &mut KvCache::default())
    }

    /// The final hidden states `[B, T, width]` (after the last LayerNorm), no cache.
    pub fn hidden(&self, tokens: &Tensor) -> Tensor {
        self.hidden_cached(tokens, &mut KvCache::default())
    }

    /// Logits `[B, T, vocab]` of hidden states from [`Gpt::hidden`] (the tied unembedding).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.p("transformer.wte.weight").tr())
    }

    /// The scalar head on hidden states from [`Gpt::hidden`]: `[B, T]`.
    pub fn scalar(&self, hidden: &Tensor) -> Tensor {
        assert!(self.config.scalar_head, "this model has no scalar head");
        Self::linear(hidden, self.p("score.weight"), self.p("score.bias")).squeeze_dim(-1)
    }

    /// The scalar head read at one position per row (`positions` `[B]`, int64): the reward
    /// model's score at each response's last real token.
    pub fn score_at(&self, tokens: &Tensor, positions: &Tensor) -> Tensor {
        let s = self.scalar(&self.hidden(tokens));
        s.gather(1, &positions.unsqueeze(1), false).squeeze_dim(1)
    }

    /// Logits `[B, T_new, vocab]` of `tokens` `[B, T_new]` at positions after those in `cache`,
    /// attending over the cached keys and values and each other (causally); the new keys and
    /// values are appended to `cache`.
    // `x = x + …`, not `x += …`: the in-place add would overwrite a tensor the LayerNorm's
    // backward still needs.
    pub fn forward_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        let h = self.hidden_cached(tokens, cache);
        self.logits(&h)
    }

    /// [`Gpt::forward_cached`] before the unembedding: the final hidden states `[B, T_new, width]`.
    #[allow(clippy::assign_op_pattern)]
    pub fn hidden_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens [B, T]");
        let past = cache.len();
        assert!(
            past + t <= self.config.context as i64,
            "{} positions exceed the context of {}",
            past + t,
            self.config.context
        );
        let device = tokens.device();
        let (w, h) = (self.config.width as i64, self.config.heads as i64);
        let hd = w / h;
        let pos = Tensor::arange_start(past, past + t, (Kind::Int64, device));
        let mut x = self
            .p("transformer.wte.weight")
            .index_select(0, &tokens.reshape([-1]))
            .view([b, t, w])
            + self
                .p("transformer.wpe.weight")
                .index_select(0, &pos)
                .unsqueeze(0);
        // Query i (absolute position past + i) sees keys 0..=past + i.
        let keys = past + t;
        let mask = Tensor::ones([t, keys], (Kind::Bool, device)).tril(past);
        let fresh = cache.layers.is_empty();
        for l in 0..self.config.layers {
            let p = format!("transformer.h.{l}");
            let ln = |x: &Tensor, n: &str| {
                x.layer_norm(
                    [w],
                    Some(self.p(&format!("{p}.{n}.weight"))),
                    Some(self.p(&format!("{p}.{n}.bias"))),
                    1e-5,
                    true,
                )
            };
            let a = ln(&x, "ln_1");
            let qkv = Self::linear(
                &a,
                self.p(&format!("{p}.attn.c_attn.weight")),
                self.p(&format!("{p}.attn.c_attn.bias")),
            );
            let parts = qkv.split(w, 2);
            let heads = |x: &Tensor| x.view([b, t, h, hd]).transpose(1, 2);
            let (q, k_new, v_new) = (heads(&parts[0]), heads(&parts[1]), heads(&parts[2]));
            let (k, v) = if fresh {
                (k_new, v_new)
            } else {
                let (pk, pv) = &cache.layers[l];
                (Tensor::cat(&[pk, &k_new], 2), Tensor::cat(&[pv, &v_new], 2))
            };
            let att = q.matmul(&k.transpose(-2, -1)) / (hd as f64).sqrt();
            let att = att
                .masked_fill(&mask.logical_not(), f64::NEG_INFINITY)
                .softmax(-1, Kind::Float);
            let y = att.matmul(&v).transpose(1, 2).contiguous().view([b, t, w]);
            x = x + Self::linear(
                &y,
                self.p(&format!("{p}.attn.c_proj.weight")),
                self.p(&format!("{p}.attn.c_proj.bias")),
            );
            let m = ln(&x, "ln_2");
            let m = Self::linear(
                &m,
                self.p(&format!("{p}.mlp.c_fc.weight")),
                self.p(&format!("{p}.mlp.c_fc.bias")),
            )
            .gelu("tanh");
            x = x + Self::linear(
                &m,
                self.p(&format!("{p}.mlp.c_proj.weight")),
                self.p(&format!("{p}.mlp.c_proj.bias")),
            );
            if fresh {
                cache.layers.push((k, v));
            } else {
                cache.layers[l] = (k, v);
            }
        }
        x.layer_norm(
            [w],
            Some(self.p("transformer.ln_f.weight")),
            Some(self.p("transformer.ln_f.bias")),
            1e-5,
            true,
        )
    }

    /// The mean next-token cross-entropy of `tokens` `[B, T]` over the positions `mask` `[B, T]`
    /// marks (a float or bool tensor, true at the tokens to predict, e.g. a response's real
    /// tokens): position t's logits predict token t, so prompt and padding positions, unmasked,
    /// contribute nothing to the loss or its gradient. The language-model loss of pretraining
    /// (mask: every real token after the first), supervised fine-tuning (mask: the response)
    /// and Askell et al.'s LM term.
    pub fn masked_lm_loss(&self, tokens: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens [B, T]");
        let logits = self.forward(&tokens.narrow(1, 0, t - 1));
        let targets = tokens.narrow(1, 1, t - 1);
        let weights = mask.narrow(1, 1, t - 1).to_kind(Kind::Float);
        let logp = logits.log_softmax(-1, Kind::Float);
        let picked = logp
            .gather(2, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let total = weights.sum(Kind::Float).clamp_min(1.0);
        let _ = b;
        -(picked * &weights).sum(Kind::Float) / total
    }

    /// Writes `model.safetensors` and `model.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = self
            .values()
            .into_iter()
            .map(|(n, s, v)| (n, s.iter().map(|&d| d as usize).collect(), v))
            .collect();
        write_f32_safetensors(&dir.join("model.safetensors"), &tensors, "gradgym-gpt")?;
        write_atomic(
            &dir.join("model.json"),
            serde_json::to_string_pretty(&self.config)?.as_bytes(),
        )
    }

    /// Reads a model saved by [`Gpt::save`] onto `device`, checking every name and shape.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let json = dir.join("model.json");
        let config: GptConfig = serde_json::from_str(
            &std::fs::read_to_string(&json)
                .with_context(|| format!("cannot read {}", json.display()))?,
        )
        .with_context(|| format!("{}: not a gradgym model config", json.display()))?;
        config
            .validate()
            .map_err(|(f, m)| anyhow!("{}: field `{f}`: {m}", json.display()))?;
        let path = dir.join("model.safetensors");
        let data =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = SafeTensors::deserialize(&data)
            .map_err(|e| anyhow!("{}: not a safetensors file: {e:?}", path.display()))?;
        let mut values = Vec::new();
        for (name, shape) in config.parameters() {
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let v = read_f32_tensor(&st, &name, &dims, &path)
                .map_err(|e| anyhow!("{e} (the architecture in {})", json.display()))?;
            values.push((name, shape, v));
        }
        Self::from_values(config, device, values)
    }
}
