"""Local mode's template directory is read all or nothing (issue 20): a missing directory, a
file that does not parse, two files naming one template, metadata the API server would refuse,
YAML aliases and oversized files are errors naming the file, never "zero templates" (which
would undo everything) nor an Invalid stand-in (which would undo that file's template)."""
from __future__ import annotations

import os

import pytest

from plumber_agent.models.parse import template_from_object
from plumber_agent.sources import MAX_FILE_BYTES, DirectorySource, TemplateSourceError

GOOD = """apiVersion: plumber.k8s.pf9.io/v1
kind: HostNetworkTemplate
metadata:
  name: {name}
spec:
  interfaceConfig:
    - name: eth1
      mtu: {mtu}
"""


def _write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return path


def _problems(path) -> list[str]:
    with pytest.raises(TemplateSourceError) as info:
        DirectorySource(str(path), {})
    return info.value.problems


def test_a_missing_directory_is_an_error_not_zero_templates(tmp_path):
    problems = _problems(tmp_path / "no-such-dir")
    assert problems == [f"{tmp_path / 'no-such-dir'}: No such file or directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 directory anyway")
def test_an_unreadable_directory_is_an_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        assert _problems(locked) == [f"{locked}: Permission denied"]
    finally:
        locked.chmod(0o700)


def test_an_empty_directory_is_refused_unless_allowed(tmp_path):
    """An empty or unmounted directory is taken for a mistake: it would undo everything."""
    assert _problems(tmp_path) == [
        f"{tmp_path}: no HostNetworkTemplate found; nothing is undone (an empty or unmounted "
        "directory is taken for a mistake): to undo everything this agent applied, pass "
        "--allow-empty-templates"]
    _write(tmp_path, "other.yaml", "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n")
    assert len(_problems(tmp_path)) == 1  # other kinds only: still no template
    assert DirectorySource(str(tmp_path), {}, allow_empty=True).templates() == []


def test_emptying_a_running_agents_directory_keeps_the_last_good_templates(tmp_path):
    _write(tmp_path, "a.yaml", GOOD.format(name="a", mtu=1500))
    source = DirectorySource(str(tmp_path), {})
    (tmp_path / "a.yaml").unlink()
    assert source.changed() is False
    assert [t.name for t in source.templates()] == ["a"]
    assert "no HostNetworkTemplate found" in str(source.error)


def test_a_yaml_syntax_error_names_the_file_and_line_and_keeps_the_others_out(tmp_path):
    _write(tmp_path, "a.yaml", GOOD.format(name="a", mtu=1500))
    bad = _write(tmp_path, "b.yaml", GOOD.format(name="b", mtu=1500).replace("mtu: 1500",
                                                                               "mtu: [1500"))
    problems = _problems(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{bad}: line "), problems


def test_duplicate_template_names_name_both_files(tmp_path):
    first = _write(tmp_path, "a.yaml", GOOD.format(name="same", mtu=1500))
    second = _write(tmp_path, "b.yaml", GOOD.format(name="same", mtu=9000))
    assert _problems(tmp_path) == [f"{second}: template 'same' is also defined in {first}; "
                                   "a name may be used once"]


@pytest.mark.parametrize("metadata, expected", [
    ("  name: Bad_Name\n", "metadata.name: 'Bad_Name': a lowercase RFC 1123 subdomain"),
    ("  name: ''\n", "metadata.name: is required"),
    ("  name: ok\n  namespace: default\n", "metadata.namespace: not allowed on this type"),
    ("  name: ok\n  labels: {'a b': c}\n", "metadata.labels: label key 'a b' is not a valid"),
])
def test_invalid_metadata_is_refused_as_the_api_server_would(tmp_path, metadata, expected):
    text = GOOD.format(name="x", mtu=1500).replace("  name: x\n", metadata)
    path = _write(tmp_path, "t.yaml", text)
    problems = _problems(tmp_path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: {expected}"), problems


def test_cluster_mode_reads_metadata_through_the_same_check():
    template = template_from_object({"metadata": {"name": "Bad_Name"}, "spec": {}})
    assert template.spec is None
    assert template.problems[0].startswith("metadata.name: 'Bad_Name'")


def test_wrong_api_version_and_non_object_documents(tmp_path):
    wrong = _write(tmp_path, "a.yaml", GOOD.format(name="a", mtu=1500).replace("/v1", "/v2"))
    listed = _write(tmp_path, "b.yaml", "- just\n- a list\n")
    assert _problems(tmp_path) == [
        f"{wrong}: apiVersion: must be plumber.k8s.pf9.io/v1, not 'plumber.k8s.pf9.io/v2'",
        f"{listed}: not an object (a YAML map with kind, apiVersion, metadata and spec)"]


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """The 8 KB bomb of issue 20: nine levels of nine aliases would be 9**9 strings."""
    lines = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]"
                                   for i in range(1, 10)]
    path = _write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    problems = _problems(tmp_path)
    assert problems == [f"{path}: line 2, column 10: YAML aliases (*a0) are not accepted in "
                        "templates; write the value out"]


def test_a_file_above_the_api_servers_limit_is_refused_unread(tmp_path):
    path = _write(tmp_path, "big.yaml", "# " + "x" * MAX_FILE_BYTES + "\n")
    assert _problems(tmp_path) == [
        f"{path}: larger than {MAX_FILE_BYTES} bytes, the API server's limit for an object"]


def test_a_failed_reload_keeps_the_last_good_templates(tmp_path):
    path = _write(tmp_path, "a.yaml", GOOD.format(name="a", mtu=1500))
    source = DirectorySource(str(tmp_path), {})
    before = source.templates()
    path.write_text("{ not: yaml: at all\n")
    os.utime(path, ns=(1, 1))  # a different mtime whatever the clock's resolution
    assert source.changed() is False
    assert source.templates() == before and source.error is not None
    path.write_text(GOOD.format(name="a", mtu=9000))
    assert source.changed() is True and source.error is None
    assert source.templates()[0].spec.interface_config[0].mtu == 9000
