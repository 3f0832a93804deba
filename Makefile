# HostPlumber developer entry points. Everything privileged expects root (CI runs as root).
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
IMAGE ?= hostplumber/plumber-agent:latest

.PHONY: help install deps demo test test-unit test-host test-faults e2e-local e2e e2e-dry-run bench vm-kernel lint clean

help:
	@echo "make demo        set up and run the agent in local mode against a throw-away namespace"
	@echo "make test        the whole test suite (unit, API contract, host, full-kernel VM, e2e-local)"
	@echo "make test-unit   the fast, unprivileged tests only"
	@echo "make test-faults the fault-injection suite"
	@echo "make e2e-local   simulated nodes on this machine against the fake API server"
	@echo "make e2e         the same scenarios on a kind cluster (needs Docker/Podman + kind)"
	@echo "make bench       benchmarks side by side with their baselines"

deps:
	bash scripts/install-deps.sh

# A fresh machine gets its dependencies on the first `make test` (scripts/install-deps.sh
# leaves this stamp behind); `make deps` refreshes them.
.deps-stamp:
	bash scripts/install-deps.sh

install:
	$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	bash scripts/demo.sh

test: .deps-stamp
	$(PYTEST) -q tests

test-unit:
	$(PYTEST) -q tests/unit tests/manifests tests/kube

test-host: .deps-stamp
	$(PYTEST) -q tests/host tests/fullkernel

test-faults: .deps-stamp
	$(PYTEST) -q -m fault tests

e2e-local: .deps-stamp
	$(PYTEST) -q tests/e2e

e2e:
	bash scripts/e2e-kind.sh

e2e-dry-run:
	DRY_RUN=1 bash scripts/e2e-kind.sh

bench:
	$(PYTHON) bench/run.py

vm-kernel:
	bash scripts/fetch-vm-kernel.sh

lint:
	shellcheck scripts/*.sh
	$(PYTHON) -m pyflakes src tests bench 2>/dev/null || true

clean:
	rm -rf build dist src/*.egg-info .pytest_cache
