"""Fixtures for the manifest tests: the repository's YAML, loaded once per session."""
from __future__ import annotations

from pathlib import Path

import pytest

from plumber_agent.sources import load_yaml_documents
from tests.helpers.paths import EXAMPLES_DIR, MANIFESTS_DIR, REPO_ROOT

REPO = REPO_ROOT
MANIFESTS = MANIFESTS_DIR
EXAMPLES = EXAMPLES_DIR
PACKAGED_EXAMPLES = REPO / "src" / "plumber_agent" / "examples"


def load_all(path: Path) -> list[dict]:
    """Read as kubectl does: a bare PCI address such as 0000:03:00.0 is text, not base 60."""
    return load_yaml_documents(path.read_text(encoding="utf-8"))


def crd_schema(crd: dict) -> dict:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def template_crd() -> dict:
    (crd,) = load_all(MANIFESTS / "crds" / "hostnetworktemplates.yaml")
    return crd


@pytest.fixture(scope="session")
def hostnetwork_crd() -> dict:
    (crd,) = load_all(MANIFESTS / "crds" / "hostnetworks.yaml")
    return crd


@pytest.fixture(scope="session")
def template_schema(template_crd) -> dict:
    return crd_schema(template_crd)


@pytest.fixture(scope="session")
def hostnetwork_schema(hostnetwork_crd) -> dict:
    return crd_schema(hostnetwork_crd)


@pytest.fixture(scope="session")
def example_docs() -> list[tuple[str, dict]]:
    """(file name, document) for every example template, in file order."""
    return [(path.name, doc) for path in sorted(EXAMPLES.glob("*.yaml")) for doc in load_all(path)]
