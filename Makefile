# vtbulk: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
MOCK    := target/debug/vt-mock

.PHONY: help deps demo test loaded-test lint fmt unit conformance chaos chaos-short bench bench-mock bench-peers bench-criterion build man clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

build: ## build everything (debug)
	$(CARGO) build --workspace

demo: ## build, start vt-mock on loopback, look files up, show quotas and stats, stop it
	@scripts/demo.sh

deps: ## what the tests need: Debian packages (apt-get as root), rustfmt, clippy, cargo-deny, every crate
	@scripts/deps.sh

test: deps lint unit conformance chaos-short ## every test: deps, lint, Rust tests, vt-py conformance, chaos (short)
	@echo "make test: all green"

loaded-test: ## make test five times in a row with a CPU hog on each core (RUNS=N)
	@scripts/loaded-test.sh

lint: ## cargo fmt --check, clippy -D warnings, cargo deny (licences, bans, sources)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(CARGO) deny --version >/dev/null 2>&1 || { echo "cargo-deny is missing: make deps" >&2; exit 1; }
	$(CARGO) deny --offline --log-level error check --hide-inclusion-graph bans licenses sources

fmt: ## format the code
	$(CARGO) fmt --all

unit: ## Rust unit and integration tests
	$(CARGO) test --workspace

$(VENV)/.installed: tests/conformance/requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.lock
	touch $@

conformance: $(VENV)/.installed ## the official vt-py client against vt-mock
	$(CARGO) build --quiet -p vtbulk-mock --bin vt-mock
	VT_MOCK_BIN=$(MOCK) $(VENV)/bin/python -m pytest -q tests/conformance

chaos: ## the fault and crash suite: faults x inputs, 20 kill -9s, signals, full disks (CHAOS_SEED=S)
	$(CARGO) build --quiet -p vtbulk -p vtbulk-mock
	$(PYTHON) scripts/chaos.py

chaos-short: ## the chaos suite's short form (inside make test)
	$(CARGO) build --quiet -p vtbulk -p vtbulk-mock
	$(PYTHON) scripts/chaos.py --short

bench: bench-criterion bench-mock bench-peers ## all benchmarks

bench-criterion: ## criterion benches of the hot paths
	$(CARGO) bench --workspace

bench-mock: ## vt-mock against the shared nginx mock with wrk (needs root for apt the first time)
	benches/mock_vs_nginx.sh

bench-peers: ## vtbulk against wrk and vt-py on the shared nginx mock (scenarios A, B, Q)
	benches/peers.sh

man: ## the manual pages (vtbulk.1 and one per subcommand) into target/man
	$(CARGO) run --quiet -p vtbulk -- man --dir target/man
	@echo "man -l target/man/vtbulk.1"

clean: ## remove build outputs and the venv
	$(CARGO) clean
	rm -rf $(VENV) benches/out
