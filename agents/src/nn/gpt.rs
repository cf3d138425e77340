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
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use crate::run_folder::write_atomic;
use crate::safetensors_io::{parse_safetensors, read_f32_tensor, write_f32_safetensors};

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
            // The RLHF config's cap: larger sizes would overflow an allocation's size.
            if let Some(problem) = crate::limits::over(&[(field, v)], crate::limits::MOST_SIZE) {
                return Err(problem);
            }
        }
        if self.width % self.heads != 0 {
            return Err((
                "heads",
                format!("{} heads do not divide width {}", self.heads, self.width),
            ));
        }
        if let Some(problem) =
            crate::limits::too_many_parameters(self.vocab, self.context, self.width, self.layers)
        {
            return Err(("width", problem));
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

/// The keys and values of the positions run so far, per layer (`[B, heads, capacity,
/// head_dim]`, the first [`KvCache::len`] positions filled). Without gradients the buffers are
/// allocated once, for the model's whole context, and each step writes its new positions in
/// place; with gradients each step concatenates (an in-place write would overwrite what the
/// backward pass of an earlier step still needs).
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes layer `l`'s new keys and values `[B, heads, T_new, head_dim]` after the `past`
    /// held and returns all of them (`[B, heads, past + T_new, head_dim]`).
    fn append(
        &mut self,
        l: usize,
        k_new: Tensor,
        v_new: Tensor,
        past: i64,
        in_place: bool,
        context: usize,
    ) -> (Tensor, Tensor) {
        let t = k_new.size()[2];
        let keys = past + t;
        if in_place {
            let fits = self.layers.get(l).is_some_and(|(k, _)| {
                let s = k.size();
                s[2] >= keys && s[0] == k_new.size()[0]
            });
            if !fits {
                // One buffer for the whole context (the earlier positions copied over; nothing
                // past `len` is ever read, so it starts uninitialised).
                let mut shape = k_new.size();
                shape[2] = context as i64;
                let opts = (k_new.kind(), k_new.device());
                let (kb, vb) = (Tensor::empty(&shape, opts), Tensor::empty(&shape, opts));
                if past > 0 {
                    let (pk, pv) = &self.layers[l];
                    kb.narrow(2, 0, past).copy_(&pk.narrow(2, 0, past));
                    vb.narrow(2, 0, past).copy_(&pv.narrow(2, 0, past));
                }
                if l < self.layers.len() {
                    self.layers[l] = (kb, vb);
                } else {
                    self.layers.push((kb, vb));
                }
            }
            let (kb, vb) = &self.layers[l];
            kb.narrow(2, past, t).copy_(&k_new);
            vb.narrow(2, past, t).copy_(&v_new);
            (kb.narrow(2, 0, keys), vb.narrow(2, 0, keys))
        } else {
            let (k, v) = if past == 0 {
                (k_new, v_new)
            } else {
                let (pk, pv) = &self.layers[l];
                (
                    Tensor::cat(&[&pk.narrow(2, 0, past), &k_new], 2),
                    Tensor::cat(&[&pv.narrow(2, 0, past), &v_new], 2),
                )
            };
            let out = (k.shallow_clone(), v.shallow_clone());
            if l < self.layers.len() {
                self.layers[l] = (k, v);
            } else {
                self.layers.push((k, v));
            }
            out
        }
    }
}

/// The transformer: its parameters live in a `VarStore` (for optimisers), by name.
pub struct Gpt {
    pub config: GptConfig,
    pub vs: nn::VarStore,
    params: HashMap<String, Tensor>,
    /// The same parameters (shallow clones: one storage, one gradient), laid out for the
    /// forward pass, so that it looks no name up.
    weights: Weights,
}

/// A weight and its bias (a `Linear`, or a LayerNorm's scale and shift).
struct Affine {
    weight: Tensor,
    bias: Tensor,
}

impl Affine {
    fn of(params: &HashMap<String, Tensor>, prefix: &str) -> Self {
        Self {
            weight: params[&format!("{prefix}.weight")].shallow_clone(),
            bias: params[&format!("{prefix}.bias")].shallow_clone(),
        }
    }

