# gradgym: the two commands of the README, and helpers.
#   make run    the main job: conformance check, then a small seeded sweep (PPO, A2C, REINFORCE),
#               its report and its plots, into out/quick (about a minute on 2 cores, after the build);
#               then the RLHF demo (pretrain, SFT, reward model, best-of-n, PPO on the review
#               language) into out/rlhf-demo, with its report and plot (under 2 minutes on Zen 2 or
#               Zen 4 cores, 199 s on a Zen 1 EPYC)
#   make test   the test suite, then the learning check: the quick sweep retrained and gated
#               against results/quick with gradgym compare (what CI runs)
# Both install libtorch first if this machine lacks it (scripts/setup-libtorch.sh).
#   make plots      regenerate every committed report and plot from results/ (no training)
#   make reproduce  retrain results/ from scratch into out/reproduce (scripts/reproduce-results.sh)
.PHONY: setup run test check-learning check-cuda lint bench-envs bench-train bench-prefs bench-rlhf bench-rlhf-peers plots reproduce rlhf-results rlhf-learners rlhf-pipeline-seeds

CARGO ?= cargo
FIXTURE := tests/fixtures/gymnasium-classic-control-transitions.csv

setup:
	scripts/setup-libtorch.sh

run: setup
	$(CARGO) build --release
	./target/release/gradgym info
	./target/release/gradgym envs check $(FIXTURE)
	./target/release/gradgym sweep sweeps/quick.toml --out out/quick
	./target/release/gradgym report out/quick
	./target/release/gradgym plot out/quick
	./target/release/gradgym rlhf --config configs/rlhf/demo.toml --out out/rlhf-demo --overwrite
	./target/release/gradgym report out/rlhf-demo > /dev/null
	./target/release/gradgym plot out/rlhf-demo
	@echo "RLHF demo: report out/rlhf-demo/report/report.md, plot out/rlhf-demo/plots/"

plots: setup
	$(CARGO) build --release
	./target/release/gradgym report results/classic-control > /dev/null
	./target/release/gradgym plot results/classic-control
	./target/release/gradgym report results/quick > /dev/null
	./target/release/gradgym plot results/quick
	./target/release/gradgym report results/prefs > /dev/null
	./target/release/gradgym plot results/prefs
	./target/release/gradgym plot results/estimators
	./target/release/gradgym report results/rlhf > /dev/null
	./target/release/gradgym plot results/rlhf
	./target/release/gradgym report results/rlhf-seed2 > /dev/null
	./target/release/gradgym plot results/rlhf-seed2
	./target/release/gradgym report results/rlhf-seed3 > /dev/null
	./target/release/gradgym plot results/rlhf-seed3
	./target/release/gradgym report results/rlhf-learners > /dev/null
	./target/release/gradgym plot results/rlhf-learners

reproduce: setup
	scripts/reproduce-results.sh

test: setup
	OMP_NUM_THREADS=1 $(CARGO) test --release --workspace
	$(CARGO) build --release
	scripts/check-learning.sh

# Retrain the quick sweep and gate it against results/quick (part of make test).
check-learning: setup
	$(CARGO) build --release
	scripts/check-learning.sh

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench-envs: setup
	scripts/bench-envs.sh 5

# PPO CartPole (CleanRL's config) wall clock, 3 runs per backend.
bench-train:
	scripts/bench-train.sh 3

# The preference loop's cost: PPO on the learned reward (1,000 labels) against PPO on the true
# reward, interleaved and async, 3 runs each (issue 12's target: interleaved ≤ 1.5×).
bench-prefs:
	scripts/bench-prefs.sh 3

# RLHF throughput on the GPT-2-shaped bench model: generation and PPO tokens/s, peak memory
# (issue 13's targets: 36,000 and 3,600 tokens/s).
bench-rlhf: setup
	$(CARGO) build --release
	./target/release/gradgym rlhf bench --reps 5

# gradgym's generation and PPO against Hugging Face generate and TRL's PPOTrainer and RLOOTrainer
# on the same bench model, in alternated rounds (installs transformers and TRL into the libtorch
# cache once; about 50 s a round).
bench-rlhf-peers: setup
	scripts/bench-rlhf-peers.sh 4

# The check of --device cuda on a machine with a GPU (scripts/check-cuda.sh; DEVICE=cpu runs the
# same checks on the CPU).
check-cuda: setup
	$(CARGO) build --release
	scripts/check-cuda.sh

# Retrain the RLHF over-optimisation study (results/rlhf) into out/rlhf-study (about 11 minutes).
rlhf-results: setup
	$(CARGO) build --release
	scripts/rlhf-results.sh out/rlhf-study

# PPO, RLOO and GRPO on the committed SFT and reward models (results/rlhf-learners) into
# out/rlhf-learners (about 9 minutes).
rlhf-learners: setup
	$(CARGO) build --release
	scripts/rlhf-learners.sh out/rlhf-learners

# The whole RLHF pipeline again with seeds 2 and 3 (results/rlhf-seed2, -seed3) into
# out/rlhf-seed2 and out/rlhf-seed3 (about 5 minutes each).
rlhf-pipeline-seeds: setup
	$(CARGO) build --release
	scripts/rlhf-results.sh out/rlhf-seed2 2
	scripts/rlhf-results.sh out/rlhf-seed3 3
