//! The synthetic human: compares segments by their true returns, as Christiano et al. (2017)
//! simulate a labeller with an oracle that knows the hidden reward, with the imperfections a
//! real one has.
//!
//! # The model
//!
//! A query shows K ≥ 2 segments (K = 2: a pairwise comparison). Each segment's return is
//! `R = Σ_t γ^t r_t` over its true rewards (γ = 1, the default, is the plain sum; γ < 1 is a
//! myopic labeller who weighs the start of a segment more). The answer is one of K + 1:
//! "segment j is best" (μ one-hot at j) or "a tie" (μ uniform, (½, ½) for a pair).
//!
//! 1. **Noise.** With probability ε the answer is drawn uniformly at random, ignoring the
//!    segments. Christiano et al. assume "a 10% chance that the human responds uniformly at
//!    random"; in their model that response is a coin flip between the two segments (their
//!    P̂ = 0.9·σ(R̂¹ − R̂²) + 0.05), so here the random answer is, by default, uniform over the
//!    K strict preferences ([`RandomAnswer::Preference`]): a reward model fitted with their
//!    10% assumption then has exactly the oracle's answer distribution. [`RandomAnswer::Any`]
//!    makes it uniform over all K + 1 answers, the tie included.
//! 2. **Ties.** Otherwise, if every return is within the margin of every other
//!    (max R − min R ≤ margin; for a pair |R¹ − R²| ≤ margin), the answer is a tie. With the
//!    default margin 0 that is exactly equal returns.
//! 3. **Boltzmann rationality.** Otherwise segment j is chosen with probability
//!    softmax(R / T)_j; for a pair, p(σ¹ ≻ σ²) = σ((R¹ − R²)/T), the Bradley–Terry model the
//!    reward model assumes. T = 0 is the limit T → 0: a perfect oracle that picks the highest
//!    return (uniformly among segments that share it exactly, which for a pair cannot happen
//!    outside a tie).
//!
//! Every answer records the probability of that answer under the whole model, noise included:
//! `(1 − ε)·q(answer) + ε·u(answer)`, q from steps 2–3 and u the uniform noise distribution
//! (for `labels.csv`). [`SyntheticHuman::answer_probabilities`] gives the whole distribution.
//!
//! # Randomness
//!
//! The oracle owns the stream the caller hands it (e.g. `rng::stream(seed, "oracle", 0)`) and
//! draws exactly two uniforms per query, whatever the settings and the answer: the position of
//! the stream after n queries depends on n only. The same stream gives the same answers.

use super::PreferenceError;
use super::segments::Segment;
use crate::rng::{Stream, uniform01};

/// What the ε-random answer is drawn from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum RandomAnswer {
    /// Uniform over the K strict preferences (a coin flip for a pair), as Christiano et al.'s
    /// "responds uniformly at random" model.
    #[default]
    Preference,
    /// Uniform over the K strict preferences and the tie.
    Any,
}

/// The oracle's settings. `Default` is a perfect oracle: T = 0, no margin, no noise, γ = 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OracleConfig {
    /// Boltzmann temperature T ≥ 0 (0 = always the higher return).
    pub temperature: f64,
    /// Returns this close (≤) are a tie; ≥ 0.
    pub margin: f64,
    /// Probability ε ∈ [0, 1] of a uniformly random answer.
    pub epsilon: f64,
    /// Myopic discount γ ∈ (0, 1] within a segment (1 = the plain sum).
    pub discount: f64,
    pub random_answer: RandomAnswer,
}

impl Default for OracleConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            margin: 0.0,
            epsilon: 0.0,
            discount: 1.0,
            random_answer: RandomAnswer::Preference,
        }
    }
}

fn invalid(field: &'static str, message: String) -> PreferenceError {
    PreferenceError::InvalidField { field, message }
}

