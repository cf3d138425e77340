# gradgym: the two commands of the README, and helpers.
#   make run    the main job: conformance check, then train PPO on CartPole-v1
#   make test   the test suite (what CI runs)
# Both install libtorch first if this machine lacks it (scripts/setup-libtorch.sh).
.PHONY: setup run test lint bench-envs

CARGO ?= cargo
FIXTURE := tests/fixtures/gymnasium-classic-control-transitions.csv

setup:
	scripts/setup-libtorch.sh

run: setup
	$(CARGO) build --release
	./target/release/gradgym info
	./target/release/gradgym envs check $(FIXTURE)
	./target/release/gradgym train --env CartPole-v1 --algo ppo --seed 1 --out out/runs/CartPole-v1__ppo__1

test: setup
	$(CARGO) test --release --workspace

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench-envs:
	scripts/bench-envs.sh 5
