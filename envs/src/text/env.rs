//! The text-generation environment: a batch of prompts of the review language; the action is
//! the next token of each row; a row's episode ends at `<eos>` or at the maximum response length.
//! Rows that have ended take `<pad>` from then on, whatever action is given.
//!
//! The env does not score: the score comes from a reward model outside it. [`token_rewards`]
//! does the bookkeeping of R(x, y) = r(x, y) − β log π(y|x)/p(y|x) at token level (Ziegler et
//! al. 2019): every response token pays −β (log π − log p) of its own, the score r is paid at the
//! response's last real token (its `<eos>`, never a padding position), and a response that never
//! reached `<eos>` may pay a penalty instead of nothing. Prompt and padding positions get no
//! reward and are masked out of every loss by [`TextEnv::response_mask`].

use thiserror::Error;

use crate::rng::Stream;

use super::grammar::{Grammar, PROMPT_LEN, Request};
use super::vocab::{EOS, PAD};

/// What the env refuses.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TextEnvError {
    #[error("invalid `{field}`: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error("action {action} of row {row} is outside the vocabulary (ids 0..{size})")]
    InvalidAction {
        row: usize,
        action: u32,
        size: usize,
    },
    #[error("{given} actions for a batch of {batch}")]
    WrongActionCount { given: usize, batch: usize },
    #[error("a step before the first reset: no batch of prompts yet (call reset or reset_with)")]
    NotReset,
    #[error("request {row}'s subject is token id {id}, which is no subject of the vocabulary")]
    NotASubject { row: usize, id: u32 },
}

/// The env's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TextEnvConfig {
    /// Prompts per batch.
    pub batch: usize,
    /// Response tokens at most (`<eos>` included).
    pub max_response: usize,
    /// The model's context: prompt plus response must fit in it.
    pub context: usize,
}

impl TextEnvConfig {
    pub fn validate(&self) -> Result<(), TextEnvError> {
        let bad = |field, message: String| TextEnvError::InvalidField { field, message };
        if self.batch == 0 {
            return Err(bad("batch", "must be at least 1".into()));
        }
        if self.max_response == 0 {
            return Err(bad("max_response", "must be at least 1".into()));
        }
        if PROMPT_LEN
            .checked_add(self.max_response)
            .is_none_or(|needed| needed > self.context)
        {
            return Err(bad(
                "context",
                format!(
                    "{} tokens cannot hold a prompt of {PROMPT_LEN} plus a response of up to {} \
                     (max_response): at least {} needed",
                    self.context,
                    self.max_response,
                    PROMPT_LEN.saturating_add(self.max_response)
                ),
            ));
        }
        Ok(())
    }
}

/// A batch of prompts being answered.
#[derive(Clone, Debug)]
pub struct TextEnv {
    pub grammar: Grammar,
    pub config: TextEnvConfig,
    requests: Vec<Request>,
    prompts: Vec<Vec<u32>>,
    responses: Vec<Vec<u32>>,
    done: Vec<bool>,
}

impl TextEnv {
    pub fn new(config: TextEnvConfig) -> Result<Self, TextEnvError> {
        config.validate()?;
        Ok(Self {
            grammar: Grammar::new(),
            requests: Vec::new(),
            prompts: Vec::new(),
            responses: Vec::new(),
            done: Vec::new(),
            config,
        })
    }

    /// Starts a new batch: `batch` prompts drawn from `rng`, empty responses.
    pub fn reset(&mut self, rng: &mut Stream) {
        self.requests = (0..self.config.batch)
            .map(|_| self.grammar.sample_request(rng))
            .collect();
        self.prompts = self
            .requests
            .iter()
            .map(|r| self.grammar.prompt(*r))
            .collect();
        self.responses = vec![Vec::new(); self.config.batch];
        self.done = vec![false; self.config.batch];
    }

    /// Starts a batch on the given requests (any number of them, at least one: the batch is
    /// theirs, not `config.batch`). A subject that is no subject of the vocabulary is refused
    /// and changes nothing.
    pub fn reset_with(&mut self, requests: &[Request]) -> Result<(), TextEnvError> {
        if requests.is_empty() {
            return Err(TextEnvError::InvalidField {
                field: "requests",
                message: "no requests: a batch needs at least one".into(),
            });
        }
        if let Some((row, r)) = requests.iter().enumerate().find(|(_, r)| {
            self.grammar.vocab.class(r.subject) != Some(super::vocab::Class::Subject)
        }) {
            return Err(TextEnvError::NotASubject { row, id: r.subject });
        }
        self.requests = requests.to_vec();
        self.prompts = requests.iter().map(|r| self.grammar.prompt(*r)).collect();
        self.responses = vec![Vec::new(); requests.len()];
        self.done = vec![false; requests.len()];
        Ok(())
    }

    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    pub fn prompt(&self, row: usize) -> &[u32] {
        &self.prompts[row]
    }

