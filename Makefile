# FoodSave Auth. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export CARGO_TERM_COLOR ?= never

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: venv
venv: ## Create .venv with the pinned local AWS stack (moto)
	@local/setup-venv.sh

.PHONY: test
test: ## Everything CI runs: lint, doc links, infra checks + sam build, build once, every test on a local AWS stack, schemathesis against openapi.yaml, the click-through page in headless Chromium, then sam local invoke/start-api on Docker
	@df -Ph . | awk 'NR == 2 { print "disk: " $$4 " free on " $$6 " (a fresh make test needs about 10 GB)" }'
	cargo fmt --all --check
	python3 local/check_docs.py
	cargo clippy --workspace --all-targets --locked -- -D warnings
	local/check-infra.sh
	cargo build --workspace --all-targets --locked
	cargo build --locked -p foodsave-auth --no-default-features
	local/base-image.sh
	local/setup-browser.sh
	@mkdir -p target
	@set -o pipefail; { local/with-stack.sh cargo test --workspace --locked --no-fail-fast -- --test-threads=4; status=$$?; \
	  local/with-stack.sh local/schemathesis.sh || status=1; \
	  local/with-stack.sh cargo test --locked --workspace --test browser -- --ignored --nocapture || status=1; \
	  local/sam-local.sh run cargo test --locked --workspace --test sam_local -- --ignored --nocapture --test-threads=2 \
	  || status=1; exit $$status; } 2>&1 | tee target/test.log; status=$$?; local/test-summary.sh target/test.log; exit $$status

# The quick loop: every crate's unit tests and the integration tests on a local stack,
# without the minute-long budget and abuse runs, the Docker, schemathesis and browser
# parts (make test runs everything).
SLOW_TESTS := global_budget abuse browser sam_local
QUICK_TESTS := $(filter-out $(SLOW_TESTS),$(patsubst shared/tests/%.rs,%,$(wildcard shared/tests/*.rs)))

.PHONY: check
check: ## The quick loop (under 5 min on a warm target dir): fmt, clippy, unit tests, the fast integration tests on a local AWS stack
	cargo fmt --all --check
	python3 local/check_docs.py
	cargo clippy --workspace --all-targets --locked -- -D warnings
	cargo test --workspace --locked --lib --bins
	local/with-stack.sh cargo test --locked --workspace $(addprefix --test ,$(QUICK_TESTS)) -- --test-threads=4

.PHONY: infra
infra: ## sam validate --lint, cfn-lint, checkov and sam build (pinned tools in .venv-sam, .venv-checkov)
	local/check-infra.sh

.PHONY: invoke
invoke: ## Run one sample event through its function's Lambda runtime: make invoke EVENT=otp-send
	@test -n "$(EVENT)" || { echo "usage: make invoke EVENT=<name of a file in events/ without .json>"; exit 2; }
	cargo build --locked --workspace --bins
	local/with-stack.sh target/debug/local-api --invoke events/$(EVENT).json

# The function packages and the baseline alone, as `sam build` builds each function: a
# --workspace build would give them local-api's devstack features too.
BENCH_BINARIES := otp-send otp-verify token-refresh logout sessions account-delete jwks hello-world

.PHONY: bench
bench: ## Benchmark of record → BENCHMARKS.md: each function vs hello-world (init, warm p50/p99, CPU, RSS, AWS calls), crypto floor; BENCH_RUNS=10 BENCH_REQUESTS=1000
	cargo build --locked --release $(addprefix -p ,$(BENCH_BINARIES))
	cargo bench --locked -p foodsave-auth --bench crypto
	local/with-stack.sh cargo bench --locked -p foodsave-auth --bench cold_start

.PHONY: openapi
openapi: ## Validate openapi.yaml and check the local API against it with schemathesis (pinned, .venv-schemathesis)
	cargo build --locked --workspace --bins
	local/with-stack.sh local/schemathesis.sh

.PHONY: browser
browser: ## The click-through and docs pages in headless Chromium (Debian's chromium, installed if missing); screenshots in target/browser/
	local/setup-browser.sh
	cargo build --locked --workspace --bins
	local/with-stack.sh cargo test --locked --workspace --test browser -- --ignored --nocapture

.PHONY: fuzz
fuzz: ## Fuzz the request edge (fuzz/, cargo-fuzz on stable via RUSTC_BOOTSTRAP=1) for FUZZ_SECONDS (60) per target: executions, coverage, crashes; then `local/fuzz.sh cmin` and commit fuzz/corpus/
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
	local/fuzz.sh $(or $(FUZZ_SECONDS),60)

.PHONY: fmt
fmt: ## Format the code
	cargo fmt --all

.PHONY: dev
dev: ## Run the API on http://127.0.0.1:3000/api/v1/auth (docs: /api/v1/auth/docs) over a local AWS stack (Ctrl-C stops both)
	cargo build --locked --workspace --bins
	local/with-stack.sh target/debug/local-api

.PHONY: start-api
start-api: ## The same API through `sam local start-api`: each function in its Lambda container on Docker (Ctrl-C stops all)
	local/sam-local.sh build
	local/sam-local.sh start-api
