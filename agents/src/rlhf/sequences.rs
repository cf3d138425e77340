//! A batch of (prompt, response) token sequences as tensors, and what the models read from it.
//!
//! Every prompt has [`PROMPT_LEN`] tokens, so response token t sits at position P + t and is
//! predicted by the logits of position P + t − 1. Rows are padded with `<pad>` after their
//! last response token; `mask` is 1 exactly at the real response tokens, so prompt and padding
//! positions drop out of every loss and gradient that is weighted by it.

use gradgym_envs::text::{PAD, PROMPT_LEN};
use tch::{Device, Kind, Tensor};

use crate::nn::gpt::Gpt;

/// Packed sequences `[B, P + T]`, T the longest response of the batch.
#[derive(Debug)]
pub struct Sequences {
    /// `[B, P + T]` int64.
    pub tokens: Tensor,
    /// `[B, T]` float: 1 at real response tokens, 0 at padding.
    pub mask: Tensor,
    /// `[B]` int64: the position of each row's last real response token (where the reward
    /// model reads its score).
    pub last: Tensor,
    /// Response lengths.
    pub lengths: Vec<usize>,
    /// T.
    pub width: usize,
}

impl Sequences {
    /// Packs `prompts[i] ++ responses[i]` (every response at least one token).
    pub fn pack(prompts: &[&[u32]], responses: &[&[u32]], device: Device) -> Self {
        assert_eq!(prompts.len(), responses.len(), "one response per prompt");
        let b = prompts.len();
        let width = responses.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let l = PROMPT_LEN + width;
        let mut tokens = vec![PAD as i64; b * l];
        let mut mask = vec![0f32; b * width];
        let mut last = vec![0i64; b];
        let mut lengths = Vec::with_capacity(b);
        for i in 0..b {
            assert_eq!(
                prompts[i].len(),
                PROMPT_LEN,
                "prompts have {PROMPT_LEN} tokens"
            );
            assert!(
                !responses[i].is_empty(),
                "a response has at least one token"
            );
            for (j, &t) in prompts[i].iter().chain(responses[i].iter()).enumerate() {
                tokens[i * l + j] = t as i64;
            }
            for j in 0..responses[i].len() {
                mask[i * width + j] = 1.0;
            }
            last[i] = (PROMPT_LEN + responses[i].len() - 1) as i64;
            lengths.push(responses[i].len());
        }
        Self {
            tokens: Tensor::from_slice(&tokens)
                .view([b as i64, l as i64])
                .to_device(device),
            mask: Tensor::from_slice(&mask)
                .view([b as i64, width as i64])
                .to_device(device),
            last: Tensor::from_slice(&last).to_device(device),
            lengths,
            width,
        }
    }

    /// Rows `index` (`[n]` int64) of the batch.
    pub fn rows(&self, index: &Tensor) -> Self {
        let lengths: Vec<usize> = Vec::<i64>::try_from(index.to_device(Device::Cpu))
            .expect("int64 index")
            .into_iter()
            .map(|i| self.lengths[i as usize])
            .collect();
        Self {
            tokens: self.tokens.index_select(0, index),
            mask: self.mask.index_select(0, index),
            last: self.last.index_select(0, index),
            lengths,
            width: self.width,
        }
    }

    /// The inputs whose outputs predict the response tokens: positions 0 … P + T − 2.
    fn inputs(&self) -> Tensor {
        let l = self.tokens.size()[1];
        self.tokens.narrow(1, 0, l - 1)
    }

    /// The hidden states at the positions that predict response tokens: `[B, T, width]`.
    fn response_hidden(&self, model: &Gpt) -> Tensor {
        model.hidden_from(&self.inputs(), PROMPT_LEN as i64 - 1)
    }

    fn response_tokens(&self) -> Tensor {
        self.tokens.narrow(1, PROMPT_LEN as i64, self.width as i64)
    }
}

/// What a language model gives on the response positions.
#[derive(Debug)]
pub struct TokenStats {
    /// `[B, T]` log π(y_t | x, y_<t) (0 at padding).
    pub logprobs: Tensor,
    /// `[B, T]` the policy's entropy over the whole vocabulary at each position (not the
    /// sampled token's negative log-likelihood), 0 at padding.
    pub entropy: Tensor,
}

/// Log-probabilities and entropies of `seqs`' responses under `model` (with gradients, unless
/// called under `no_grad`).
pub fn token_stats(model: &Gpt, seqs: &Sequences) -> TokenStats {
    token_stats_with(model, seqs, true)
}

/// [`token_stats`], the entropy with gradients only when `entropy_grad` (the same values
/// either way): for a caller that differentiates the log-probabilities but only reads the
/// entropy, its graph over `[B, T, vocab]` is not built.
pub fn token_stats_with(model: &Gpt, seqs: &Sequences, entropy_grad: bool) -> TokenStats {
    let logits = model.logits(&seqs.response_hidden(model));
    let logp = logits.log_softmax(-1, Kind::Float);
    let picked = logp
        .gather(2, &seqs.response_tokens().unsqueeze(-1), false)
        .squeeze_dim(-1);
    let entropy_of =
        |logp: &Tensor| -(logp.exp() * logp).sum_dim_intlist(-1, false, Kind::Float) * &seqs.mask;
    let entropy = if entropy_grad {
        entropy_of(&logp)
    } else {
        tch::no_grad(|| entropy_of(&logp.detach()))
    };
    TokenStats {
        logprobs: picked * &seqs.mask,
        entropy,
    }
}

/// Log-probabilities only (cheaper: no entropy).
pub fn token_logprobs(model: &Gpt, seqs: &Sequences) -> Tensor {
    let logits = model.logits(&seqs.response_hidden(model));
    let picked = logits
        .log_softmax(-1, Kind::Float)
        .gather(2, &seqs.response_tokens().unsqueeze(-1), false)
        .squeeze_dim(-1);
    picked * &seqs.mask
}

/// The value function (a model with a scalar head) at the state before each response token:
/// `[B, T]`, 0 at padding.
pub fn token_values(value: &Gpt, seqs: &Sequences) -> Tensor {
    value.scalar(&seqs.response_hidden(value)) * &seqs.mask
}

/// The reward model's score of each row, read at its last real response token: `[B]`.
pub fn scores(reward_model: &Gpt, seqs: &Sequences) -> Tensor {
    reward_model.score_at(&seqs.tokens, &seqs.last)
}

/// A `[B, T]` float tensor as rows of f64.
pub fn rows_f64(t: &Tensor) -> Vec<Vec<f64>> {
    Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu)).expect("[B, T]")
}

/// A `[B]` float tensor as f64.
pub fn vec_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu)).expect("[B]")
}
