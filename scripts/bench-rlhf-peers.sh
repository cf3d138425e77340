#!/usr/bin/env bash
# gradgym against the field's tools on the bench model of `gradgym rlhf bench`, same machine,
# same moment: ROUNDS rounds, each running Hugging Face `generate` (scripts/bench-hf-generate.py),
# gradgym's benchmark (generation and PPO end to end), TRL's PPOTrainer and TRL's RLOOTrainer
# (scripts/bench-trl.sh) back to back, one at a time, so that a machine whose speed drifts
# affects all alike. Installs transformers (TRANSFORMERS_VERSION) once into the libtorch cache's
# virtual environment, beside the torch gradgym links, and TRL as scripts/bench-trl.sh says.
# Usage: scripts/bench-rlhf-peers.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
TRANSFORMERS_VERSION=5.25.0
scripts/setup-libtorch.sh
cargo build --release --quiet
cache="${GRADGYM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradgym}"
python="$cache/torch-2.11.0/bin/python"
if ! "$python" -c "import transformers, sys; sys.exit(transformers.__version__ != '$TRANSFORMERS_VERSION')" 2>/dev/null; then
  echo "bench-rlhf-peers: installing transformers==$TRANSFORMERS_VERSION into $(dirname "$(dirname "$python")")" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "transformers==$TRANSFORMERS_VERSION"
fi
for i in $(seq "$rounds"); do
  echo "round $i"
  "$python" -W ignore scripts/bench-hf-generate.py 2>&1 | grep "HF generate"
  ./target/release/gradgym rlhf bench --reps 5 | grep -E "^(generation|  the same|PPO|peak)"
  scripts/bench-trl.sh 5
done
