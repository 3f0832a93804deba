"""Property-based fuzzing of the spec validator (issue 7, item 2).

Invariants:
- parse_template_spec never lets an exception other than InvalidSpec escape, whatever JSON-like
  document it is given (arbitrary, or template-shaped with hostile values);
- every problem it reports names the path it is about (starts with "spec");
- whatever it ACCEPTS is safe for the host layer: every name that can reach a netlink call, a
  sysfs path or an ovs-vsctl argv satisfies the kernel's and ovs-vsctl's rules, every PCI address
  is in canonical dddd:bb:dd.f form, every number is in range. A validator that accepts a bad
  value is the bug these properties catch, not just a crash.
"""
from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plumber_agent.errors import InvalidSpec
from plumber_agent.host.ovs import check_ovs_name
from plumber_agent.models.lbridge_spec import expand
from plumber_agent.models.parse import parse_template_spec, template_from_object
from plumber_agent.models.spec import TemplateSpec
from plumber_agent.validation import check_ifname
from tests.security.strategies import (IFNAME_ALPHABET, NASTY_STRINGS, json_like, spec_shaped,
                                       valid_spec_raw)

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def kernel_accepts_ifname(name: str) -> bool:
    """The kernel's dev_valid_name() plus what we promise on top (ASCII, no leading '-')."""
    return (isinstance(name, str) and 0 < len(name) <= 15 and name not in (".", "..")
            and name.isascii() and not any(c in "/:" or c.isspace() or c == "\0" for c in name)
            and not name.startswith("-") and name.isprintable())


def parse_or_problems(raw):
    try:
        return parse_template_spec(raw), None
    except InvalidSpec as exc:
        return None, exc.problems


def assert_accepted_is_safe(spec: TemplateSpec) -> None:
    names = []
    for s in spec.sriov_config:
        if s.pf_name is not None:
            names.append(s.pf_name)
        if s.pci_addr is not None:
            assert s.pci_addr == s.pci_addr.lower() and len(s.pci_addr) == 12, s.pci_addr
        if s.num_vfs is not None:
            assert type(s.num_vfs) is int and 0 <= s.num_vfs <= 65535
        if s.vf_driver is not None:
            assert "/" not in s.vf_driver and "\n" not in s.vf_driver and \
                not s.vf_driver.startswith((".", "-"))
    for iface in spec.interface_config:
        names.append(iface.name)
        if iface.mtu is not None:
            assert type(iface.mtu) is int and 68 <= iface.mtu <= 65535
        for vlan in iface.vlan:
            assert type(vlan.id) is int and 1 <= vlan.id <= 4094
            names.append(vlan.ifname(iface.name))
        for fam, cfg in ((4, iface.ipv4), (6, iface.ipv6)):
            for cidr in (cfg.address if cfg else []):
                assert ipaddress.ip_interface(cidr).version == fam
    for ovs in spec.ovs_config:
        assert check_ovs_name(ovs.bridge_name) is None, ovs.bridge_name
        for part in ovs.interfaces():
            assert check_ovs_name(part) is None, part
            names.append(part)
    for bridge in spec.linux_bridge_config:
        names += [bridge.name] + [port.name for port in bridge.ports]
        for port in bridge.ports:
            assert all(1 <= vid <= 4094 for vid in expand(port.vlans())), port
    for family_routes in ((spec.routes.ipv4 + spec.routes.ipv6) if spec.routes else []):
        if family_routes.dev is not None:
            names.append(family_routes.dev)
    for name in names:
        assert kernel_accepts_ifname(name), f"accepted an unsafe interface name {name!r}"


def refused_with_paths_or_safe(raw) -> None:
    """Either refused with problems that each name their spec path, or accepted and safe."""
    spec, problems = parse_or_problems(raw)
    if spec is None:
        assert problems and all(isinstance(p, str) and p.startswith("spec") for p in problems)
    else:
        assert_accepted_is_safe(spec)


@FUZZ
@given(json_like)
def test_arbitrary_json_never_escapes_anything_but_invalid_spec(raw):
    refused_with_paths_or_safe(raw)


@FUZZ
@given(spec_shaped)
@example({"interfaceConfig": [{"name": "eth0", "vlan": [{"id": True}]}]})
@example({"ovsConfig": [{"bridgeName": "br0", "nodeInterface": "eth0,br0"}]})
@example({"ovsConfig": [{"bridgeName": ["x"], "nodeInterface": "eth0"}]})
@example({"nodeSelector": ["a"]})
@example({"linuxBridgeConfig": [{"name": "br0", "vlanFiltering": True, "ports": [
    {"name": "eth0", "pvid": 4094, "tagged": ["1-4094"]}, {"name": "eth1", "untagged": [" 7 "]},
    {"name": "eth2", "tagged": ["0x10", "1-", True, None, 1.5]}]}]})
@example({"linuxBridgeConfig": [{"name": "br0;x", "ports": "eth0"}, {"name": "br0", "ports": [
    {"name": "../etc"}, None, {"name": "br0"}]}]})
@example({"routes": {"ipv4": [{"dst": "10.0.0.0/8", "metric": True, "dev": "eth0"}]}})
@example({"interfaceConfig": [{"name": "eth0", "mtu": 1000, "ipv6": {"address": ["::2/64"]}}]})
def test_template_shaped_hostile_values_are_refused_with_paths_or_safe(raw):
    refused_with_paths_or_safe(raw)


@FUZZ
@given(valid_spec_raw)
def test_valid_specs_parse_and_are_safe(raw):
    spec, problems = parse_or_problems(raw)
    # The pool may produce duplicates the validator rightly refuses; either way no crash.
    if spec is not None:
        assert_accepted_is_safe(spec)
    else:
        assert all(p.startswith("spec") for p in problems)


@FUZZ
@given(st.one_of(st.text(alphabet=IFNAME_ALPHABET, max_size=20), st.sampled_from(NASTY_STRINGS),
                 json_like))
def test_check_ifname_accepts_only_kernel_safe_names(value):
    if check_ifname(value) is None:
        assert kernel_accepts_ifname(value), repr(value)
        assert check_ovs_name(value) is None or "," not in value  # ovs is stricter, never looser


@FUZZ
@given(json_like, json_like)
def test_template_from_object_never_raises(meta, spec):
    """API objects with odd metadata/spec are tolerated (the 'API objects' row of docs/pitfalls.md)."""
    template = template_from_object({"metadata": meta, "spec": spec})
    assert (template.spec is None) == bool(template.problems)
