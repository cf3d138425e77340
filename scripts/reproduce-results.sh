#!/usr/bin/env bash
# Retrains the committed reference results from scratch and regenerates their reports and plots:
#   results/classic-control/  gradgym sweep sweeps/classic-control.toml (40 runs; ~70 s on 2 cores)
#   results/quick/            gradgym sweep sweeps/quick.toml (the main job's sweep; ~45 s)
#   results/prefs/            gradgym sweep sweeps/prefs.toml (60 runs, learning from preferences; ~3 min)
#   results/estimators/       gradgym estimators --seed 0 (~3 s)
#   results/rlhf/             scripts/rlhf-results.sh (the RLHF over-optimisation study; ~11 min)
#   results/rlhf-seed2/, -seed3/  scripts/rlhf-results.sh OUT 2, OUT 3 (the whole study again from its own SFT and reward models; ~5 min each)
#   results/rlhf-learners/    scripts/rlhf-learners.sh (PPO, RLOO and GRPO on results/rlhf's SFT and reward model; ~9 min)
# Usage: scripts/reproduce-results.sh [OUT]   (default OUT=out/reproduce; compare with results/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/reproduce}
scripts/setup-libtorch.sh
cargo build --release --quiet
g=./target/release/gradgym
for sweep in classic-control quick prefs; do
  $g sweep "sweeps/$sweep.toml" --jobs 2 --out "$out/$sweep"
  $g report "$out/$sweep" > /dev/null
  $g plot "$out/$sweep" > /dev/null
done
$g estimators --seed 0 --out "$out/estimators" --overwrite > /dev/null
$g plot "$out/estimators" > /dev/null
scripts/rlhf-results.sh "$out/rlhf" > /dev/null
for s in 2 3; do
  scripts/rlhf-results.sh "$out/rlhf-seed$s" $s > /dev/null
done
scripts/rlhf-learners.sh "$out/rlhf-learners" "$out/rlhf" > /dev/null
echo "wrote $out/{classic-control,quick,prefs,estimators,rlhf,rlhf-seed2,rlhf-seed3,rlhf-learners}; every file but the timing columns should match results/"
