"""models/codec.py: the plain encoder gives dataclasses-json's dict exactly, and the agent's
passes import neither dataclasses-json nor marshmallow (2 MiB per agent, README "Footprint"),
which still work, imported on first use."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from plumber_agent.errors import InvalidSpec
from plumber_agent.models.codec import plain_dict
from plumber_agent.models.parse import parse_template_spec
from plumber_agent.models.spec import TemplateSpec, network_spec_dict
from tests.helpers.agent_env import agent_env
from tests.helpers.paths import REPO_ROOT

CHILD_TIMEOUT_S = 120.0
EXAMPLES = sorted((REPO_ROOT / "src" / "plumber_agent" / "examples").glob("*.yaml"))

EVERY_PART = {
    "nodeSelector": {"kubernetes.io/hostname": "n1"},
    "sriovConfig": [{"pfName": "eno2", "numVfs": 4, "vfDriver": "vfio-pci", "mtu": 9000}],
    "interfaceConfig": [
        {"name": "eno1", "mtu": 9000, "vlan": [{"id": 100}, {"id": 200, "name": "v200"}],
         "ipv4": {"address": ["192.0.2.10/24"]},
         "ipv6": {"pool": {"cidr": "2001:db8::/64", "rangeStart": "2001:db8::10",
                           "rangeEnd": "2001:db8::20", "exclude": ["2001:db8::11"]}}}],
    "ovsConfig": [{"bridgeName": "br0", "nodeInterface": "eno3,eno4",
                   "params": {"mtuRequest": 9000, "bondMode": "active-backup"}}],
    "routes": {"ipv4": [{"dst": "198.51.100.0/24", "gw": "192.0.2.1", "metric": 10}],
               "ipv6": [{"dev": "eno1"}]},
    "allowApiServerDisruption": True,
    "rollout": {"maxUnavailable": "25%", "dryRun": True},
}


def _specs() -> list[TemplateSpec]:
    specs = [parse_template_spec(EVERY_PART), parse_template_spec({})]
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "HostNetworkTemplate":
                try:
                    specs.append(parse_template_spec(doc["spec"]))
                except InvalidSpec:  # an example of a refused template (04: unquoted pciAddr)
                    continue
    return specs


@pytest.mark.parametrize("index", range(len(_specs())))
def test_plain_dict_is_dataclasses_json_to_dict(index):
    spec = _specs()[index]
    assert plain_dict(spec) == spec.to_dict(encode_json=True)
    # ... and what the node's rollout state file keeps decodes back to the same spec
    assert TemplateSpec.from_network_dict(network_spec_dict(spec)) == spec.network_part()


def test_the_examples_are_all_read():
    assert len(_specs()) >= len(EXAMPLES)  # the valid examples and the two above


CHILD = """
import json, sys
from pathlib import Path
from plumber_agent.fleet.rollout import template_spec_hash
from plumber_agent.models.spec import TemplateSpec, network_spec_dict
from plumber_agent.ops import Metrics
from plumber_agent.reconciler import Reconciler
from tests.support.fakehost import API_SERVER_IP, ListSource, Node, make_template, seed_host

class Events:
    def emit(self, **kwargs):
        pass

spec = json.loads(sys.argv[2])
template = make_template("t", spec)
published = []
rec = Reconciler(host=Node(seed_host(), Path(sys.argv[1])).host, source=ListSource([template]),
                 publish=published.append, metrics=Metrics(), events=Events(),
                 api_server_ip=API_SERVER_IP)
outcome = rec.sync()
identity = template_spec_hash(template)
during = sorted(m for m in sys.modules if m.split(".")[0] in ("dataclasses_json", "marshmallow"))
back = TemplateSpec.from_network_dict(network_spec_dict(template.spec))
after = "dataclasses_json" in sys.modules and "marshmallow" in sys.modules
print(json.dumps({"ok": outcome.ok, "status": bool(published), "identity": identity,
                  "during": during, "after": after,
                  "same": back == template.spec.network_part()}))
"""


def test_a_pass_imports_neither_dataclasses_json_nor_marshmallow(tmp_path):
    spec = {"interfaceConfig": [{"name": "eno1", "mtu": 9000}],
            "rollout": {"maxUnavailable": 2}}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), json.dumps(spec)],
                         env=agent_env(), capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT_S, cwd=str(REPO_ROOT))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["ok"] and result["status"] and result["identity"]
    assert result["during"] == []
    # the first decode imports dataclasses-json (the check above can see it) and works
    assert result["after"] and result["same"]
