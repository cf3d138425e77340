#!/usr/bin/env bash
# Reproduces the README's training results: each (env, algo) below with its shipped config
# (benchmarks/configs/), seeds 1–5, two runs at a time, into ${1:-out/training}; then prints
# the final_return_mean_last100 and eval_return_mean of every run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/training}
scripts/setup-libtorch.sh
cargo build --release --quiet
mkdir -p "$out"
pairs="CartPole-v1:ppo Acrobot-v1:ppo Pendulum-v1:ppo CartPole-v1:a2c CartPole-v1:reinforce"
for pair in $pairs; do
  env=${pair%%:*}; algo=${pair##*:}
  for seed in 1 2 3 4 5; do
    dir="$out/${env}__${algo}__${seed}"
    ./target/release/gradgym train --env "$env" --algo "$algo" --seed "$seed" --out "$dir" --quiet > "$dir.log" 2>&1 &
    if (( $(jobs -r | wc -l) >= 2 )); then wait -n; fi
  done
done
wait
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = {}
for summary in sorted(out.glob("*/summary.json")):
    s = json.loads(summary.read_text())
    rows.setdefault((s["env_id"], s["algo"]), []).append(s)
print(f"{'env':<14} {'algo':<10} {'final_return_mean_last100 (seeds 1-5)':<46} {'eval_return_mean':<40}")
for (env, algo), runs in rows.items():
    runs.sort(key=lambda s: s["seed"])
    fmt = lambda key: ", ".join(f"{r[key]:.1f}" if r[key] is not None else "-" for r in runs)
    failed = [r["seed"] for r in runs if r["status"] != "completed"]
    print(f"{env:<14} {algo:<10} {fmt('final_return_mean_last100'):<46} {fmt('eval_return_mean'):<40}{'  FAILED seeds: ' + str(failed) if failed else ''}")
PY
