//! RLHF on text (Ziegler et al. 2019, Stiennon et al. 2020): the review language's policy is
//! pretrained and fine-tuned, a reward model is fitted to the gold judge's comparisons of its
//! samples, and token-level RL optimises R = r − β log π/p against the frozen SFT reference,
//! while every score is also read by the hidden gold judge.
//!
//! - [`sequences`]: (prompt, response) batches as tensors and what models read from them
//!   (token log-probabilities, true entropies, values, scores).
//! - [`lm`]: pretraining and supervised fine-tuning (next-token loss on grammar text).
//! - [`data`]: preference JSONL (`prompt`, `chosen`, `rejected`; tie and K-way forms).
//! - [`reward`]: labelling with the gold judge, the reward model's fit, normalisation and
//!   held-out accuracy.
//! - [`learner`]: PPO, REINFORCE and A2C at token level.
//! - [`best_of_n`]: best-of-n against the reward model, with its KL estimated from samples.
//! - [`memory`]: the least memory each training stage needs, checked before a run starts.
//! - [`pipeline`]: the stages a run goes through and the files it writes.

pub mod best_of_n;
pub mod data;
pub mod learner;
pub mod lm;
pub mod memory;
pub mod pipeline;
pub mod reward;
pub mod sequences;
