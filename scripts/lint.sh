#!/usr/bin/env bash
# `make lint`: ruff (ruff.toml), the import contracts (.importlinter), shellcheck on scripts/.
# ruff and import-linter come from the pinned test dependencies (`make install`: pip install -c
# constraints.txt -e '.[test]'), and the shell linter from the system (`make deps`: apt-get
# install shellcheck). Every missing tool is named, with how to get it, before anything runs: a lint
# that silently skipped a linter would pass what CI fails. Exits 2 when a tool is missing, 1 on
# any finding.
#
#   PYTHON=python3 bash scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

missing=()
if ! "$PYTHON" -m ruff --version >/dev/null 2>&1; then
  missing+=("ruff (pinned in constraints.txt; install: make install)")
fi
# The console script next to the interpreter first (a venv's), else on PATH.
lint_imports="$(dirname "$(command -v "$PYTHON" || echo "$PYTHON")")/lint-imports"
if [ ! -x "$lint_imports" ]; then
  lint_imports=$(command -v lint-imports || true)
fi
if [ -z "$lint_imports" ]; then
  missing+=("lint-imports (import-linter, pinned in constraints.txt; install: make install)")
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  missing+=("shellcheck (a system package; install: make deps, or apt-get install shellcheck)")
fi
if ((${#missing[@]})); then
  echo "make lint: missing tools, nothing was checked:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 2
fi

status=0
"$PYTHON" -m ruff check --no-cache . || status=1
# PYTHONPATH=src: the contracts are checked on this checkout's sources, installed or not.
PYTHONPATH=src "$lint_imports" --no-cache || status=1
shellcheck scripts/*.sh || status=1
exit "$status"
