#!/usr/bin/env bash
# The learning check that `make test` ends with: retrain the main job's small sweep
# (sweeps/quick.toml: PPO, A2C and REINFORCE on CartPole-v1 and PPO on Pendulum-v1, seeds 1–3,
# 500k steps per run; about 45 s on 2 cores) into a fresh folder, then gate it against the
# committed results/quick with `gradgym compare`. It fails (exit 1) when a (env, algo) pair's
# IQM drops with its whole 95% bootstrap interval below −tolerance·(reference − random), when
# a pair is missing, or when more runs failed than in the baseline.
#
# Training is deterministic on one CPU type, so on this machine the fresh sweep equals the
# committed one and every Δ is 0; the tolerance (10% of the normalised score) leaves room for
# another CPU's kernels rounding differently. A deliberately weakened learner fails it: see
# docs/testing.md ("The learning check").
set -euo pipefail
cd "$(dirname "$0")/.."
gradgym=${GRADGYM:-./target/release/gradgym}
out=${1:-target/check-learning}
tolerance=${TOLERANCE:-0.1}
rm -rf "$out"
"$gradgym" sweep sweeps/quick.toml --out "$out" --quiet
"$gradgym" compare results/quick "$out" --tolerance "$tolerance"
