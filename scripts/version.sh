#!/usr/bin/env bash
# Prints the package version, the one place it is written: src/plumber_agent/__init__.py's
# __version__ (setup.cfg reads it with `attr:`, `plumber-agent --version` prints it). The image
# tag is this version: the Makefile, build-image.sh and e2e-kind.sh tag with it, and the
# DaemonSet and manifests/kustomization.yaml name it (tests/test_repository.py checks they agree).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' src/plumber_agent/__init__.py)
if [ -z "$version" ]; then
  echo "version.sh: no __version__ = \"...\" line in src/plumber_agent/__init__.py" >&2
  exit 1
fi
echo "$version"