    /// `x Wᵀ + b` (one fused matmul-add).
    fn linear(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }

    fn layer_norm(&self, x: &Tensor) -> Tensor {
        let w = self.weight.size()[0];
        x.layer_norm([w], Some(&self.weight), Some(&self.bias), 1e-5, true)
    }
}

struct Block {
    ln_1: Affine,
    c_attn: Affine,
    attn_proj: Affine,
    ln_2: Affine,
    c_fc: Affine,
    mlp_proj: Affine,
}

struct Weights {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Affine,
    score: Option<Affine>,
}

impl Weights {
    fn of(config: &GptConfig, params: &HashMap<String, Tensor>) -> Self {
        let blocks = (0..config.layers)
            .map(|i| {
                let p = format!("transformer.h.{i}");
                Block {
                    ln_1: Affine::of(params, &format!("{p}.ln_1")),
                    c_attn: Affine::of(params, &format!("{p}.attn.c_attn")),
                    attn_proj: Affine::of(params, &format!("{p}.attn.c_proj")),
                    ln_2: Affine::of(params, &format!("{p}.ln_2")),
                    c_fc: Affine::of(params, &format!("{p}.mlp.c_fc")),
                    mlp_proj: Affine::of(params, &format!("{p}.mlp.c_proj")),
                }
            })
            .collect();
        Self {
            wte: params["transformer.wte.weight"].shallow_clone(),
            wpe: params["transformer.wpe.weight"].shallow_clone(),
            blocks,
            ln_f: Affine::of(params, "transformer.ln_f"),
            score: config.scalar_head.then(|| Affine::of(params, "score")),
        }
    }
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
        let weights = Weights::of(&config, &params);
        Ok(Self {
            config,
            vs,
            params,
            weights,
        })
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

