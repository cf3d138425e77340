#!/usr/bin/env bash
# The RLHF study of scripts/rlhf-results.sh from a whole pipeline of another seed: its own
# pretraining and SFT, its own comparisons from the judge (2,000 and 10,000) and reward models,
# best-of-n (n = 1…64) against each, and PPO at β = 0, 0.01, 0.03 and 0.1 against each (100
# updates, evaluated every 5), all with SEED; then the folder's report and plots. The committed
# results/rlhf-seed2 and results/rlhf-seed3 are SEED 2 and 3 (results/rlhf is seed 1's
# pipeline, where PPO alone also has seeds 2 and 3). About 6 minutes on 2 cores.
# Usage: scripts/rlhf-pipeline-seed.sh SEED [OUT]   (default OUT=out/rlhf-seedSEED)
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:?usage: scripts/rlhf-pipeline-seed.sh SEED [OUT]}
OUT=${2:-out/rlhf-seed$S}
G=./target/release/gradgym
CFG=configs/rlhf/demo.toml
mkdir -p "$OUT"
n=0
# stage DIR ARGS...: `gradgym rlhf ARGS --seed SEED` into $OUT/DIR, said first.
stage() {
  n=$((n + 1))
  echo "rlhf-pipeline-seed: [$n/13] $OUT/$1" >&2
  local dir=$1
  shift
  "$G" rlhf "$@" --seed "$S" --out "$OUT/$dir" --overwrite --quiet
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
"$G" report "$OUT"
"$G" plot "$OUT"
