#!/usr/bin/env bash
# Retrains the study of RL learners on text (results/rlhf-learners) into OUT (default
# out/rlhf-learners): best-of-n, then PPO, RLOO and GRPO (rl.num_generations = 4) for 100
# updates at β = 0.1 and 0.01, seeds 1-3, and GRPO without its division by the group's
# spread (rl.scale_rewards = "none") at β = 0.01, against the SFT model and the
# 10,000-comparison reward model of the over-optimisation study in STUDY (default
# results/rlhf: its sft/ and rm-labels10000/); then its report and plots. 22 runs, about
# 9 minutes on 2 cores.
# Usage: scripts/rlhf-learners.sh [OUT] [STUDY]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/rlhf-learners}
STUDY=${2:-results/rlhf}
G=./target/release/gradgym
CFG=configs/rlhf/demo.toml
inputs=(--sft "$STUDY/sft" --rm "$STUDY/rm-labels10000")
mkdir -p "$OUT"
echo "rlhf-learners: [1/22] $OUT/bon-labels10000" >&2
"$G" rlhf bon --config "$CFG" "${inputs[@]}" --seed 1 --out "$OUT/bon-labels10000" \
  --overwrite --quiet
n=1
# rl NAME SEED ARGS...: 100 RL updates with ARGS into $OUT/NAME (NAME-seedS for seeds 2, 3).
rl() {
  local dir=$1 seed=$2
  shift 2
  [ "$seed" = 1 ] || dir="$dir-seed$seed"
  n=$((n + 1))
  echo "rlhf-learners: [$n/22] $OUT/$dir" >&2
  "$G" rlhf rl --config "$CFG" "${inputs[@]}" "$@" --set rl.updates=100 --set eval.every=5 \
    --seed "$seed" --out "$OUT/$dir" --overwrite --quiet
}
for B in 0.1 0.01; do
  for A in ppo rloo grpo; do
    for S in 1 2 3; do
      rl "$A-beta$B-labels10000" "$S" --set "rl.algo=\"$A\"" --set rl.beta="$B"
    done
  done
done
for S in 1 2 3; do
  rl grpo-unscaled-beta0.01-labels10000 "$S" \
    --set 'rl.algo="grpo"' --set 'rl.scale_rewards="none"' --set rl.beta=0.01
done
"$G" report "$OUT" > /dev/null
"$G" plot "$OUT" > /dev/null
echo "rlhf-learners: report and plots in $OUT/report and $OUT/plots" >&2
