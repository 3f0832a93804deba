"""Rules about the repository itself, checked by tools so they cannot quietly rot: it stands on its
own (every cited design note is in docs/, no path outside the checkout, a LICENSE that matches the
metadata), `make help` lists every target, the code passes ruff, and the layering holds (import
contracts in .importlinter, also proven to catch a violation)."""
from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PITFALLS = REPO / "docs" / "pitfalls.md"
CITING_DIRS = ("src", "tests", "bench", "scripts")
TOOL_TIMEOUT_S = 120

# Spelled in pieces so this file does not match itself.
OUTSIDE_PATHS_ANYWHERE = ("/work" + "/shared", ".." + "/shared")
OUTSIDE_PATHS_IN_CODE = ("/work" + "/",) + OUTSIDE_PATHS_ANYWHERE

# "pitfall 3", "Pitfalls 1+2", "pitfalls 21-29", "pitfalls 23 and 29", "pitfall (1-9, 12)",
# "pitfalls.md 30-33".
CITATION = re.compile(r"pitfalls?(?:\.md)?\s*\(?\s*(\d+(?:\s*(?:-|\+|,|and)\s*\d+)*)", re.I)

# The license ids setup.cfg may name, and text their LICENSE file must contain.
LICENSE_TEXT = {"Apache-2.0": ("Apache License", "Version 2.0, January 2004")}


