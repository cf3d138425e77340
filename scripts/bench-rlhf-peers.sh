#!/usr/bin/env bash
# gradgym against the field's tools on the bench model of `gradgym rlhf bench`, same machine,
# same moment: ROUNDS rounds, each running Hugging Face `generate` (scripts/bench-hf-generate.py),
# gradgym's benchmark (generation, PPO and RLOO end to end), TRL's PPOTrainer and TRL's RLOOTrainer
# (scripts/bench-trl.sh) back to back, one at a time, so that a machine whose speed drifts
# affects all alike. scripts/bench-trl.sh --setup installs transformers and TRL once.
# Usage: scripts/bench-rlhf-peers.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
scripts/bench-trl.sh --setup
cargo build --release --quiet
python="${GRADGYM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradgym}/torch-2.11.0/bin/python"
for i in $(seq "$rounds"); do
  echo "round $i"
  "$python" -W ignore scripts/bench-hf-generate.py 2>&1 | grep "HF generate"
  ./target/release/gradgym rlhf bench --reps 5 | grep -E "^(generation|  the same|PPO|RLOO|  per update|peak|backend)"
  ./target/release/gradgym rlhf bench --reps 5 --backend libtorch | grep -E "^(PPO|  the same|  per update|peak|backend)"
  scripts/bench-trl.sh 5
done
