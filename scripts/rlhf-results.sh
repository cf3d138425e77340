#!/usr/bin/env bash
# Retrains the RLHF over-optimisation study of results/rlhf into OUT (default out/rlhf-study):
# one SFT model; reward models fitted on 2,000 and 10,000 comparisons; best-of-n (n = 1…64)
# and PPO at four β (0, 0.01, 0.03, 0.1) against each (seed 1); PPO at β = 0 and the demo's
# β = 0.1 on the 10,000-comparison reward model again with seeds 2 and 3; then its report and
# plots. About 7.5 minutes on 2 cores.  Usage: scripts/rlhf-results.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/rlhf-study}
G=./target/release/gradgym
CFG=configs/rlhf/demo.toml
mkdir -p "$OUT"
"$G" rlhf sft --config "$CFG" --out "$OUT/sft" --overwrite --quiet
for L in 2000 10000; do
  "$G" rlhf rm --config "$CFG" --sft "$OUT/sft" --set labels.comparisons=$L \
    --out "$OUT/rm-labels$L" --overwrite --quiet
  "$G" rlhf bon --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels$L" \
    --out "$OUT/bon-labels$L" --overwrite --quiet
  for B in 0 0.01 0.03 0.1; do
    "$G" rlhf rl --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels$L" \
      --set rl.beta=$B --set rl.updates=100 --set eval.every=5 \
      --out "$OUT/ppo-beta$B-labels$L" --overwrite --quiet
  done
done
for S in 2 3; do
  for B in 0 0.1; do
    "$G" rlhf rl --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels10000" --seed $S \
      --set rl.beta=$B --set rl.updates=100 --set eval.every=5 \
      --out "$OUT/ppo-beta$B-labels10000-seed$S" --overwrite --quiet
  done
done
"$G" report "$OUT"
"$G" plot "$OUT"
