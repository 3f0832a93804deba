#!/usr/bin/env bash
# `make demo`'s Python: a virtual environment (default .venv-demo, DEMO_VENV in the Makefile)
# with the agent installed editable and fusepy for the SR-IOV emulator, both pinned by
# constraints.txt. Nothing is installed into the system's Python. Created once, refreshed on
# every call (pip leaves satisfied requirements alone); prints the venv's python.
#
#   bash scripts/demo-venv.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${1:-.venv-demo}
base_python=${BASE_PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  if ! "$base_python" -m venv "$venv" >&2; then
    echo "demo-venv.sh: '$base_python -m venv $venv' failed; on Debian: apt-get install python3-venv" >&2
    exit 1
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e . fusepy >&2
echo "$venv/bin/python"
