//! The synthetic review language: a seeded probabilistic grammar of prompts and responses, and
//! the parser that says whether a response is well formed.
//!
//! **Prompt** (always 8 tokens): `<bos> review of the SUBJECT SENTIMENT : <sep>`, SENTIMENT
//! `positive` or `negative`, e.g. `<bos> review of the film positive : <sep>`.
//!
//! **Response**: one or more sentences, then `<eos>`:
//!
//! ```text
//! sentence  → [OPENER ,] DET NOUN VERB adjphrase [[,] CONJ adjphrase] .
//! NOUN      → the prompt's SUBJECT | ASPECT
//! adjphrase → [not] [INTENSIFIER] ADJECTIVE          (positive, negative or neutral)
//! ```
//!
//! A response is well formed when every sentence parses, a subject it names is the prompt's,
//! and it ends with `<eos>`. The grammar's corpus (pretraining) mixes sentiments freely; the
//! demonstrations (supervised fine-tuning) follow the requested sentiment in 1–2 sentences.

use crate::rng::{Stream, uniform01};

use super::vocab::{BOS, Class, EOS, SEP, Vocabulary};

/// The two sentiments a prompt may request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sentiment {
    Positive,
    Negative,
}

impl Sentiment {
    /// +1 or −1.
    pub fn sign(self) -> f64 {
        match self {
            Sentiment::Positive => 1.0,
            Sentiment::Negative => -1.0,
        }
    }
}

/// Tokens of every prompt.
pub const PROMPT_LEN: usize = 8;

/// Tokens of the shortest demonstration (`Style::Demonstration`), `<eos>` included: one
/// sentence of determiner, subject or aspect, verb, adjective and `.`. Supervised fine-tuning
/// keeps the demonstrations that fit in `rl.max_response`, so a smaller bound leaves it none.
pub const SHORTEST_DEMONSTRATION: usize = 6;

/// The longest sentence of a demonstration: an opener and `,`, determiner, subject or aspect,
/// verb, an intensified adjective, `,` and a conjunction, another intensified adjective, `.`.
/// The corpus's may also negate each adjective (`not`): two tokens more.
const LONGEST_SENTENCE: usize = 12;
/// The longest demonstration: two of the longest sentences and `<eos>`.
pub const LONGEST_DEMONSTRATION: usize = 2 * LONGEST_SENTENCE + 1;
/// The longest pretraining-corpus response: three of the corpus's longest sentences and
/// `<eos>`.
pub const LONGEST_CORPUS_RESPONSE: usize = 3 * (LONGEST_SENTENCE + 2) + 1;

/// What a prompt asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub subject: u32,
    pub sentiment: Sentiment,
}

/// How responses are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// The pretraining corpus: 1–3 sentences, each of a random sentiment.
    Corpus,
    /// Good demonstrations for fine-tuning: 1–2 sentences in the requested sentiment, no
    /// adjective, noun or intensifier twice.
    Demonstration,
}

fn below(rng: &mut Stream, n: usize) -> usize {
    ((uniform01(rng) * n as f64) as usize).min(n - 1)
}

fn pick(rng: &mut Stream, ids: &[u32]) -> u32 {
    ids[below(rng, ids.len())]
}

/// The grammar over a [`Vocabulary`].
#[derive(Clone, Debug)]
pub struct Grammar {
    pub vocab: Vocabulary,
    subjects: Vec<u32>,
    aspects: Vec<u32>,
    positive: Vec<u32>,
    negative: Vec<u32>,
    neutral: Vec<u32>,
    intensifiers: Vec<u32>,
    determiners: Vec<u32>,
    verbs: Vec<u32>,
    conjunctions: Vec<u32>,
    openers: Vec<u32>,
}

impl Default for Grammar {
    fn default() -> Self {
        Self::new()
    }
}

