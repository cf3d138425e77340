//! The synthetic language of the RLHF work (issue 13, item 1): reviews of a subject in a
//! requested sentiment, over a word-level vocabulary of a few hundred words, with a hidden gold
//! judge, and the text environment. No network: the policy and the reward model are built on it
//! elsewhere.
//!
//! - [`vocab`]: the vocabulary (specials `<pad>`, `<bos>`, `<eos>`, `<sep>`, then the words by
//!   class) and the tokenizer; an unknown word is an error naming it.
//! - [`grammar`]: the seeded probabilistic grammar of prompts and responses (a pretraining
//!   corpus and good demonstrations) and the parser of well-formed responses.
//! - [`env`]: the text-generation env (a batch of prompts, the next token as the action, an end
//!   at `<eos>` or the maximum length, masks of the response) and the token-level bookkeeping
//!   of R = r − β log π/p.
//! - [`judge`]: the gold judge (sentiment as requested, well-formedness, a length preference, a
//!   repetition penalty) and its comparisons through the synthetic human.

pub mod env;
pub mod grammar;
pub mod judge;
pub mod vocab;

pub use env::{TextEnv, TextEnvConfig, TextEnvError, TokenRewards, token_rewards};
pub use grammar::{
    Grammar, LONGEST_CORPUS_RESPONSE, LONGEST_DEMONSTRATION, PROMPT_LEN, Request,
    SHORTEST_DEMONSTRATION, Sentiment, Style,
};
pub use judge::{GoldJudge, Score};
pub use vocab::{BOS, EOS, PAD, SEP, TokenError, Vocabulary};
