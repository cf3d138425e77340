#!/usr/bin/env bash
# Retrains the RLHF over-optimisation study into OUT (default out/rlhf-study), the whole
# pipeline with seed SEED (default 1): one SFT model; reward models fitted on 2,000 and 10,000
# comparisons; best-of-n (n = 1…64) and PPO at four β (0, 0.01, 0.03, 0.1) against each; then
# its report and plots. With seed 1 (results/rlhf) PPO also runs with seeds 2 and 3 on the same
# SFT and reward models (29 runs, about 11 minutes on 2 cores); another SEED is the study
# again from a pipeline of its own (13 runs, about 5 minutes; results/rlhf-seed2 and
# results/rlhf-seed3 are SEED 2 and 3).
# Usage: scripts/rlhf-results.sh [OUT] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/rlhf-study}
SEED=${2:-1}
G=./target/release/gradgym
CFG=configs/rlhf/demo.toml
mkdir -p "$OUT"
if [ "$SEED" = 1 ]; then total=29; else total=13; fi
n=0
# stage DIR SEED ARGS...: `gradgym rlhf ARGS --seed SEED` into $OUT/DIR, said first (the runs
# themselves are quiet). Every stage runs on the defaults (the RL stage's `rl.backend = auto`:
# the native backend on the CPU), as the committed study was trained.
stage() {
  n=$((n + 1))
  echo "rlhf-results: [$n/$total] $OUT/$1" >&2
  local dir=$1 seed=$2
  shift 2
  "$G" rlhf "$@" --seed "$seed" --out "$OUT/$dir" --overwrite --quiet
}
# ppo DIR SEED L B: PPO for 100 updates against the reward model of L comparisons at β = B.
ppo() {
  stage "$1" "$2" rl --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels$3" \
    --set rl.beta="$4" --set rl.updates=100 --set eval.every=5
}
stage sft "$SEED" sft --config "$CFG"
for L in 2000 10000; do
  stage "rm-labels$L" "$SEED" rm --config "$CFG" --sft "$OUT/sft" --set labels.comparisons=$L
  stage "bon-labels$L" "$SEED" bon --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels$L"
  for B in 0 0.01 0.03 0.1; do
    ppo "ppo-beta$B-labels$L" "$SEED" $L $B
  done
done
if [ "$SEED" = 1 ]; then
  for S in 2 3; do
    for L in 2000 10000; do
      for B in 0 0.01 0.03 0.1; do
        ppo "ppo-beta$B-labels$L-seed$S" $S $L $B
      done
    done
  done
fi
"$G" report "$OUT"
"$G" plot "$OUT"
