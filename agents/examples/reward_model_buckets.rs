//! How a text reward model's held-out accuracy depends on how far apart the gold scores are.
//!
//! ```text
//! cargo run --release -p gradgym-agents --example reward_model_buckets -- RUN_DIR
//! ```
//!
//! RUN_DIR is a `gradgym rlhf` or `gradgym rlhf rm` run folder (it reads reward_model/ and
//! held_out.jsonl). Prints, for bins of |gold(y₁) − gold(y₂)|, how many held-out pairs fall in
//! the bin and the share the reward model orders as the gold judge does.

use std::path::PathBuf;

use gradgym_agents::nn::gpt::Gpt;
use gradgym_agents::rlhf::data::read_jsonl;
use gradgym_agents::rlhf::reward::score_all;
use gradgym_envs::text::GoldJudge;
use tch::Device;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).expect("RUN_DIR"));
    let rm = Gpt::load(&dir.join("reward_model"), Device::Cpu)?;
    let judge = GoldJudge::new();
    let held = read_jsonl(
        &dir.join("held_out.jsonl"),
        &judge.grammar,
        rm.config.context - 8,
    )?;
    let edges = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, f64::INFINITY];
    let mut hits = vec![(0usize, 0usize); edges.len() - 1];
    for c in &held {
        let p: Vec<&[u32]> = c.responses.iter().map(|_| c.prompt.as_slice()).collect();
        let r: Vec<&[u32]> = c.responses.iter().map(|r| r.as_slice()).collect();
        let s = score_all(&rm, &p, &r);
        let g: Vec<f64> = r
            .iter()
            .map(|r| judge.score(&c.prompt, r).unwrap().gold)
            .collect();
        for i in 0..r.len() {
            for j in i + 1..r.len() {
                let d = (g[i] - g[j]).abs();
                let b = edges
                    .windows(2)
                    .position(|w| d >= w[0] && d < w[1])
                    .unwrap();
                hits[b].1 += 1;
                hits[b].0 += usize::from((g[i] > g[j]) == (s[i] > s[j]));
            }
        }
    }
    println!("|Δgold| bin      pairs  agreement");
    for (w, (h, n)) in edges.windows(2).zip(hits) {
        println!(
            "[{:.2}, {:.2})  {n:>7}  {:>8.1}%",
            w[0],
            w[1],
            if n == 0 {
                f64::NAN
            } else {
                100.0 * h as f64 / n as f64
            }
        );
    }
    Ok(())
}
