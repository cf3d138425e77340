#!/usr/bin/env bash
# The cost of learning from preferences (issue 12): for each env, PPO on the true reward against
# the same PPO run paid the learned reward (1,000 labels, the settings of sweeps/prefs.toml), interleaved and
# async, REPS runs each, one at a time. Prints every run's wall_seconds (training + evaluation,
# from summary.json) and the medians' ratios. Target: interleaved ≤ 1.5× the true-reward run.
# Usage: scripts/bench-prefs.sh [REPS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
scripts/setup-libtorch.sh
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*\"$1\": \([-0-9.e]*\).*/\1/p" "$2/summary.json"; }
for env in FixedHorizonCartPole-v0 Pendulum-v1; do
  # The settings of sweeps/prefs.toml: the defaults on CartPole, unit variance and 25-step
  # segments on Pendulum.
  case $env in
    Pendulum-v1) prefs_flags=(--segment-length 25 --prefs "{ reward_std = 1.0 }") ;;
    *) prefs_flags=() ;;
  esac
  for kind in true interleaved async; do
    : > "$out/$env-$kind"
    for i in $(seq "$reps"); do
      dir="$out/$env-$kind-$i"
      if [ "$kind" = true ]; then
        ./target/release/gradgym train --env-id "$env" --algo ppo --seed "$i" --out "$dir" --quiet > /dev/null 2>&1
      else
        ./target/release/gradgym prefs --env "$env" --algo ppo --labels 1000 --seed "$i" --mode "$kind" \
          "${prefs_flags[@]}" --out "$dir" --quiet > /dev/null 2>&1
      fi
      printf '%-24s %-11s seed %d: %6.2f s, final return %s\n' "$env" "$kind" "$i" \
        "$(field wall_seconds "$dir")" "$(field final_return_mean_last100 "$dir")"
      field wall_seconds "$dir" >> "$out/$env-$kind"
    done
  done
  t=$(median < "$out/$env-true"); p=$(median < "$out/$env-interleaved"); a=$(median < "$out/$env-async")
  printf '%-24s median: true reward %.2f s, interleaved %.2f s (%.2f×), async %.2f s (%.2f×; %.2f× interleaved)\n' \
    "$env" "$t" "$p" "$(awk "BEGIN {print $p / $t}")" "$a" "$(awk "BEGIN {print $a / $t}")" "$(awk "BEGIN {print $a / $p}")"
done