impl Grammar {
    pub fn new() -> Self {
        let vocab = Vocabulary::new();
        let of = |c| vocab.of_class(c);
        Self {
            subjects: of(Class::Subject),
            aspects: of(Class::Aspect),
            positive: of(Class::Positive),
            negative: of(Class::Negative),
            neutral: of(Class::Neutral),
            intensifiers: of(Class::Intensifier),
            determiners: of(Class::Determiner),
            verbs: of(Class::Verb),
            conjunctions: of(Class::Conjunction),
            openers: of(Class::Opener),
            vocab,
        }
    }

    /// The prompt of `request`.
    pub fn prompt(&self, request: Request) -> Vec<u32> {
        let v = &self.vocab;
        let sentiment = match request.sentiment {
            Sentiment::Positive => v.must("positive"),
            Sentiment::Negative => v.must("negative"),
        };
        vec![
            BOS,
            v.must("review"),
            v.must("of"),
            v.must("the"),
            request.subject,
            sentiment,
            v.must(":"),
            SEP,
        ]
    }

    /// What `prompt` asks for, if it is a prompt of this language.
    pub fn parse_prompt(&self, prompt: &[u32]) -> Option<Request> {
        let v = &self.vocab;
        if prompt.len() != PROMPT_LEN
            || prompt[0] != BOS
            || prompt[1..4] != [v.must("review"), v.must("of"), v.must("the")]
            || v.class(prompt[4]) != Some(Class::Subject)
            || prompt[6] != v.must(":")
            || prompt[7] != SEP
        {
            return None;
        }
        let sentiment = if prompt[5] == v.must("positive") {
            Sentiment::Positive
        } else if prompt[5] == v.must("negative") {
            Sentiment::Negative
        } else {
            return None;
        };
        Some(Request {
            subject: prompt[4],
            sentiment,
        })
    }

    /// A uniformly random request.
    pub fn sample_request(&self, rng: &mut Stream) -> Request {
        Request {
            subject: pick(rng, &self.subjects),
            sentiment: if uniform01(rng) < 0.5 {
                Sentiment::Positive
            } else {
                Sentiment::Negative
            },
        }
    }

    fn adjective(&self, sentiment: Option<Sentiment>, rng: &mut Stream) -> u32 {
        match sentiment {
            Some(Sentiment::Positive) => pick(rng, &self.positive),
            Some(Sentiment::Negative) => pick(rng, &self.negative),
            None => pick(rng, &self.neutral),
        }
    }

    /// One sentence about `request` in `sentiment` (None: a random one), appended to `out`.
    fn sentence(
        &self,
        request: Request,
        sentiment: Sentiment,
        corpus: bool,
        rng: &mut Stream,
        out: &mut Vec<u32>,
    ) {
        let v = &self.vocab;
        if uniform01(rng) < 0.25 {
            out.push(pick(rng, &self.openers));
            out.push(v.must(","));
        }
        out.push(pick(rng, &self.determiners));
        out.push(if uniform01(rng) < 0.4 {
            request.subject
        } else {
            pick(rng, &self.aspects)
        });
        out.push(pick(rng, &self.verbs));
        // In the corpus an adjective phrase may be negated ("not good" is negative) or neutral.
        let phrase = |rng: &mut Stream, out: &mut Vec<u32>| {
            let u = uniform01(rng);
            let (negate, adjective) = if corpus && u < 0.1 {
                let flipped = match sentiment {
                    Sentiment::Positive => Sentiment::Negative,
                    Sentiment::Negative => Sentiment::Positive,
                };
                (true, self.adjective(Some(flipped), rng))
            } else if corpus && u < 0.2 {
                (false, self.adjective(None, rng))
            } else {
                (false, self.adjective(Some(sentiment), rng))
            };
            if negate {
                out.push(v.must("not"));
            }
            if uniform01(rng) < 0.3 {
                out.push(pick(rng, &self.intensifiers));
            }
            out.push(adjective);
        };
        phrase(rng, out);
        if uniform01(rng) < 0.4 {
            if uniform01(rng) < 0.3 {
                out.push(v.must(","));
            }
            out.push(pick(rng, &self.conjunctions));
            phrase(rng, out);
        }
        out.push(v.must("."));
    }

