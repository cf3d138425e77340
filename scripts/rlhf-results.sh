#!/usr/bin/env bash
# Retrains the RLHF over-optimisation study of results/rlhf into OUT (default out/rlhf-study):
# one SFT model; reward models fitted on 2,000 and 10,000 comparisons; best-of-n (n = 1…64)
# and PPO at four β (0, 0.01, 0.03, 0.1) against each, with seeds 1, 2 and 3; then its report
# and plots. About 14 minutes on 2 cores.  Usage: scripts/rlhf-results.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/rlhf-study}
G=./target/release/gradgym
CFG=configs/rlhf/demo.toml
mkdir -p "$OUT"
n=0
# stage DIR ARGS...: `gradgym rlhf ARGS` into $OUT/DIR, said first (the runs themselves are quiet).
stage() {
  n=$((n + 1))
  echo "rlhf-results: [$n/29] $OUT/$1" >&2
  local dir=$1
  shift
  "$G" rlhf "$@" --out "$OUT/$dir" --overwrite --quiet
}
stage sft sft --config "$CFG"
for L in 2000 10000; do
  stage "rm-labels$L" rm --config "$CFG" --sft "$OUT/sft" --set labels.comparisons=$L
  stage "bon-labels$L" bon --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels$L"
  for B in 0 0.01 0.03 0.1; do
    stage "ppo-beta$B-labels$L" rl --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels$L" \
      --set rl.beta=$B --set rl.updates=100 --set eval.every=5
  done
done
for S in 2 3; do
  for L in 2000 10000; do
    for B in 0 0.01 0.03 0.1; do
      stage "ppo-beta$B-labels$L-seed$S" rl --config "$CFG" --sft "$OUT/sft" \
        --rm "$OUT/rm-labels$L" --seed $S --set rl.beta=$B --set rl.updates=100 --set eval.every=5
    done
  done
done
"$G" report "$OUT"
"$G" plot "$OUT"
