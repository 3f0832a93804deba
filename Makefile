# HostPlumber developer entry points. Everything privileged expects root (CI runs as root).
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
# The image tag is the package version (scripts/version.sh): a new version is a new tag, so a
# rollout of a new DaemonSet pulls it even with imagePullPolicy IfNotPresent.
VERSION := $(shell bash scripts/version.sh)
IMAGE ?= hostplumber/plumber-agent:$(VERSION)

.PHONY: help install deps demo test test-unit test-host test-faults e2e-local e2e e2e-dry-run image bench vm-kernel lint clean

# `make help` lists every target from its `##` comment, so the list cannot drift from the rules
# (tests/test_repository.py checks that every target has one).
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[A-Za-z0-9_.-]+:.*## / {printf "make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install or refresh the apt and pip dependencies (root)
	bash scripts/install-deps.sh

# A fresh machine gets its dependencies on the first `make test` (scripts/install-deps.sh
# leaves this stamp behind); `make deps` refreshes them.
.deps-stamp:
	bash scripts/install-deps.sh

install: ## pip install -e '.[test]' (the package with its test dependencies)
	$(PYTHON) -m pip install -q -c constraints.txt -e '.[test]'

# The demo's Python is a virtual environment (scripts/demo-venv.sh), never the system's.
DEMO_VENV ?= .venv-demo
demo: ## in a virtualenv (DEMO_VENV=.venv-demo), run the agent in local mode on a throw-away namespace (root)
	PYTHON="$$(bash scripts/demo-venv.sh $(DEMO_VENV))" bash scripts/demo.sh

test: .deps-stamp lint ## lint, then the whole test suite, as CI runs it (root)
	$(PYTEST) -q tests

test-unit: ## the fast, unprivileged tests (no install needed)
	$(PYTEST) -q tests/unit tests/manifests tests/kube tests/test_repository.py

test-host: .deps-stamp ## host tests: netns, userspace OVS, SR-IOV emulator, full-kernel VM (root)
	$(PYTEST) -q tests/host tests/fullkernel

test-faults: .deps-stamp ## the fault-injection suite (root)
	$(PYTEST) -q -m fault tests

e2e-local: .deps-stamp ## simulated nodes on this machine against the fake API server (root)
	$(PYTEST) -q tests/e2e

e2e: ## the same scenarios on a kind cluster (Docker or Podman, and kind)
	bash scripts/e2e-kind.sh

e2e-dry-run: ## print the commands `make e2e` would run
	DRY_RUN=1 bash scripts/e2e-kind.sh

image: ## build the agent image (IMAGE=hostplumber/plumber-agent:VERSION, the package version) with podman or docker
	IMAGE=$(IMAGE) bash scripts/build-image.sh

bench: ## benchmarks next to their baselines (root)
	$(PYTHON) bench/run.py

vm-kernel: ## fetch Debian's kernel and build the initramfs for the full-kernel VM tier
	bash scripts/fetch-vm-kernel.sh

# scripts/lint.sh names every missing tool (and how to install it) before checking anything.
lint: ## ruff (ruff.toml), import contracts (.importlinter), shellcheck; fails on any finding or missing tool
	PYTHON=$(PYTHON) bash scripts/lint.sh

clean: ## remove build output and caches
	rm -rf build dist src/*.egg-info .pytest_cache
