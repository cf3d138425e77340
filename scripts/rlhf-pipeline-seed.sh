#!/usr/bin/env bash
# The RLHF study's core claims again from a whole pipeline of another seed: its own pretraining
# and SFT, its own 10,000 comparisons from the judge and reward model, best-of-n (n = 1…64),
# and PPO at β = 0 and at the demo's β = 0.1 (100 updates, evaluated every 5), all with SEED;
# then the folder's report and plots. The committed results/rlhf-seed2 and results/rlhf-seed3
# are SEED 2 and 3 (results/rlhf is seed 1, where only PPO's seed varies). About 2 minutes
# on 2 cores.  Usage: scripts/rlhf-pipeline-seed.sh SEED [OUT]   (default OUT=out/rlhf-seedSEED)
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
  echo "rlhf-pipeline-seed: [$n/5] $OUT/$1" >&2
  local dir=$1
  shift
  "$G" rlhf "$@" --seed "$S" --out "$OUT/$dir" --overwrite --quiet
}
stage sft sft --config "$CFG"
stage rm-labels10000 rm --config "$CFG" --sft "$OUT/sft" --set labels.comparisons=10000
stage bon-labels10000 bon --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels10000"
for B in 0 0.1; do
  stage "ppo-beta$B-labels10000" rl --config "$CFG" --sft "$OUT/sft" --rm "$OUT/rm-labels10000" \
    --set rl.beta=$B --set rl.updates=100 --set eval.every=5
done
"$G" report "$OUT"
"$G" plot "$OUT"
