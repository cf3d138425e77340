#!/usr/bin/env bash
# TRL's PPOTrainer and RLOOTrainer on the bench model of `gradgym rlhf bench` (scripts/bench-trl.py
# says what is measured), one after the other, never at once. PPOTrainer is in
# trl.experimental.ppo in TRL 1.12.0 and gone from 1.16.0, so PPO runs on TRL 1.12.0 and RLOO on
# 1.16.0. Each TRL gets its own virtual environment in the libtorch cache
# (${GRADGYM_CACHE:-~/.cache/gradgym}/trl-VERSION, ~310 MB and ~40 s each, once per machine)
# that sees the torch 2.11.0 and transformers 5.25.0 of torch-2.11.0/ through a .pth file and
# holds only what they lack, at pinned versions; torch-2.11.0/ itself is not changed. (Not a
# pip --target folder on PYTHONPATH: dill, which datasets hashes with, pickles modules outside a
# site-packages by value, and Dataset.from_dict then fails on pyarrow's MonthDayNano.)
# Also installs transformers (TRANSFORMERS_VERSION) once into torch-2.11.0/ for Hugging Face
# `generate` (scripts/bench-hf-generate.py).
# Usage: scripts/bench-trl.sh [UPDATES]   (timed updates per trainer after a warm-up; default 5)
#        scripts/bench-trl.sh --setup     (install only)
set -euo pipefail
cd "$(dirname "$0")/.."
updates=${1:-5}
TORCH_VERSION=2.11.0
TRANSFORMERS_VERSION=5.25.0
PPO_TRL=1.12.0
RLOO_TRL=1.16.0
# What TRL 1.12.0 and 1.16.0 need beyond the torch venv, as pip resolved it here, pinned.
DEPS="accelerate==1.16.0 datasets==5.2.0 pandas==3.1.1 psutil==7.2.2 pyarrow==26.0.1 dill==0.4.1
  multiprocess==0.70.19 python-dateutil==4.0.0 xxhash==4.1.0 tzdata==2026.6 requests==2.34.2
  certifi==2026.10.19.post1 charset-normalizer==3.5.3 urllib3==2.8.0"
cache="${GRADGYM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradgym}"
torch_venv="$cache/torch-$TORCH_VERSION"

scripts/setup-libtorch.sh
if ! "$torch_venv/bin/python" -c "import transformers, sys; sys.exit(transformers.__version__ != '$TRANSFORMERS_VERSION')" 2>/dev/null; then
  echo "bench-trl: installing transformers==$TRANSFORMERS_VERSION into $torch_venv" >&2
  "$torch_venv/bin/python" -m pip install --quiet --disable-pip-version-check "transformers==$TRANSFORMERS_VERSION"
fi

# trl_venv VERSION: prints the python of a virtual environment holding trl==VERSION on top of the
# torch venv, building it unless a previous build with the same pins completed.
trl_venv() {
  local venv="$cache/trl-$1" pins
  pins="trl==$1 $(echo $DEPS)"
  if [ "$(cat "$venv/.gradgym-pins" 2>/dev/null)" != "$pins" ]; then
    echo "bench-trl: installing trl==$1 into $venv (once per machine)" >&2
    rm -rf "$venv"
    "$torch_venv/bin/python" -m venv "$venv"
    "$torch_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
      > "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/gradgym-torch.pth"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins >&2
    "$venv/bin/python" -W ignore -c "import trl, transformers, torch, sys
sys.exit(trl.__version__ != '$1' or transformers.__version__ != '$TRANSFORMERS_VERSION')" \
      || { echo "bench-trl: trl $1 or transformers $TRANSFORMERS_VERSION did not import from $venv" >&2; exit 1; }
    echo "$pins" > "$venv/.gradgym-pins"
  fi
  echo "$venv/bin/python"
}

# run PYTHON TRAINER: prints the benchmark's result line, or all its output if it fails.
run() {
  local log
  log=$(mktemp)
  if "$1" scripts/bench-trl.py --trainer "$2" --updates "$updates" >"$log.out" 2>"$log"; then
    cat "$log.out"
  else
    cat "$log.out" "$log" >&2
    rm -f "$log" "$log.out"
    exit 1
  fi
  rm -f "$log" "$log.out"
}

ppo_python=$(trl_venv "$PPO_TRL")
rloo_python=$(trl_venv "$RLOO_TRL")
[ "$updates" = --setup ] && exit 0
run "$ppo_python" ppo
run "$rloo_python" rloo