impl OracleConfig {
    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), PreferenceError> {
        let Self {
            temperature: t,
            margin: m,
            epsilon: e,
            discount: g,
            ..
        } = *self;
        if !(t.is_finite() && t >= 0.0) {
            return Err(invalid(
                "temperature",
                format!("must be a finite number ≥ 0 (0 = a perfect oracle), got {t}"),
            ));
        }
        if !(m.is_finite() && m >= 0.0) {
            return Err(invalid(
                "margin",
                format!("must be a finite number ≥ 0, got {m}"),
            ));
        }
        if !(0.0..=1.0).contains(&e) {
            return Err(invalid(
                "epsilon",
                format!("must be a probability in [0, 1], got {e}"),
            ));
        }
        if !(g > 0.0 && g <= 1.0) {
            return Err(invalid(
                "discount",
                format!("must be in (0, 1] (1 = no discount), got {g}"),
            ));
        }
        Ok(())
    }
}

/// The oracle's distribution over the answers to one query.
#[derive(Clone, Debug, PartialEq)]
pub struct AnswerProbabilities {
    /// `[K]`: probability that segment j is answered best.
    pub choices: Vec<f64>,
    /// Probability of a tie.
    pub tie: f64,
}

impl AnswerProbabilities {
    /// The probability of `choice` (`None` = a tie).
    pub fn of(&self, choice: Option<usize>) -> f64 {
        choice.map_or(self.tie, |j| self.choices[j])
    }
}

/// One answer of the oracle.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The segment answered best; `None` for a tie.
    pub choice: Option<usize>,
    /// μ, one weight per segment summing to 1: one-hot at `choice`, or uniform for a tie
    /// ((1, 0), (0, 1) or (½, ½) for a pair).
    pub mu: Vec<f64>,
    /// The probability of this answer under the oracle's model, noise included.
    pub probability: f64,
    /// The (discounted) true returns the oracle compared, one per segment.
    pub returns: Vec<f64>,
    /// The answer came from the ε-random branch.
    pub random: bool,
}

/// The synthetic human. See the [module docs](self) for the model.
#[derive(Clone, Debug)]
pub struct SyntheticHuman {
    config: OracleConfig,
    stream: Stream,
}

impl SyntheticHuman {
    /// An oracle with `config` (validated), drawing from `stream`.
    pub fn new(config: OracleConfig, stream: Stream) -> Result<Self, PreferenceError> {
        config.validate()?;
        Ok(Self { config, stream })
    }

    pub fn config(&self) -> &OracleConfig {
        &self.config
    }

    /// Whether segments of these (discounted) returns tie under the model: every return
    /// within the margin of every other (max R − min R ≤ margin).
    pub fn within_margin(&self, returns: &[f64]) -> bool {
        let max = returns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = returns.iter().copied().fold(f64::INFINITY, f64::min);
        max - min <= self.config.margin
    }

    /// `Σ_t γ^t r_t` over a segment's rewards.
    pub fn segment_return(&self, rewards: &[f64]) -> f64 {
        let gamma = self.config.discount;
        if gamma == 1.0 {
            return rewards.iter().sum();
        }
        let mut weight = 1.0;
        let mut total = 0.0;
        for r in rewards {
            total += weight * r;
            weight *= gamma;
        }
        total
    }

    /// The distribution of the answer to a query whose segments have these (discounted)
    /// returns, noise included.
    pub fn answer_probabilities(
        &self,
        returns: &[f64],
    ) -> Result<AnswerProbabilities, PreferenceError> {
        check_returns(returns)?;
        let model = self.model(returns);
        let noise = self.noise(returns.len());
        let eps = self.config.epsilon;
        let mix = |q: f64, u: f64| (1.0 - eps) * q + eps * u;
        Ok(AnswerProbabilities {
            choices: model
                .choices
                .iter()
                .zip(&noise.choices)
                .map(|(&q, &u)| mix(q, u))
                .collect(),
            tie: mix(model.tie, noise.tie),
        })
    }

    /// A pairwise comparison of two segments given by their true rewards.
    pub fn compare(&mut self, first: &[f64], second: &[f64]) -> Result<Answer, PreferenceError> {
        let returns = [self.segment_return(first), self.segment_return(second)];
        self.judge(&returns)
    }

    /// A pairwise comparison of two segments.
    pub fn compare_segments(
        &mut self,
        first: &Segment,
        second: &Segment,
    ) -> Result<Answer, PreferenceError> {
        self.compare(
            first.true_rewards.as_slice().expect("contiguous"),
            second.true_rewards.as_slice().expect("contiguous"),
        )
    }

