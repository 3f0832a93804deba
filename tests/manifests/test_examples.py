"""The example templates: the seed README's, faithfully; accepted by the CRD schema; parsed by the
agent; packaged with the agent unchanged."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from plumber_agent.sources import load_yaml_documents

from plumber_agent.errors import InvalidSpec
from plumber_agent.models.parse import parse_template_spec, template_from_object
from tests.manifests.conftest import EXAMPLES, PACKAGED_EXAMPLES, REPO
from tests.manifests.k8s_schema import validation_errors

# The original README's templates, verbatim (docs/original-examples.md says where they came from).
SEED_EXAMPLES = REPO / "docs" / "original-examples.md"


def test_there_are_examples(example_docs):
    assert len(example_docs) == 11
    assert {doc["kind"] for _, doc in example_docs} == {"HostNetworkTemplate"}


def test_examples_are_accepted_by_the_schema(template_schema, example_docs):
    for name, doc in example_docs:
        assert validation_errors(template_schema, doc) == [], name


def test_examples_parse_in_the_agent(example_docs):
    for name, doc in example_docs:
        template = template_from_object(doc)
        assert template.problems == [], name
        assert template.spec is not None


def test_example_values_survive_parsing(example_docs):
    """Spot checks that the examples mean what the README says."""
    by_name = {(f, d["metadata"]["name"]): parse_template_spec(d["spec"]) for f, d in example_docs}
    combined = by_name[("01-hostconfig-kernel-eno2.yaml", "hostconfig-kernel-eno2")]
    assert combined.sriov_config[0].selector() == ("pfName", "eno2")
    assert combined.sriov_config[0].num_vfs == 4
    assert [v.ifname("eno2") for v in combined.interface_config[0].vlan] == [
        "eno2.1000", "eno2.1001", "eno2.1002"]
    assert combined.ovs_config[0].interfaces() == ["eno2.1000"]
    by_pci = by_name[("04-sriovconfig-pciaddr.yaml", "hostnetworktemplate-sample")]
    assert [s.selector() for s in by_pci.sriov_config] == [("pciAddr", "0000:03:00.0"),
                                                          ("pciAddr", "0000:03:00.1")]
    by_id = by_name[("03-sriovconfig-vendor-device.yaml", "hostnetworktemplate-1528-dev")]
    assert by_id.sriov_config[0].selector() == ("vendorDevice", "8086:1528")
    routes = by_name[("08-routes.yaml", "routes-enp3")].routes
    assert [(r.dst, r.gw, r.dev, r.metric) for r in routes.ipv4] == [
        ("10.20.0.0/16", "192.168.195.1", "enp3s0f1", None),
        ("10.30.0.0/16", "192.168.196.1", None, 200)]
    assert routes.ipv6[0].dst == "fd00:20::/48"
    bond = by_name[("10-bond.yaml", "bond-enp3")]
    assert [(b.name, b.mode, b.members, b.settings()) for b in bond.bond_config] == [
        ("bond0", "active-backup", ["enp3s0f0", "enp3s0f1"],
         {"mode": "active-backup", "miimon": 100, "primary": "enp3s0f0"})]
    assert bond.interface_config[0].name == "bond0" and bond.interface_config[0].mtu == 9000
    (bridge,) = by_name[("09-linux-bridge-vlans.yaml", "linux-bridge-vlans")].linux_bridge_config
    assert (bridge.name, bridge.stp, bridge.vlan_filtering) == ("br-vlans", False, True)
    assert [(p.name, p.vlans()) for p in bridge.ports] == [
        ("enp3s0f0", ["10 pvid untagged"]), ("enp3s0f1", ["100-199"])]


def test_packaged_examples_are_the_manifests_examples():
    """The examples exist once: the package's examples/ is a symlink to manifests/examples, not a
    copy that could drift."""
    assert PACKAGED_EXAMPLES.is_symlink()
    assert PACKAGED_EXAMPLES.resolve() == EXAMPLES.resolve()
    assert list(PACKAGED_EXAMPLES.glob("*.yaml")), "the symlink resolves to no examples"


def test_bare_pci_address_is_a_yaml_trap_the_agent_avoids():
    """PyYAML's YAML 1.1 reads a bare 0000:03:00.0 (as the seed writes it) as the base-60 number
    180.0; the agent's loader reads it as text, and a number that does reach the validator is
    refused with a path instead of being misread."""
    text = "sriovConfig:\n  - pciAddr: 0000:03:00.0\n    numVfs: 32\n"
    assert yaml.safe_load(text)["sriovConfig"][0]["pciAddr"] == 180.0
    raw = load_yaml_documents(text)[0]
    assert parse_template_spec(raw).sriov_config[0].pci_addr == "0000:03:00.0"
    with pytest.raises(InvalidSpec) as caught:
        parse_template_spec(yaml.safe_load(text))
    assert any(p.startswith("spec.sriovConfig[0].pciAddr:") for p in caught.value.problems)


# ----------------------------------------------------------------------------------------------
# Fidelity to the seed README


def _code_blocks(text: str) -> list[str]:
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            if fenced:
                blocks.append("\n".join(current))
            current, fenced = [], not fenced
        elif fenced:
            current.append(line)
    # The first example is an indented (4 spaces) markdown code block.
    indented = re.findall(r"(?m)((?:^    .*\n|^\s*\n)+)", text)
    blocks.extend("\n".join(line[4:] for line in chunk.splitlines()) for chunk in indented)
    return blocks


def _templates_in(text: str) -> list[dict]:
    found = []
    for block in _code_blocks(text):
        try:
            docs = list(yaml.load_all(block, Loader=yaml.BaseLoader))
        except yaml.YAMLError:
            continue
        found.extend(d for d in docs if isinstance(d, dict) and d.get("kind") == "HostNetworkTemplate")
    return found


BEYOND_SEED = ("routes-enp3", "linux-bridge-vlans", "bond-enp3")  # not in the seed README


def test_examples_are_the_seed_readme_templates():
    """Every template of the seed README is an example, unchanged but for lower-cased names
    (BaseLoader: all scalars as text, so quoting a PCI address is no change)."""
    seed = _templates_in(SEED_EXAMPLES.read_text(encoding="utf-8"))
    assert len(seed) == 8
    for doc in seed:
        doc["metadata"]["name"] = doc["metadata"]["name"].lower()
    ours = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        ours.extend(yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader))
    new = [d for d in ours if d["metadata"]["name"] == "routes-enp3"]
    assert len(new) == 1 and "routes" in new[0]["spec"]
    bridges = [d for d in ours if d["metadata"]["name"] == "linux-bridge-vlans"]
    assert len(bridges) == 1 and "linuxBridgeConfig" in bridges[0]["spec"]
    bonds = [d for d in ours if d["metadata"]["name"] == "bond-enp3"]
    assert len(bonds) == 1 and "bondConfig" in bonds[0]["spec"]
    rest = [d for d in ours if d["metadata"]["name"] not in BEYOND_SEED]
    key = lambda d: yaml.safe_dump(d, sort_keys=True)  # noqa: E731
    assert sorted(map(key, rest)) == sorted(map(key, seed))


BUILD_TIMEOUT_S = 120


def test_examples_are_packaged_with_the_agent(tmp_path):
    """setup.cfg's package_data ships examples/*.yaml (what the image's pip install gets)."""
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib",
                             str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    built = sorted(p.name for p in (tmp_path / "plumber_agent" / "examples").glob("*.yaml"))
    assert built == sorted(p.name for p in EXAMPLES.glob("*.yaml"))
