# gradgym: the two commands of the README, and helpers.
#   make run    the main job
#   make test   the test suite (what CI runs)
.PHONY: run test lint bench-envs

CARGO ?= cargo
FIXTURE := tests/fixtures/gymnasium-classic-control-transitions.csv
ENVS := CartPole-v1 Acrobot-v1 MountainCar-v0 MountainCarContinuous-v0 Pendulum-v1

run:
	$(CARGO) build --release
	./target/release/gradgym envs check $(FIXTURE)
	@for env in $(ENVS); do ./target/release/gradgym envs bench --env $$env --num-envs 4096 --seconds 2 || exit 1; done

test:
	$(CARGO) test --release --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench-envs:
	scripts/bench-envs.sh 5
