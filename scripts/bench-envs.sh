#!/usr/bin/env bash
# Throughput table of the README: every env at 4096 envs, 2 threads, 1 thread, and 1 thread
# with the portable (no-SIMD) kernel. Usage: scripts/bench-envs.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
cargo build --release --quiet
for env in CartPole-v1 Acrobot-v1 MountainCar-v0 MountainCarContinuous-v0 Pendulum-v1; do
  ./target/release/gradgym envs bench --env "$env" --num-envs 4096 --seconds "$seconds" --threads 2
  ./target/release/gradgym envs bench --env "$env" --num-envs 4096 --seconds "$seconds" --threads 1
  ./target/release/gradgym envs bench --env "$env" --num-envs 4096 --seconds "$seconds" --threads 1 --kernel portable
done
