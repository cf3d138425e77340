#!/usr/bin/env bash
# The check of `--device cuda` that a machine with a GPU runs in one go (a few minutes):
# `gradgym info`, `gradgym rlhf bench` on the bench and demo models, the RLHF demo (every
# stage) on the GPU and on the CPU beside it, and a short classic-control PPO run through
# libtorch on the GPU. It stops at the first command that fails, and at a run whose
# summary.json does not say "completed". GPU and CPU figures are printed side by side, not
# compared bit for bit: on a GPU the backward passes of embedding lookups and gathers use
# atomic adds, so runs there are not bit-reproducible.
#
# It runs a built binary (G, default target/release/gradgym). Where the clone has no `.libtorch`
# (a GPU machine that did not build it, say), it runs against that machine's own PyTorch,
# which must be 2.11.0: LIBTORCH_LIB (default: the lib/ folder of python3's torch) and the
# NVIDIA libraries beside it go on LD_LIBRARY_PATH, so a machine with PyTorch 2.11.0 and no Rust
# can run a binary built elsewhere. DEVICE=cpu runs the same checks on the CPU.
# Usage: [DEVICE=cuda] [G=BIN] [OUT=DIR] [LIBTORCH_LIB=DIR] scripts/check-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
G=${G:-./target/release/gradgym}
OUT=${OUT:-out/check-$DEVICE}
if [ -z "${LIBTORCH_LIB:-}" ] && [ -d .libtorch/lib ]; then
  LIBTORCH_LIB=$(readlink -f .libtorch/lib)
elif [ -z "${LIBTORCH_LIB:-}" ]; then
  version=$(python3 -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null) || {
    echo "check-cuda: no .libtorch here and python3 cannot import torch; set LIBTORCH_LIB" >&2
    exit 1
  }
  if [ "$version" != 2.11.0 ]; then
    echo "check-cuda: python3's torch is $version; gradgym links 2.11.0 (set LIBTORCH_LIB)" >&2
    exit 1
  fi
  LIBTORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
fi
nvidia=$({ find "$LIBTORCH_LIB/../.." -maxdepth 4 -type d -path '*nvidia*' -not -path '*triton*' \
  -name lib 2>/dev/null || true; } | paste -sd:)
export LD_LIBRARY_PATH="$LIBTORCH_LIB${nvidia:+:$nvidia}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$OUT"
say() { echo "check-cuda: $*" >&2; }
# completed DIR: the run at DIR ended as completed.
completed() {
  grep -q '"status": "completed"' "$1/summary.json" || {
    say "$1 did not complete:"
    cat "$1/summary.json" >&2
    exit 1
  }
}
# figure DIR KEY.KEY...: a figure from DIR/summary.json.
figure() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else v))' "$1/summary.json" "$2"
}

say "gradgym info"
"$G" info | tee "$OUT/info.txt"
if [ "$DEVICE" != cpu ] && ! grep -q "^CUDA available: true" "$OUT/info.txt"; then
  say "gradgym info does not report a CUDA device (see $OUT/info.txt)"
  exit 1
fi

say "rlhf bench, bench model, $DEVICE"
"$G" rlhf bench --device "$DEVICE" --reps 3 | tee "$OUT/bench.txt"
say "rlhf bench, demo model, $DEVICE"
"$G" rlhf bench --config configs/rlhf/demo.toml --device "$DEVICE" --reps 3 | tee "$OUT/bench-demo.txt"

# The RLHF demo (`make run`'s: every stage, 60 PPO updates) on the device and, for a GPU, on the
# CPU beside it.
devices=("$DEVICE")
[ "$DEVICE" = cpu ] || devices+=(cpu)
for d in "${devices[@]}"; do
  say "rlhf pipeline (the demo), $d"
  "$G" rlhf --config configs/rlhf/demo.toml --device "$d" --out "$OUT/rlhf-$d" --overwrite --quiet
  completed "$OUT/rlhf-$d"
done
for d in "${devices[@]}"; do
  say "$d: reward model gold accuracy $(figure "$OUT/rlhf-$d" rm_gold_accuracy); PPO gold $(figure "$OUT/rlhf-$d" policy.gold) ± $(figure "$OUT/rlhf-$d" policy.gold_ci), KL $(figure "$OUT/rlhf-$d" policy.kl); SFT gold $(figure "$OUT/rlhf-$d" sft.gold)"
done

say "train (CartPole-v1, PPO, libtorch), $DEVICE"
"$G" train --env CartPole-v1 --algo ppo --total-timesteps 20000 --device "$DEVICE" \
  --backend libtorch --out "$OUT/train-$DEVICE" --overwrite --quiet >"$OUT/train-$DEVICE.txt"
completed "$OUT/train-$DEVICE"
say "all checks passed on $DEVICE; files in $OUT"
