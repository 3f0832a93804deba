"""Every template in manifests/examples/, applied as written on a node labelled to match.

The documents are read from the files (not copied here), so an example that stops working is a
failing test. Per document: the nodes its nodeSelector selects reach the state this target allows
(Applied; Failed with the kernel's 802.1Q message where VLANs cannot exist) and their hosts have
every part that can apply; every other node is NotSelected and untouched.

Two adjustments, both printed: a `kubernetes.io/hostname` value that names no node in this
cluster (kind nodes are not called 10.128.237.204) is replaced by the first node's hostname; and
08-routes.yaml is applied together with 05-interface-addresses.yaml, whose subnets its gateways
sit in (as the example's own comment says).
"""
from __future__ import annotations

import copy

import pytest

from tests.e2e.cluster import load_examples

pytestmark = [pytest.mark.e2e, pytest.mark.privileged]

HOSTNAME = "kubernetes.io/hostname"
EXAMPLES = load_examples()
PREREQUISITES = {"08-routes.yaml": ["05-interface-addresses.yaml"]}


def _doc(filename: str) -> list[dict]:
    return [copy.deepcopy(obj) for name, obj in EXAMPLES if name == filename]


def _target_hostname(steps, obj: dict) -> None:
    selector = obj["spec"].get("nodeSelector") or {}
    if HOSTNAME not in selector:
        return
    hostnames = {steps.cluster.hostname_label(n.name) for n in steps.nodes}
    if selector[HOSTNAME] not in hostnames:
        replacement = steps.cluster.hostname_label(steps.nodes[0].name)
        print(f"{obj['metadata']['name']}: nodeSelector {HOSTNAME}={selector[HOSTNAME]} names no "
              f"node here; using {replacement}")
        selector[HOSTNAME] = replacement


def test_examples_exist():
    assert len(EXAMPLES) >= 8, f"expected the seed README's templates in manifests/examples, got {EXAMPLES}"


@pytest.mark.parametrize("filename,obj", EXAMPLES,
                         ids=[f"{f}:{o['metadata']['name']}" for f, o in EXAMPLES])
def test_example_applied_as_written(steps, filename, obj):
    obj = copy.deepcopy(obj)
    docs = [d for pre in PREREQUISITES.get(filename, []) for d in _doc(pre)] + [obj]
    for doc in docs:
        _target_hostname(steps, doc)

    # Label the first node to match every label the selector asks for (hostname is its own).
    first = steps.nodes[0]
    selector = obj["spec"].get("nodeSelector") or {}
    labels = {k: v for k, v in selector.items() if k != HOSTNAME}
    if labels:
        steps.label(first.name, labels)
    selected = [n for n in steps.nodes
                if all(steps.api.node_labels(n.name).get(k) == v for k, v in selector.items())]
    assert selected, f"no node matches {selector} after labelling {first.name}"
    if selector:
        assert first in selected

    for doc in docs:
        steps.apply(doc)
    for node in selected:
        for doc in docs:
            steps.wait_applied(doc, node)
    for node in steps.nodes:
        if node not in selected:
            steps.wait_not_selected(node.name, obj["metadata"]["name"])
            steps.assert_at_baseline(node)
