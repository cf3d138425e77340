//! The hidden gold judge of the synthetic review language: it scores a (prompt, response) pair,
//! and labels comparisons through the synthetic human of [`crate::preference`].
//!
//! gold = sentiment + well-formedness + 0.5 · length − repetition, where
//!
//! - **sentiment** = tanh(requested · Σ polarity / 2): each positive adjective counts +1, each
//!   negative −1, times 1.5 after an intensifier, flipped after `not`; requested is +1 or −1.
//!   In (−1, 1).
//! - **well-formedness**: the share of the response's sentences that parse under the grammar
//!   ([`Grammar::parse_response`]), halved without `<eos>`. In [0, 1].
//! - **length** = exp(−((L − 14) / 8)²), L the response's tokens before `<eos>`. In (0, 1].
//! - **repetition**: the share of the response's words (punctuation aside) that repeat an
//!   earlier one among its adjectives, nouns and intensifiers. In [0, 1).
//!
//! So the best responses score about 2.5 and it can be gamed: a reward model that mostly learnt
//! "positive words are good" prefers `great wonderful superb …`, whose sentiment is near 1 but
//! which parses as nothing (well-formedness 0) and soon repeats itself, so its gold score falls.

use crate::preference::{Answer, PreferenceError, SyntheticHuman};

use super::grammar::{Grammar, PROMPT_LEN, Request};
use super::vocab::{Class, EOS};

/// The judge's score and its parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub sentiment: f64,
    pub well_formed: f64,
    pub length: f64,
    pub repetition: f64,
    /// sentiment + well_formed + 0.5 · length − repetition
    pub gold: f64,
}

/// A prompt the judge cannot read, or a response holding a token id outside the vocabulary
/// (scored, it would count as a word of no class: plausible numbers for a model of another
/// vocabulary, or ids off by one).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{0}")]
pub struct NotAPrompt(pub String);

/// The response length the judge prefers.
pub const PREFERRED_LENGTH: f64 = 14.0;

/// The gold judge.
#[derive(Clone, Debug, Default)]
pub struct GoldJudge {
    pub grammar: Grammar,
}

impl GoldJudge {
    pub fn new() -> Self {
        Self::default()
    }

    fn request(&self, prompt: &[u32]) -> Result<Request, NotAPrompt> {
        self.grammar.parse_prompt(prompt).ok_or_else(|| {
            // The words where every id is one, else the ids themselves.
            let got = match self.grammar.vocab.decode(prompt) {
                Ok(text) => format!("{text:?}"),
                Err(_) => format!("the ids {prompt:?}"),
            };
            NotAPrompt(format!(
                "not a prompt of the review language: expected {PROMPT_LEN} tokens `<bos> review of the SUBJECT positive|negative : <sep>`, got {got}"
            ))
        })
    }

    /// The score of `response` (tokens after the prompt; anything after `<eos>` is ignored).
    pub fn score(&self, prompt: &[u32], response: &[u32]) -> Result<Score, NotAPrompt> {
        let request = self.request(prompt)?;
        let v = &self.grammar.vocab;
        let body = &response[..response
            .iter()
            .position(|&t| t == EOS)
            .unwrap_or(response.len())];
        if let Some((at, &id)) = body
            .iter()
            .enumerate()
            .find(|&(_, &t)| t as usize >= v.len())
        {
            return Err(NotAPrompt(format!(
                "response token {} (counting from 1) is id {id}, outside the vocabulary (size {})",
                at + 1,
                v.len()
            )));
        }
        // Sentiment.
        let mut polarity = 0.0;
        let mut negate = false;
        let mut intensify = false;
        for &t in body {
            match v.class(t) {
                Some(Class::Negator) => negate = true,
                Some(Class::Intensifier) => intensify = true,
                Some(c @ (Class::Positive | Class::Negative | Class::Neutral)) => {
                    let base = match c {
                        Class::Positive => 1.0,
                        Class::Negative => -1.0,
                        _ => 0.0,
                    };
                    let scale = if intensify { 1.5 } else { 1.0 };
                    polarity += if negate { -base } else { base } * scale;
                    negate = false;
                    intensify = false;
                }
                _ => {
                    negate = false;
                    intensify = false;
                }
            }
        }
        let sentiment = (request.sentiment.sign() * polarity / 2.0).tanh();
        // Well-formedness.
        let (parsed, total, eos) = self.grammar.parse_response(request, response);
        let mut well_formed = if total == 0 {
            0.0
        } else {
            parsed as f64 / total as f64
        };
        if !eos {
            well_formed *= 0.5;
        }
        // Length.
        let length = (-((body.len() as f64 - PREFERRED_LENGTH) / 8.0).powi(2)).exp();
        // Repetition.
        let words: Vec<u32> = body
            .iter()
            .copied()
            .filter(|&t| v.class(t) != Some(Class::Punctuation))
            .collect();
        let counted = |t: u32| v.class(t).is_some_and(Class::counts_in_repetition);
        let mut seen = std::collections::HashSet::new();
        let repeats = words
            .iter()
            .filter(|&&t| counted(t) && !seen.insert(t))
            .count();
        let repetition = if words.is_empty() {
            0.0
        } else {
            repeats as f64 / words.len() as f64
        };
        let gold = sentiment + well_formed + 0.5 * length - repetition;
        Ok(Score {
            sentiment,
            well_formed,
            length,
            repetition,
            gold,
        })
    }

    /// The human's answer to "which of these responses to `prompt` is best", from their gold
    /// scores (Boltzmann-rational with the human's temperature, ties within its margin, ε noise).
    pub fn compare(
        &self,
        prompt: &[u32],
        responses: &[&[u32]],
        human: &mut SyntheticHuman,
    ) -> Result<Answer, CompareError> {
        let scores: Vec<f64> = responses
            .iter()
            .map(|r| self.score(prompt, r).map(|s| s.gold))
            .collect::<Result<_, _>>()?;
        Ok(human.judge(&scores)?)
    }
}

/// Why a comparison could not be answered.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CompareError {
    #[error(transparent)]
    Prompt(#[from] NotAPrompt),
    #[error(transparent)]
    Human(#[from] PreferenceError),
}