    /// A K-way query: which of these segments (given by their true rewards) is best.
    pub fn choose(&mut self, segments: &[&[f64]]) -> Result<Answer, PreferenceError> {
        let returns: Vec<f64> = segments.iter().map(|r| self.segment_return(r)).collect();
        self.judge(&returns)
    }

    /// A K-way query over segments.
    pub fn choose_segments(&mut self, segments: &[&Segment]) -> Result<Answer, PreferenceError> {
        let rewards: Vec<&[f64]> = segments
            .iter()
            .map(|s| s.true_rewards.as_slice().expect("contiguous"))
            .collect();
        self.choose(&rewards)
    }

    /// Answers a query whose segments have these (already discounted) returns; K =
    /// `returns.len()` ≥ 2.
    pub fn judge(&mut self, returns: &[f64]) -> Result<Answer, PreferenceError> {
        check_returns(returns)?;
        let k = returns.len();
        // Exactly two draws per query (see the module docs).
        let u_noise = uniform01(&mut self.stream);
        let u_pick = uniform01(&mut self.stream);
        let random = u_noise < self.config.epsilon;
        let noise = self.noise(k);
        let model = self.model(returns);
        let choice = pick(if random { &noise } else { &model }, u_pick);
        let eps = self.config.epsilon;
        let probability = (1.0 - eps) * model.of(choice) + eps * noise.of(choice);
        let mu = match choice {
            Some(j) => (0..k).map(|i| if i == j { 1.0 } else { 0.0 }).collect(),
            None => vec![1.0 / k as f64; k],
        };
        Ok(Answer {
            choice,
            mu,
            probability,
            returns: returns.to_vec(),
            random,
        })
    }

    /// The ε-random branch's distribution.
    fn noise(&self, k: usize) -> AnswerProbabilities {
        match self.config.random_answer {
            RandomAnswer::Preference => AnswerProbabilities {
                choices: vec![1.0 / k as f64; k],
                tie: 0.0,
            },
            RandomAnswer::Any => AnswerProbabilities {
                choices: vec![1.0 / (k + 1) as f64; k],
                tie: 1.0 / (k + 1) as f64,
            },
        }
    }

    /// The noise-free distribution: a tie within the margin, else softmax(R / T), or the
    /// maxima for T = 0.
    fn model(&self, returns: &[f64]) -> AnswerProbabilities {
        let k = returns.len();
        if self.within_margin(returns) {
            return AnswerProbabilities {
                choices: vec![0.0; k],
                tie: 1.0,
            };
        }
        let max = returns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let t = self.config.temperature;
        let weights: Vec<f64> = if t == 0.0 {
            returns.iter().map(|&r| (r == max) as u8 as f64).collect()
        } else {
            // Shifted by the maximum, so no exponent overflows.
            returns.iter().map(|&r| ((r - max) / t).exp()).collect()
        };
        let total: f64 = weights.iter().sum();
        AnswerProbabilities {
            choices: weights.iter().map(|w| w / total).collect(),
            tie: 0.0,
        }
    }
}

fn check_returns(returns: &[f64]) -> Result<(), PreferenceError> {
    if returns.len() < 2 {
        return Err(invalid(
            "num_segments",
            format!("a query compares K ≥ 2 segments, got K = {}", returns.len()),
        ));
    }
    match returns.iter().position(|r| !r.is_finite()) {
        Some(index) => Err(PreferenceError::NonFiniteReturn {
            index,
            value: returns[index],
        }),
        None => Ok(()),
    }
}

/// Inverse-CDF draw over the answers `choices[0..K]`, then the tie, with `u` uniform in [0, 1).
/// Rounding can leave the cumulative sum a hair below 1: then the last answer of positive
/// probability is taken.
fn pick(p: &AnswerProbabilities, u: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    let mut last = None;
    for (j, &q) in p.choices.iter().enumerate() {
        if q > 0.0 {
            cumulative += q;
            last = Some(Some(j));
            if u < cumulative {
                return Some(j);
            }
        }
    }
    if p.tie > 0.0 {
        return None;
    }
    last.expect("a distribution has an answer of positive probability")
}