    /// Parameter `name` as host floats (a plain copy of the storage for a float32 model on
    /// the CPU: no libtorch operator runs, so its thread pool is not woken).
    pub(crate) fn host_values(&self, name: &str) -> Vec<f32> {
        let t = self.p(name);
        let t = if t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous()
        };
        let n = t.numel();
        let mut v = vec![0f32; n];
        t.copy_data(&mut v, n);
        v
    }

    /// Overwrites parameter `name` with `values` (its elements in row-major order), outside
    /// autograd; its version counter moves as with any in-place write.
    pub(crate) fn set_host_values(&self, name: &str, values: &[f32]) {
        let t = self.p(name);
        assert_eq!(t.numel(), values.len(), "{name}: {} values", values.len());
        let src = Tensor::from_slice(values)
            .view(t.size().as_slice())
            .to_device(t.device())
            .to_kind(t.kind());
        tch::no_grad(|| {
            let mut t = t.shallow_clone();
            t.copy_(&src);
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

    /// Logits `[B, T, vocab]` of `tokens` `[B, T]` (int64), all positions, no cache.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        self.logits(&self.hidden(tokens))
    }

    /// The final hidden states `[B, T, width]` (after the last LayerNorm), no cache.
    pub fn hidden(&self, tokens: &Tensor) -> Tensor {
        self.run(tokens, None, 0)
    }

    /// The final hidden states of positions `from..T` only, `[B, T − from, width]`: what
    /// `hidden(tokens).narrow(1, from, T − from)` gives, without running the last block's
    /// attention projection and MLP (or the final LayerNorm) at the positions before `from`,
    /// which no later position needs there.
    pub fn hidden_from(&self, tokens: &Tensor, from: i64) -> Tensor {
        self.run(tokens, None, from)
    }

    /// Logits `[B, T, vocab]` of hidden states from [`Gpt::hidden`] (the tied unembedding).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.weights.wte.tr())
    }

    /// The scalar head on hidden states from [`Gpt::hidden`]: `[B, T]`.
    pub fn scalar(&self, hidden: &Tensor) -> Tensor {
        let head = self
            .weights
            .score
            .as_ref()
            .expect("this model has no scalar head");
        head.linear(hidden).squeeze_dim(-1)
    }

    /// The scalar head read at one position per row (`positions` `[B]`, int64): the reward
    /// model's score at each response's last real token.
    pub fn score_at(&self, tokens: &Tensor, positions: &Tensor) -> Tensor {
        // Only positions from the earliest one read are needed.
        let from = if positions.numel() == 0 {
            0
        } else {
            positions.min().int64_value(&[]).max(0)
        };
        let s = self.scalar(&self.hidden_from(tokens, from));
        s.gather(1, &(positions - from).unsqueeze(1), false)
            .squeeze_dim(1)
    }

    /// Logits `[B, T_new, vocab]` of `tokens` `[B, T_new]` at positions after those in `cache`,
    /// attending over the cached keys and values and each other (causally); the new keys and
    /// values are appended to `cache`.
    pub fn forward_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        let h = self.hidden_cached(tokens, cache);
        self.logits(&h)
    }

    /// [`Gpt::forward_cached`] before the unembedding: the final hidden states `[B, T_new, width]`.
    pub fn hidden_cached(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        self.run(tokens, Some(cache), 0)
    }

    /// The blocks on `tokens` `[B, T]` after the positions in `cache` (none without one),
    /// returning the final hidden states of the new positions `from..T`.
    // `x = x + …`, not `x += …`: the in-place add would overwrite a tensor the LayerNorm's
    // backward still needs.
    #[allow(clippy::assign_op_pattern)]
    fn run(&self, tokens: &Tensor, mut cache: Option<&mut KvCache>, from: i64) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens [B, T]");
        let past = cache.as_ref().map_or(0, |c| c.len);
        assert!(
            past + t <= self.config.context as i64,
            "{} positions exceed the context of {}",
            past + t,
            self.config.context
        );
        assert!(
            (0..t.max(1)).contains(&from),
            "from {from} of {t} positions"
        );
        let weights = &self.weights;
        let device = tokens.device();
        let (w, h) = (self.config.width as i64, self.config.heads as i64);
        let hd = w / h;
        let mut x = weights
            .wte
            .index_select(0, &tokens.reshape([-1]))
            .view([b, t, w])
            + weights.wpe.narrow(0, past, t);
        // In place only without gradients (see `KvCache`).
        let in_place = !x.requires_grad();
        // Query i (absolute position past + i) sees keys 0..=past + i: the fused kernel's
        // causal mask when nothing is cached, no mask for one new position, else explicit.
        let mask = (past > 0 && t > 1)
            .then(|| Tensor::ones([t, past + t], (Kind::Bool, device)).tril(past));
        let last = weights.blocks.len() - 1;
        for (l, block) in weights.blocks.iter().enumerate() {
            let a = block.ln_1.layer_norm(&x);
            // q, k, v [B, heads, T, head_dim], views (a split's gradient is one `cat`).
            let qkv = block.c_attn.linear(&a).split(w, 2);
            let part = |i: usize| qkv[i].view([b, t, h, hd]).transpose(1, 2);
            let (q, k_new, v_new) = (part(0), part(1), part(2));
            let (k, v) = match cache.as_deref_mut() {
                None => (k_new, v_new),
                Some(cache) => cache.append(l, k_new, v_new, past, in_place, self.config.context),
            };
            let y = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                mask.as_ref(),
                0.0,
                past == 0 && t > 1,
                None,
                false,
            );
            let mut y = y.transpose(1, 2).reshape([b, t, w]);
            if l == last && from > 0 {
                // Nothing after the last block mixes positions: drop those not asked for.
                y = y.narrow(1, from, t - from);
                x = x.narrow(1, from, t - from);
            }
            x = x + block.attn_proj.linear(&y);
            let m = super::gelu::gelu_tanh(&block.c_fc.linear(&block.ln_2.layer_norm(&x)));
            x = x + block.mlp_proj.linear(&m);
        }
        if let Some(cache) = cache {
            cache.len = past + t;
        }
        weights.ln_f.layer_norm(&x)
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
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        // A byte-order mark, as some editors write one, is not part of the JSON.
        let config: GptConfig =
            serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
                .with_context(|| format!("{}: not a gradgym model config", json.display()))?;
        config
            .validate()
            .map_err(|(f, m)| anyhow!("{}: field `{f}`: {m}", json.display()))?;
        let path = dir.join("model.safetensors");
        let data =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = parse_safetensors(&data, &path)?;
        let names = st.names();
        let has = |n: &str| names.iter().any(|m| *m == n);
        // The tied embedding under its other name alone: what `safetensors.torch.save_model`
        // writes for nanoGPT's model (of two names for one tensor it keeps the first in sorted
        // order, `lm_head.weight`).
        let wte_as_head = !has("transformer.wte.weight") && has("lm_head.weight");
        let mut values = Vec::new();
        for (name, shape) in config.parameters() {
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let stored = if wte_as_head && name == "transformer.wte.weight" {
                "lm_head.weight"
            } else {
                name.as_str()
            };
            let v = read_f32_tensor(&st, stored, &dims, &path)
                .map_err(|e| anyhow!("{e} (the architecture in {})", json.display()))?;
            values.push((name, shape, v));
        }
        // nanoGPT without flash attention keeps its causal mask as a buffer in the state dict,
        // `transformer.h.<i>.attn.bias` [1, 1, n, n] of ones on and below the diagonal: the
        // causality this model has built in, so accepted where it is exactly that mask and
        // covers the context.
        let mask = |n: &str| {
            n.strip_prefix("transformer.h.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(i, rest)| {
                    rest == "attn.bias" && i.parse::<usize>().is_ok_and(|i| i < config.layers)
                })
        };
        for name in names.iter().filter(|n| mask(n)) {
            let (dtype, shape) = st
                .tensor(name)
                .map(|v| (Some(v.dtype()), v.shape().to_vec()))
                .unwrap_or_default();
            let n = shape.get(2).copied().unwrap_or(0);
            let fits = dtype == Some(safetensors::Dtype::F32)
                && shape.len() == 4
                && shape[..2] == [1, 1]
                && shape[3] == n;
            let v = if fits && n >= config.context {
                read_f32_tensor(&st, name, &shape, &path)?
            } else {
                Vec::new()
            };
            let causal = !v.is_empty()
                && v.iter().enumerate().all(|(k, &x)| {
                    let (row, col) = (k / n, k % n);
                    x == if col <= row { 1.0 } else { 0.0 }
                });
            anyhow::ensure!(
                causal,
                "{}: tensor `{name}` ({} {shape:?}) is not nanoGPT's causal mask over at least \
                 the context of {} (F32 [1, 1, n, n], ones on and below the diagonal)",
                path.display(),
                dtype.map_or("?".into(), |d| format!("{d:?}")),
                config.context
            );
        }
        // A separate `lm_head.weight` equal to the token embedding is a tied head written out
        // twice (as a PyTorch state dict of nanoGPT's model holds it): the same model. One that
        // differs is an untied head, which this architecture has no place for.
        if !wte_as_head && has("lm_head.weight") {
            let wte = &values[0];
            let dims: Vec<usize> = wte.1.iter().map(|&d| d as usize).collect();
            let head = read_f32_tensor(&st, "lm_head.weight", &dims, &path)?;
            let same = head
                .iter()
                .zip(&wte.2)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            anyhow::ensure!(
                same,
                "{}: `lm_head.weight` differs from `transformer.wte.weight`: gradgym's model ties \
                 its unembedding to the token embedding, so an untied head cannot be loaded",
                path.display()
            );
        }
        // A tensor the architecture has no place for means the file and model.json disagree
        // (a scalar head under a language model's config, say): refused, not dropped.
        if let Some(extra) = names.iter().find(|n| {
            **n != "lm_head.weight" && !mask(n) && !values.iter().any(|(name, _, _)| name == **n)
        }) {
            anyhow::bail!(
                "{}: tensor `{extra}` has no place in the architecture of {}",
                path.display(),
                json.display()
            );
        }
        Self::from_values(config, device, values)
    }
}
