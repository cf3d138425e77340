#!/usr/bin/env bash
# The training wall clock of the README: PPO on CartPole-v1 with CleanRL's config (4 envs × 128
# steps, 500k steps, seed 1), REPS runs per backend in a row, each process timed, with the
# run's own wall_seconds (training + evaluation, no process start). Prints every run and the
# medians. Usage: scripts/bench-train.sh [REPS] [BACKENDS]   (default: 3 "native libtorch")
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
backends=${2:-native libtorch}
scripts/setup-libtorch.sh
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for backend in $backends; do
  : > "$out/process" ; : > "$out/inside"
  for i in $(seq "$reps"); do
    start=$(date +%s.%N)
    ./target/release/gradgym train --env CartPole-v1 --algo ppo --seed 1 --backend "$backend" \
      --out "$out/$backend-$i" --quiet > /dev/null 2>&1
    end=$(date +%s.%N)
    process=$(awk "BEGIN {print $end - $start}")
    inside=$(sed -n 's/.*"wall_seconds": \([0-9.]*\).*/\1/p' "$out/$backend-$i/summary.json")
    score=$(sed -n 's/.*"final_return_mean_last100": \([0-9.]*\).*/\1/p' "$out/$backend-$i/summary.json")
    printf '%-9s run %d: %6.2f s process, %6.2f s inside the run, final return %s\n' \
      "$backend" "$i" "$process" "$inside" "$score"
    echo "$process" >> "$out/process"; echo "$inside" >> "$out/inside"
  done
  printf '%-9s median: %6.2f s process, %6.2f s inside the run (CleanRL ppo.py: 177 s here)\n' \
    "$backend" "$(median < "$out/process")" "$(median < "$out/inside")"
done
