#!/usr/bin/env bash
# Makes libtorch available to the build, once per machine.
#
# tch 0.24.0 links against PyTorch 2.11.0 exactly. libtorch comes from the PyPI `torch==2.11.0`
# wheel, installed into a virtual environment in a cache outside the clone
# (${GRADGYM_CACHE:-~/.cache/gradgym}/torch-2.11.0) and reused by every later run and clone.
# The full install (with the NVIDIA runtime wheels it depends on: even libtorch_cpu.so needs
# libcudart.so.13) is about 4.6 GB and 90 s here. The clone gets a symlink `.libtorch` to the
# wheel's torch/ folder, which `.cargo/config.toml` hands to torch-sys as LIBTORCH.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
cache="${GRADGYM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradgym}"
venv="$cache/torch-$TORCH_VERSION"
python="$venv/bin/python"

have_torch() {
  "$python" -W ignore - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys, torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] else 1)
PY
}

if ! have_torch; then
  echo "setup-libtorch: installing torch==$TORCH_VERSION into $venv (once per machine; ~4.6 GB)" >&2
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  have_torch || { echo "setup-libtorch: torch $TORCH_VERSION did not import after install" >&2; exit 1; }
fi

torch_dir=$("$python" -W ignore -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).parent)')
abi=$("$python" -W ignore -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
if [ "$abi" != 1 ]; then
  echo "setup-libtorch: this torch uses the pre-C++11 ABI; .cargo/config.toml assumes the C++11 one" >&2
  exit 1
fi
if [ "$(readlink .libtorch 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" .libtorch
fi
