//! Best-of-n against the reward model, the non-RL baseline: for each evaluation prompt, N
//! samples of the SFT reference are scored by the reward model (proxy) and the gold judge, and
//! for every n ≤ N the estimates of [`gradgym_algorithms::best_of_n`] give best-of-n's expected
//! proxy and gold scores (unbiased: the U-statistic over the N samples) and its KL from the
//! reference (the plug-in estimate, beside the `log n − (n−1)/n` bound it stays below).

use anyhow::Result;
use gradgym_algorithms::best_of_n::{empirical_weights, kl_bound, unbiased_weights};
use gradgym_envs::rng::Stream;
use gradgym_envs::text::GoldJudge;

use super::reward::{sample, score_all};
use crate::nn::gpt::Gpt;

/// One n of best-of-n, averaged over prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct BonPoint {
    pub n: usize,
    pub proxy: f64,
    pub gold: f64,
    /// Half-width of the 95% interval of `gold` over prompts (1.96 standard errors).
    pub gold_ci: f64,
    /// The plug-in estimate of KL(π_bon‖p), nats per sequence.
    pub kl: f64,
    pub kl_bound: f64,
}

/// A chosen response, for the side-by-side samples.
#[derive(Clone, Debug, PartialEq)]
pub struct BonSample {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    pub proxy: f64,
    pub gold: f64,
}

/// Best-of-n for every n in `ns`, from `per_prompt` reference samples for each of `prompts`.
/// Also returns, for each prompt, the literal best of the first `show_n` samples.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    sft: &Gpt,
    reward_model: &Gpt,
    judge: &GoldJudge,
    prompts: &[Vec<u32>],
    per_prompt: usize,
    ns: &[usize],
    max_response: usize,
    show_n: usize,
    rng: &mut Stream,
    interrupt: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(Vec<BonPoint>, Vec<BonSample>)> {
    let repeated: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), per_prompt))
        .collect();
    let generated = sample(sft, &repeated, max_response, rng, interrupt)
        .map_err(|e| e.context("best-of-n: sampling from the SFT model"))?;
    let p: Vec<&[u32]> = repeated.iter().map(|p| p.as_slice()).collect();
    let r: Vec<&[u32]> = generated.iter().map(|g| g.tokens.as_slice()).collect();
    let mut proxy = score_all(reward_model, &p, &r);
    same_response_same_score(&r, per_prompt, &mut proxy);
    let gold: Vec<f64> = p
        .iter()
        .zip(&r)
        .map(|(p, r)| judge.score(p, r).map(|s| s.gold))
        .collect::<Result<_, _>>()?;
    let mut points = Vec::new();
    for &n in ns {
        let (mut sp, mut sk) = (0.0, 0.0);
        let mut golds = Vec::with_capacity(prompts.len());
        for i in 0..prompts.len() {
            let range = i * per_prompt..(i + 1) * per_prompt;
            let (_, kl) = empirical_weights(&proxy[range.clone()], n);
            let w = unbiased_weights(&proxy[range.clone()], n);
            sp += w
                .iter()
                .zip(&proxy[range.clone()])
                .map(|(a, b)| a * b)
                .sum::<f64>();
            golds.push(w.iter().zip(&gold[range]).map(|(a, b)| a * b).sum::<f64>());
            sk += kl;
        }
        let m = prompts.len() as f64;
        let (mean, ci) = mean_ci(&golds);
        points.push(BonPoint {
            n,
            proxy: sp / m,
            gold: mean,
            gold_ci: ci,
            kl: sk / m,
            kl_bound: kl_bound(n),
        });
    }
    let show_n = show_n.clamp(1, per_prompt);
    let samples = (0..prompts.len())
        .map(|i| {
            let base = i * per_prompt;
            let best = (base..base + show_n)
                .max_by(|&a, &b| proxy[a].total_cmp(&proxy[b]))
                .unwrap();
            BonSample {
                prompt: prompts[i].clone(),
                response: generated[best].tokens.clone(),
                proxy: proxy[best],
                gold: gold[best],
            }
        })
        .collect();
    Ok((points, samples))
}

/// Gives every repeat of a response, within each prompt's `per_prompt` samples, the score of
/// its first draw. The plug-in estimate merges samples by equal score, so that a response drawn
/// twice is one atom of mass 2/N; a repeat scored in another batch can differ in its last bits,
/// and would count as two atoms and overstate the KL.
pub fn same_response_same_score(responses: &[&[u32]], per_prompt: usize, scores: &mut [f64]) {
    for (group, s) in responses
        .chunks(per_prompt)
        .zip(scores.chunks_mut(per_prompt))
    {
        let mut first: std::collections::HashMap<&[u32], f64> = Default::default();
        for (r, x) in group.iter().zip(s.iter_mut()) {
            *x = *first.entry(r).or_insert(*x);
        }
    }
}

/// Mean and the half-width of its 95% normal interval: 1.96 standard errors; NaN for one
/// value, which gives no interval (written as an empty cell in CSV, `null` in JSON). The normal quantile
/// suits the hundreds of prompts an evaluation draws; with few it is too narrow (Student's t
/// gives 2.26 at 10 values, 2.05 at 30).
pub fn mean_ci(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradgym_algorithms::best_of_n::empirical_weights;

    #[test]
    fn one_value_has_no_interval() {
        let (m, ci) = mean_ci(&[2.5]);
        assert_eq!(m, 2.5);
        assert!(ci.is_nan());
        let (m, ci) = mean_ci(&[1.0, 3.0]);
        assert_eq!(m, 2.0);
        // s = √2, so 1.96 · √2 / √2.
        assert!((ci - 1.96).abs() < 1e-12, "{ci}");
    }

    #[test]
    fn a_repeated_response_is_one_atom_whatever_its_last_bits() {
        // Prompt 1: responses a, b, a (the second a scored a hair higher); prompt 2: c, d, e.
        let (a, b, c, d, e) = ([5u32, 2], [6u32, 2], [7u32, 2], [8u32, 2], [9u32, 2]);
        let responses: Vec<&[u32]> = vec![&a, &b, &a, &c, &d, &e];
        let raw = [1.0, 0.5, 1.0 + 1e-12, 0.1, 0.2, 0.3];
        let mut scores = raw;
        same_response_same_score(&responses, 3, &mut scores);
        assert_eq!(scores, [1.0, 0.5, 1.0, 0.1, 0.2, 0.3]);
        // Merged: best-of-2 over {a: 2/3, b: 1/3} picks b only when both draws are b.
        let (w, kl) = empirical_weights(&scores[..3], 2);
        assert!((w[1] - 1.0 / 9.0).abs() < 1e-12);
        let exact = (8.0 / 9.0) * ((8.0 / 9.0) / (2.0 / 3.0f64)).ln()
            + (1.0 / 9.0) * ((1.0 / 9.0) / (1.0 / 3.0f64)).ln();
        assert!((kl - exact).abs() < 1e-12, "{kl} vs {exact}");
        // Unmerged, the same samples overstate it.
        assert!(empirical_weights(&raw[..3], 2).1 > kl + 1e-3);
    }
}