    /// Row `row`'s response so far (real tokens only, `<eos>` included once reached).
    pub fn response(&self, row: usize) -> &[u32] {
        &self.responses[row]
    }

    /// Whether row `row` has ended.
    pub fn is_done(&self, row: usize) -> bool {
        self.done[row]
    }

    /// Whether row `row` ended by reaching `max_response` tokens without `<eos>` (Gymnasium's
    /// `truncated`); a row that ended at `<eos>` is `terminated`.
    pub fn is_truncated(&self, row: usize) -> bool {
        self.done[row] && self.responses[row].last() != Some(&EOS)
    }

    /// Whether every row has ended.
    pub fn all_done(&self) -> bool {
        self.done.iter().all(|d| *d)
    }

    /// Appends one token to every row that has not ended; a row ends at `<eos>` or once its
    /// response is `max_response` tokens long. Actions of ended rows are ignored. An id outside
    /// the vocabulary is an error and changes nothing.
    pub fn step(&mut self, actions: &[u32]) -> Result<(), TextEnvError> {
        if self.responses.is_empty() {
            return Err(TextEnvError::NotReset);
        }
        if actions.len() != self.responses.len() {
            return Err(TextEnvError::WrongActionCount {
                given: actions.len(),
                batch: self.responses.len(),
            });
        }
        let size = self.grammar.vocab.len();
        if let Some(row) =
            (0..actions.len()).find(|&i| !self.done[i] && actions[i] as usize >= size)
        {
            return Err(TextEnvError::InvalidAction {
                row,
                action: actions[row],
                size,
            });
        }
        for (i, &a) in actions.iter().enumerate() {
            if self.done[i] {
                continue;
            }
            self.responses[i].push(a);
            if a == EOS || self.responses[i].len() == self.config.max_response {
                self.done[i] = true;
            }
        }
        Ok(())
    }

    /// Every row as `[prompt, response, <pad>…]`, `PROMPT_LEN + max_response` tokens.
    pub fn tokens(&self) -> Vec<Vec<u32>> {
        let width = PROMPT_LEN + self.config.max_response;
        self.prompts
            .iter()
            .zip(&self.responses)
            .map(|(p, r)| {
                let mut row = p.clone();
                row.extend_from_slice(r);
                row.resize(width, PAD);
                row
            })
            .collect()
    }

    /// `[batch][PROMPT_LEN + max_response]`: true at the response's real tokens (`<eos>`
    /// included), false at the prompt and at padding.
    pub fn response_mask(&self) -> Vec<Vec<bool>> {
        let width = PROMPT_LEN + self.config.max_response;
        self.responses
            .iter()
            .map(|r| {
                (0..width)
                    .map(|j| j >= PROMPT_LEN && j < PROMPT_LEN + r.len())
                    .collect()
            })
            .collect()
    }
}

/// The per-token rewards of one response and what they add up to.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRewards {
    /// One per response token: −β (log π − log p), plus the (penalised) score at the last.
    pub rewards: Vec<f64>,
    /// KL(π‖p) of the sequence, the k1 estimate Σₜ (log π − log p).
    pub kl: f64,
    /// The score paid at the last token (the reward model's, less the missing-`<eos>` penalty).
    pub score: f64,
}

/// R(x, y) = r(x, y) − β log π(y|x)/p(y|x) spread over the tokens of `response`, with the
/// policy's and the reference's log-probabilities of each response token; `score` is paid at
/// the last token, less `missing_eos_penalty` when the response does not end with `<eos>`.
pub fn token_rewards(
    response: &[u32],
    policy_logprobs: &[f64],
    reference_logprobs: &[f64],
    score: f64,
    beta: f64,
    missing_eos_penalty: f64,
) -> TokenRewards {
    assert_eq!(response.len(), policy_logprobs.len(), "one log π per token");
    assert_eq!(
        response.len(),
        reference_logprobs.len(),
        "one log p per token"
    );
    let mut rewards: Vec<f64> = policy_logprobs
        .iter()
        .zip(reference_logprobs)
        .map(|(lp, lr)| -beta * (lp - lr))
        .collect();
    let kl = policy_logprobs
        .iter()
        .zip(reference_logprobs)
        .map(|(lp, lr)| lp - lr)
        .sum();
    let paid = if response.last() == Some(&EOS) {
        score
    } else {
        score - missing_eos_penalty
    };
    if let Some(last) = rewards.last_mut() {
        *last += paid;
    }
    TokenRewards {
        rewards,
        kl,
        score: paid,
    }
}