    /// A response to `request` in `style`, ending with `<eos>`.
    pub fn sample_response(&self, request: Request, style: Style, rng: &mut Stream) -> Vec<u32> {
        let mut out = Vec::new();
        match style {
            Style::Corpus => {
                let n = 1 + below(rng, 3);
                for _ in 0..n {
                    let s = if uniform01(rng) < 0.5 {
                        Sentiment::Positive
                    } else {
                        Sentiment::Negative
                    };
                    self.sentence(request, s, true, rng, &mut out);
                }
            }
            Style::Demonstration => {
                // Redraw until no adjective, noun or intensifier repeats (the judge penalises
                // repetition).
                loop {
                    out.clear();
                    let n = 1 + below(rng, 2);
                    for _ in 0..n {
                        self.sentence(request, request.sentiment, false, rng, &mut out);
                    }
                    let counted: Vec<u32> = out
                        .iter()
                        .copied()
                        .filter(|&t| self.vocab.class(t).is_some_and(Class::counts_in_repetition))
                        .collect();
                    let mut unique = counted.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    if unique.len() == counted.len() {
                        break;
                    }
                }
            }
        }
        out.push(EOS);
        out
    }

    /// Whether `sentence` (without its final `.`) parses.
    fn parses(&self, request: Request, sentence: &[u32]) -> bool {
        let v = &self.vocab;
        let class = |i: usize| sentence.get(i).and_then(|&t| v.class(t));
        let mut i = 0;
        if class(0) == Some(Class::Opener) {
            if sentence.get(1) != Some(&v.must(",")) {
                return false;
            }
            i = 2;
        }
        if class(i) != Some(Class::Determiner) {
            return false;
        }
        i += 1;
        match class(i) {
            Some(Class::Aspect) => {}
            Some(Class::Subject) if sentence[i] == request.subject => {}
            _ => return false,
        }
        i += 1;
        if class(i) != Some(Class::Verb) {
            return false;
        }
        i += 1;
        let phrase = |i: &mut usize| -> bool {
            if class(*i) == Some(Class::Negator) {
                *i += 1;
            }
            if class(*i) == Some(Class::Intensifier) {
                *i += 1;
            }
            if matches!(
                class(*i),
                Some(Class::Positive | Class::Negative | Class::Neutral)
            ) {
                *i += 1;
                true
            } else {
                false
            }
        };
        if !phrase(&mut i) {
            return false;
        }
        if i == sentence.len() {
            return true;
        }
        if sentence[i] == v.must(",") {
            i += 1;
        }
        if class(i) != Some(Class::Conjunction) {
            return false;
        }
        i += 1;
        phrase(&mut i) && i == sentence.len()
    }

    /// The sentences of `response` (split at `.`; what follows the last `.` is a sentence
    /// too, if anything does) and how many of them parse; `<eos>` and what follows it are not
    /// part of the response. Returns (parsed, sentences, ends with `<eos>`).
    pub fn parse_response(&self, request: Request, response: &[u32]) -> (usize, usize, bool) {
        let end = response.iter().position(|&t| t == EOS);
        let body = &response[..end.unwrap_or(response.len())];
        let dot = self.vocab.must(".");
        let dots = body.iter().filter(|&&t| t == dot).count();
        let mut parsed = 0;
        let mut total = 0;
        for (k, sentence) in body.split(|&t| t == dot).enumerate() {
            let is_last = k == dots;
            if is_last && sentence.is_empty() {
                continue;
            }
            total += 1;
            // A trailing fragment without its `.` does not parse.
            if !is_last && self.parses(request, sentence) {
                parsed += 1;
            }
        }
        (parsed, total, end.is_some())
    }

    /// Whether `response` is well formed for `request`.
    pub fn well_formed(&self, request: Request, response: &[u32]) -> bool {
        let (parsed, total, eos) = self.parse_response(request, response);
        eos && total > 0 && parsed == total
    }
}