def _git_files() -> list[Path]:
    """Tracked files plus new ones not ignored (so a file is checked before it is committed)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout and the git command (to list the repository's files)")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True, timeout=TOOL_TIMEOUT_S).stdout
    return [REPO / name for name in sorted(set(out.decode().split("\0"))) if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for what is not a readable regular text file (a symlinked
    directory, a file deleted in the work tree, binary data)."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


def _numbers(cited: str) -> set[int]:
    numbers: set[int] = set()
    for part in re.split(r"\s*(?:\+|,|and)\s*", cited):
        low, _, high = part.partition("-")
        numbers.update(range(int(low), int(high or low) + 1))
    return numbers


def _listed_pitfalls() -> set[int]:
    text = PITFALLS.read_text(encoding="utf-8").split("## Bad inputs to try", 1)[0]
    return {int(n) for n in re.findall(r"(?m)^(\d+)\. ", text)}


def test_pitfalls_are_numbered_without_gaps():
    listed = _listed_pitfalls()
    assert listed == set(range(1, max(listed) + 1)), sorted(listed)


def test_every_cited_pitfall_is_written_down():
    listed = _listed_pitfalls()
    cited: dict[int, list[str]] = {}
    for top in CITING_DIRS:
        for path in sorted((REPO / top).rglob("*")):
            text = _text(path) if "__pycache__" not in path.parts else None
            for match in CITATION.finditer(text or ""):
                line = text.count("\n", 0, match.start()) + 1
                for number in _numbers(match.group(1)):
                    cited.setdefault(number, []).append(f"{path.relative_to(REPO)}:{line}")
    assert len(cited) > 20, f"the citation pattern found almost nothing: {cited}"
    missing = {n: where for n, where in cited.items() if n not in listed}
    assert not missing, f"cited but not in {PITFALLS.relative_to(REPO)}: {missing}"


def test_nothing_refers_to_paths_outside_the_repository():
    offenders = []
    for path in _git_files():
        text = _text(path)
        if text is None:
            continue
        needles = OUTSIDE_PATHS_ANYWHERE if path.suffix == ".md" else OUTSIDE_PATHS_IN_CODE
        for number, line in enumerate(text.splitlines(), 1):
            if any(needle in line for needle in needles):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_license_file_matches_the_metadata():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    license_id = config["metadata"]["license"]
    assert license_id in LICENSE_TEXT, f"setup.cfg names {license_id!r}: add its expected text here"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    for expected in LICENSE_TEXT[license_id]:
        assert expected in text


def test_make_help_lists_every_target():
    if shutil.which("make") is None:
        pytest.skip("needs the make command")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    rules = set(re.findall(r"(?m)^([A-Za-z0-9_-][A-Za-z0-9_.-]*)\s*:(?!=)", makefile))
    phony = set(re.search(r"(?m)^\.PHONY:(.*)$", makefile).group(1).split())
    assert rules == phony, f"not in .PHONY: {rules - phony}; .PHONY without a rule: {phony - rules}"
    listed = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=REPO,
                            capture_output=True, text=True, check=True,
                            timeout=TOOL_TIMEOUT_S).stdout
    shown = set(re.findall(r"(?m)^make (\S+) ", listed))
    assert shown == rules, f"not in `make help` (give it a `## what it does`): {rules - shown}"


# ---- linters -------------------------------------------------------------------------------


def _lint_imports() -> str:
    candidates = [Path(sys.executable).with_name("lint-imports"), shutil.which("lint-imports")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip("import-linter is not installed (pip install -e '.[test]')")


def _check_contracts(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the sources under root/src, whatever is installed."""
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    return subprocess.run([_lint_imports(), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=TOOL_TIMEOUT_S, check=False)


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_hold():
    result = _check_contracts(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _module_file(src: Path, dotted: str) -> Path:
    """The file to append an import to for a module or a package."""
    base = src.joinpath(*dotted.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"


def test_import_contracts_catch_violations(tmp_path):
    """Each contract breaks when a copy of the sources gets one forbidden import (so a contract
    that names a module wrongly, and therefore checks nothing, is noticed)."""
    shutil.copytree(REPO / "src" / "plumber_agent", tmp_path / "src" / "plumber_agent",
                    ignore=shutil.ignore_patterns("__pycache__", "examples"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    src = tmp_path / "src"
    probes = {  # new module -> the import it makes
        "plumber_agent.kube.probe_host": "import plumber_agent.host",
        "plumber_agent.probe_kubernetes": "import kubernetes",
        "plumber_agent.host.probe_pyroute2": "import pyroute2",
        "plumber_agent.probe_subprocess": "import subprocess",
        "plumber_agent.probe_cli": "import plumber_agent.cli",
    }
    for module, statement in probes.items():
        src.joinpath(*module.split(".")).with_suffix(".py").write_text(statement + "\n")
    appended = {"plumber_agent.planner": "import socket",
                "plumber_agent.agent": "import plumber_agent.probe_cli",
                "plumber_agent.fleet.aggregate": "import threading",
                "plumber_agent.interest": "import socket",
                "plumber_agent.models.keys": "import plumber_agent.pools.pool",
                "plumber_agent.kinds.base": "import plumber_agent.models.keys"}
    for module, statement in appended.items():
        with _module_file(src, module).open("a") as handle:
            handle.write(f"\n{statement}\n")
    result = _check_contracts(tmp_path)
    assert result.returncode != 0
    contracts = configparser.ConfigParser()
    contracts.read(REPO / ".importlinter")
    names = [contracts[section]["name"] for section in contracts.sections()
             if section.startswith("importlinter:contract:")]
    output = " ".join(result.stdout.split())  # lint-imports wraps long names
    kept = [name for name in names if f"{name} KEPT" in output]
    assert not kept, f"not broken by a forbidden import: {kept}\n{result.stdout}"
    assert output.count(" BROKEN") >= len(names), result.stdout


@pytest.mark.parametrize("contract, beside", [
    ("models-at-the-bottom", {"models", "kinds", "validation", "errors"}),
    ("kinds-are-declarations", {"kinds"}),
])
def test_bottom_contracts_name_every_other_module(contract, beside):
    """The contracts of the bottom layers (the models, the kinds registry) forbid every module
    of the agent but those beside them: a new module is above them only once it is added."""
    contracts = configparser.ConfigParser()
    contracts.read(REPO / ".importlinter")
    forbidden = set(contracts[f"importlinter:contract:{contract}"]["forbidden_modules"].split())
    package = REPO / "src" / "plumber_agent"
    modules = {f"plumber_agent.{path.stem}" for path in package.iterdir()
               if (path.suffix == ".py" and not path.stem.startswith("__"))
               or (path / "__init__.py").exists()}
    beside = {f"plumber_agent.{name}" for name in beside}
    assert modules - beside - forbidden == set(), f"add them to {contract}"
    assert {m for m in forbidden if m.startswith("plumber_agent.")} <= modules


# ---- the README's change points for a new kind --------------------------------------------

KIND_SECTION = ("**Adding a kind of host object**", "The kinds are coupled on purpose")
# What the README says is derived from KINDS, by the module that derives it.
DERIVED_FROM_KINDS = {
    "MERGERS": "desired/__init__.py", "DesiredState.is_empty": "desired/__init__.py",
    "PLANNERS": "planner/__init__.py", "CLEANUPS": "planner/__init__.py",
    "parent_of": "planner/context.py", "depth": "planner/context.py",
    "_REMOVING_VERBS": "planner/apipath.py", "_ROUTING_VERBS": "planner/apipath.py",
    "certainly_unchanged": "host/executor.py",
    "_INTERFACE_KINDS": "models/keys.py", "STACKED_KINDS": "status_builder.py",
    "network_spec_dict": "models/spec.py",
}


def _kind_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(KIND_SECTION[0])
    return text[start:text.index(KIND_SECTION[1], start)]


def test_readme_change_points_name_every_part_of_a_kind():
    """Every field of the registry's Kind, every API-path role and every table derived from
    KINDS is in the README's list, and the files it names exist: a new part of the
    declaration is documented, or this fails."""
    import dataclasses

    sys.path.insert(0, str(REPO / "src"))
    from plumber_agent.kinds import base

    section = _kind_section()
    named = set(re.findall(r"`([^`]+)`", section))
    fields = {field.name for field in dataclasses.fields(base.Kind)} - {"name", "doc"}
    assert fields - named == set(), "Kind fields the README does not name"
    roles = {name for name in dir(base) if getattr(base, name) in base.API_PATH_ROLES
             and name.isupper() and name != "API_PATH_ROLES"}
    assert roles - named == set(), "API-path roles the README does not name"
    package = REPO / "src" / "plumber_agent"
    for name, module in DERIVED_FROM_KINDS.items():
        assert f"`{name}`" in section, f"{name} is not in the README's derived list"
        source = (package / module).read_text(encoding="utf-8")
        assert "from plumber_agent.kinds import" in source, f"{module} does not derive {name}"
        assert name.rsplit(".", 1)[-1] in source, f"{name} is not in {module}"
    for path in named:
        if "<" in path or not path.endswith((".py", ".yaml")) or "/" not in path:
            continue
        assert (package / path).exists() or (REPO / path).exists(), f"README names {path}"


# ---- the image tag is the package version --------------------------------------------------


def _image_tags() -> dict[str, str]:
    """Every place that names the agent image's tag (or builds it), by where it is."""
    import yaml

    daemonset = next(d for d in yaml.safe_load_all(
        (REPO / "manifests" / "agent" / "daemonset.yaml").read_text(encoding="utf-8"))
        if d and d["kind"] == "DaemonSet")
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text(
        encoding="utf-8"))
    (image,) = [i for i in kustomization["images"] if i["name"] == "hostplumber/plumber-agent"]
    tags = {"manifests/agent/daemonset.yaml image": container["image"].rpartition(":")[2],
            "manifests/kustomization.yaml newTag": str(image["newTag"])}
    for script in ("scripts/version.sh",):
        tags[script] = subprocess.run(["bash", str(REPO / script)], capture_output=True,
                                      text=True, check=True, timeout=TOOL_TIMEOUT_S).stdout.strip()
    if shutil.which("make"):
        tags["make image IMAGE="] = subprocess.run(
            ["make", "-s", "--no-print-directory", "-n", "image"], cwd=REPO, capture_output=True,
            text=True, check=True, timeout=TOOL_TIMEOUT_S).stdout.split("IMAGE=", 1)[1].split()[0]\
            .rpartition(":")[2]
    return tags


def test_the_image_tag_is_the_version_plumber_agent_prints():
    """`plumber-agent --version` = the DaemonSet's tag = what `make image` builds: a release
    bumps __version__ and the manifests together, or this fails."""
    printed = subprocess.run([sys.executable, "-m", "plumber_agent", "--version"],
                             capture_output=True, text=True, check=True, timeout=TOOL_TIMEOUT_S,
                             env=dict(os.environ, PYTHONPATH=str(REPO / "src"))).stdout.split()
    assert printed[0] == "plumber-agent", printed
    version = printed[1]
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    assert config["metadata"]["version"] == "attr: plumber_agent.__version__", \
        "setup.cfg must read the version from the package, not repeat it"
    tags = _image_tags()
    assert tags == dict.fromkeys(tags, version), f"plumber-agent --version says {version}: {tags}"


def test_make_lint_names_a_missing_shellcheck_and_fails(tmp_path):
    """scripts/lint.sh (`make lint`) on a PATH with Python, lint-imports and dirname but no
    shellcheck: exit 2, the missing tool named with how to install it, nothing checked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tools = {"python3": sys.executable, "lint-imports": _lint_imports(),
             "dirname": shutil.which("dirname")}
    for name, target in tools.items():
        (bindir / name).symlink_to(target)
    proc = subprocess.run([shutil.which("bash"), str(REPO / "scripts" / "lint.sh")], cwd=REPO,
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False,
                          env=dict(os.environ, PATH=str(bindir), PYTHON="python3"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        "make lint: missing tools, nothing was checked:",
        "  - shellcheck (a system package; install: make deps, or apt-get install shellcheck)"]
    assert proc.stdout == ""  # no linter ran
