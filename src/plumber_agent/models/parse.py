"""HostNetworkTemplate spec validation: the explicit validator that builds models/spec.py's
dataclasses.

dataclasses-json (models/codec.py: imported on first use) does not type-check on load, so
`parse_template_spec` first walks the raw document, collecting *every* problem with its JSON
path, and only then builds the dataclasses from values it has checked and canonicalised.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from plumber_agent import validation as v
from plumber_agent.errors import InvalidSpec
from plumber_agent.models.drain_spec import validate_drain
from plumber_agent.kinds import spec_keys
from plumber_agent.models.bond_spec import parse_bonds
from plumber_agent.models.fleet import check_max_unavailable, offered_slots
from plumber_agent.models.ifref import canonical_ifref, check_ifref, is_reference
from plumber_agent.models.lbridge_spec import validate_linux_bridges
from plumber_agent.models.pool import Pool
from plumber_agent.models.vfattrs_spec import parse_vfs
from plumber_agent.models.spec import (AddressConfig, InterfaceConfig, OvsConfig, OvsParams,
                                       PoolConfig, RolloutConfig, RouteConfig, RoutesConfig,
                                       SriovConfig, Template, TemplateSpec, VlanConfig,
                                       kernel_metric)

MAX_LIST = 4096  # bounded work: no list in a template may be longer than this
MAX_POOL_ADDRESSES = 65_536  # addresses in a pool's rangeStart..rangeEnd (docs/address-pools.md)
MAX_POOL_EXCLUDES = 64



class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def check(self, path: str, problem: str | None) -> bool:
        if problem:
            self.add(path, problem)
            return False
        return True

    def objects(self, path: str, raw, keys: set[str], missing: str = "must be an object"):
        """(path, object) of each entry of the list `raw` at `path` that is an object; the
        others are reported (a null entry with `missing`), unknown keys too. Every list of
        objects in a spec is walked here, so its errors read the same everywhere."""
        for i, item in enumerate(_as_list(self, path, raw)):
            where = f"{path}[{i}]"
            m = _as_map(self, where, item, keys)
            if m is None:
                if item is None:
                    self.add(where, missing)
                continue
            yield where, m


# The keys each kind owns (kinds/<kind>.py spec_keys) and the template's own.
_SPEC_KEYS = spec_keys("")
_ROLLOUT_KEYS = spec_keys("rollout")
_SRIOV_KEYS = spec_keys("sriovConfig[]")
_IFACE_KEYS = spec_keys("interfaceConfig[]")
_VLAN_KEYS = spec_keys("interfaceConfig[].vlan[]")
_ADDR_KEYS = spec_keys("interfaceConfig[].ipv4") | spec_keys("interfaceConfig[].ipv6")
_POOL_KEYS = spec_keys("interfaceConfig[].ipv4.pool") | spec_keys("interfaceConfig[].ipv6.pool")
_OVS_KEYS = spec_keys("ovsConfig[]")
_PARAMS_KEYS = spec_keys("ovsConfig[].params")
_ROUTES_KEYS = spec_keys("routes")
_ROUTE_KEYS = spec_keys("routes.ipv4[]") | spec_keys("routes.ipv6[]")


def _unknown(p: _Problems, path: str, raw: dict, known: set[str]) -> None:
    for key in raw:
        if key not in known:
            p.add(f"{path}.{key}" if isinstance(key, str) else path, "unknown field")


def _as_map(p: _Problems, path: str, raw, known: set[str]) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        p.add(path, f"must be an object, not {type(raw).__name__}")
        return None
    _unknown(p, path, raw, known)
    return raw


def _as_list(p: _Problems, path: str, raw) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        p.add(path, f"must be a list, not {type(raw).__name__}")
        return []
    if len(raw) > MAX_LIST:
        p.add(path, f"has {len(raw)} entries; at most {MAX_LIST} are allowed")
        return []
    return raw


def _validate_sriov(p: _Problems, path: str, raw: dict) -> SriovConfig | None:
    before = len(p.items)
    forms = [name for name, present in (("pfName", "pfName" in raw), ("pciAddr", "pciAddr" in raw),
                                        ("vendorId+deviceId", "vendorId" in raw or "deviceId" in raw))
             if present]
    if len(forms) != 1:
        p.add(path, "exactly one of pfName, pciAddr or vendorId+deviceId must be given"
              + (f" (found {', '.join(forms)})" if forms else ""))
    if "pfName" in raw:
        p.check(f"{path}.pfName", check_ifref(raw["pfName"]))
    if "pciAddr" in raw:
        p.check(f"{path}.pciAddr", v.check_pci_addr(raw["pciAddr"]))
    if "vendorId" in raw or "deviceId" in raw:
        for key in ("vendorId", "deviceId"):
            if key not in raw:
                p.add(f"{path}.{key}", "is required with " + ("deviceId" if key == "vendorId" else "vendorId"))
            else:
                p.check(f"{path}.{key}", v.check_hex_id(raw[key]))
    if "numVfs" in raw:
        p.check(f"{path}.numVfs", v.check_int_range(raw["numVfs"], 0, v.NUMVFS_MAX))
    if "vfDriver" in raw:
        p.check(f"{path}.vfDriver", v.check_driver(raw["vfDriver"]))
    if "mtu" in raw:
        p.check(f"{path}.mtu", v.check_mtu(raw["mtu"]))
    vfs = parse_vfs(p, f"{path}.vfs", _as_list(p, f"{path}.vfs", raw.get("vfs")),
                    raw.get("numVfs") if v._is_int(raw.get("numVfs")) else None)
    if len(p.items) != before:
        return None
    return SriovConfig(
        pf_name=canonical_ifref(raw["pfName"]) if "pfName" in raw else None,
        pci_addr=v.normalise_pci_addr(raw["pciAddr"]) if "pciAddr" in raw else None,
        vendor_id=raw["vendorId"].lower() if "vendorId" in raw else None,
        device_id=raw["deviceId"].lower() if "deviceId" in raw else None,
        num_vfs=raw.get("numVfs"), vf_driver=raw.get("vfDriver"), mtu=raw.get("mtu"), vfs=vfs)


def _validate_addresses(p: _Problems, path: str, raw, family: int) -> AddressConfig | None:
    m = _as_map(p, path, raw, _ADDR_KEYS)
    if m is None:
        return None
    if "address" not in m and "pool" not in m:
        # What a server leaves after pruning a misspelt field; read as "no addresses wanted"
        # it would remove every address (the CRD refuses it too, with a CEL rule).
        p.add(path, f"an empty ipv{family} block would remove every IPv{family} address of the "
                    "interface: give address (an empty list to remove them all) or pool, or leave "
                    f"ipv{family} out to leave its addresses alone")
        return None
    out: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(_as_list(p, f"{path}.address", m.get("address"))):
        try:
            canon = v.canonical_interface_address(item, family)
        except ValueError as exc:
            p.add(f"{path}.address[{i}]", str(exc))
            continue
        problem = v.check_interface_ip(canon.split("/")[0])
        if problem:
            p.add(f"{path}.address[{i}]", problem)
            continue
        if canon in seen:
            p.add(f"{path}.address[{i}]", f"{item!r} is listed twice")
            continue
        seen.add(canon)
        out.append(canon)
    pool = _validate_pool(p, f"{path}.pool", m.get("pool"), family) if "pool" in m else None
    return AddressConfig(address=out, pool=pool)


def _pool_network(p: _Problems, path: str, value: Any, family: int):
    """The pool's CIDR, or None after reporting why not: a network of the family with no host
    bits (`192.168.50.7/24` is refused, not silently widened: the user meant something)."""
    if value is None:
        p.add(path, "is required")
        return None
    try:
        canon = v.canonical_interface_address(value, family)
    except ValueError as exc:
        p.add(path, str(exc).replace(" address", " network"))
        return None
    network = ipaddress.ip_network(canon, strict=False)
    if network.compressed != canon:
        p.add(path, f"{value!r} has host bits set; the network is {network.compressed}")
        return None
    problem = v.check_interface_network(network)
    if problem:
        p.add(path, problem)
        return None
    return network


def _pool_address(p: _Problems, path: str, value: Any, family: int, network) -> str | None:
    try:
        canon = v.canonical_ip(value, family)
    except ValueError as exc:
        p.add(path, str(exc))
        return None
    if network is not None and ipaddress.ip_address(canon) not in network:
        p.add(path, f"{canon} is outside {network.compressed}")
        return None
    return canon


def _pool_exclude(p: _Problems, path: str, value: Any, family: int) -> str | None:
    """An exclude entry: an address, or a network with no host bits, of the family."""
    try:
        if isinstance(value, str) and "/" in value:
            return v.canonical_network(value, family)
        return v.canonical_ip(value, family)
    except ValueError as exc:
        p.add(path, str(exc))
        return None


def _validate_pool(p: _Problems, path: str, raw: Any, family: int) -> PoolConfig | None:
    m = _as_map(p, path, raw, _POOL_KEYS)
    if m is None:
        if raw is None:
            p.add(path, "must be an object with a cidr")
        return None
    before = len(p.items)
    network = _pool_network(p, f"{path}.cidr", m.get("cidr"), family)
    ends = {key: _pool_address(p, f"{path}.{key}", m[key], family, network)
            for key in ("rangeStart", "rangeEnd") if m.get(key) is not None}
    excludes: list[str] = []
    raw_excludes = m.get("exclude")
    if isinstance(raw_excludes, list) and len(raw_excludes) > MAX_POOL_EXCLUDES:
        p.add(f"{path}.exclude", f"has {len(raw_excludes)} entries; at most "
                                 f"{MAX_POOL_EXCLUDES} are allowed")
    else:
        for i, item in enumerate(_as_list(p, f"{path}.exclude", raw_excludes)):
            canon = _pool_exclude(p, f"{path}.exclude[{i}]", item, family)
            if canon is not None:
                excludes.append(canon)
    if len(p.items) != before:
        return None
    config = PoolConfig(cidr=network.compressed, range_start=ends.get("rangeStart"),
                        range_end=ends.get("rangeEnd"), exclude=excludes)
    if config.range_start and config.range_end and \
            ipaddress.ip_address(config.range_start) > ipaddress.ip_address(config.range_end):
        p.add(f"{path}.rangeStart", f"{config.range_start} is after rangeEnd {config.range_end}")
        return None
    pool = Pool(config, family)
    if pool.range_size == 0:  # one end given, the other defaulted before it
        p.add(path, f"the range {pool.describe_range()} is empty: its start is after its end")
        return None
    if pool.range_size > MAX_POOL_ADDRESSES:
        p.add(path, f"the range {pool.describe_range()} has {pool.range_size} addresses; at most "
                    f"{MAX_POOL_ADDRESSES} are allowed: narrow it with rangeStart and rangeEnd")
        return None
    if pool.size == 0:
        p.add(path, f"no address of {pool.describe_range()} can be handed out: "
                    f"{pool.reserved_description()} and the exclude entries leave none")
        return None
    return config


def _named_by_reference(name: Any) -> bool:
    return isinstance(name, str) and check_ifref(name) is None and is_reference(name)


def _required(p: _Problems, path: str, value: Any, check) -> Any:
    """A required field: "is required" when absent, else `check`'s problem (the value back)."""
    if value is None:
        p.add(path, "is required")
    else:
        p.check(path, check(value))
    return value


def _validate_interface(p: _Problems, path: str, raw: dict) -> InterfaceConfig | None:
    before = len(p.items)
    name = _required(p, f"{path}.name", raw.get("name"), check_ifref)
    if isinstance(name, str) and check_ifref(name) is None:
        name = canonical_ifref(name)
    mtu = raw.get("mtu")
    if mtu is not None:
        p.check(f"{path}.mtu", v.check_mtu(mtu))
    vlans: list[VlanConfig] = []
    seen_ids: set[int] = set()
    for vpath, vm in p.objects(f"{path}.vlan", raw.get("vlan"), _VLAN_KEYS,
                               "must be an object with an id"):
        if "id" not in vm:
            p.add(f"{vpath}.id", "is required")
            continue
        if not p.check(f"{vpath}.id", v.check_vlan_id(vm["id"])):
            continue
        if vm["id"] in seen_ids:
            p.add(f"{vpath}.id", f"VLAN {vm['id']} is listed twice")
            continue
        seen_ids.add(vm["id"])
        vname = vm.get("name")
        if vname is not None and not p.check(f"{vpath}.name", v.check_ifname(vname)):
            continue
        vlan = VlanConfig(id=vm["id"], name=vname)
        if vname is None and _named_by_reference(name):
            p.add(f"{vpath}.name", "is required when the parent is named by reference: a name "
                                   "made from the kernel's name would change when it renames "
                                   "the NIC")
            continue
        if vname is None and isinstance(name, str) and len(vlan.ifname(name)) > v.IFNAME_MAX:
            p.add(vpath, f"the VLAN interface name {vlan.ifname(name)!r} would be longer than "
                         f"{v.IFNAME_MAX} characters; give it a shorter name")
            continue
        vlans.append(vlan)
    ipv4 = _validate_addresses(p, f"{path}.ipv4", raw.get("ipv4"), 4) if "ipv4" in raw else None
    ipv6 = _validate_addresses(p, f"{path}.ipv6", raw.get("ipv6"), 6) if "ipv6" in raw else None
    for family, config in ((4, ipv4), (6, ipv6)):
        if config is not None and config.pool is not None and _named_by_reference(name):
            p.add(f"{path}.ipv{family}.pool", "is not supported on an interface named by "
                                              "reference yet: name it by its kernel name")
    if ipv6 is not None and (ipv6.address or ipv6.pool) and v._is_int(mtu) and mtu < v.MTU_MIN_IPV6:
        p.add(f"{path}.mtu", f"{mtu} is below {v.MTU_MIN_IPV6}, the minimum for IPv6")
    if len(p.items) != before:
        return None
    return InterfaceConfig(name=name, mtu=mtu, vlan=vlans, ipv4=ipv4, ipv6=ipv6)


def _validate_ovs(p: _Problems, path: str, raw: dict) -> OvsConfig | None:
    before = len(p.items)
    bridge = raw.get("bridgeName")
    if bridge is None:
        p.add(f"{path}.bridgeName", "is required")
    else:
        p.check(f"{path}.bridgeName", v.check_ifname(bridge))
    node_interface = raw.get("nodeInterface")
    if node_interface is not None:
        if not isinstance(node_interface, str):
            p.add(f"{path}.nodeInterface", f"{node_interface!r} is not a string")
        else:
            parts = [part.strip() for part in node_interface.split(",")]
            for part in parts:
                p.check(f"{path}.nodeInterface", check_ifref(part))
            parts = [canonical_ifref(part) if check_ifref(part) is None else part
                     for part in parts]
            if len(set(parts)) != len(parts):
                p.add(f"{path}.nodeInterface", "lists an interface twice")
            if bridge in parts:
                p.add(f"{path}.nodeInterface", "cannot be the bridge itself")
    params = None
    pm = _as_map(p, f"{path}.params", raw.get("params"), _PARAMS_KEYS)
    if pm is not None:
        if "mtuRequest" in pm:
            p.check(f"{path}.params.mtuRequest", v.check_mtu(pm["mtuRequest"]))
        for key, allowed in (("bondMode", v.BOND_MODES), ("lacp", v.LACP_MODES),
                             ("datapathType", v.DATAPATH_TYPES)):
            if key in pm and pm[key] not in allowed:
                p.add(f"{path}.params.{key}", f"{pm[key]!r} is not one of {', '.join(allowed)}")
        if ("bondMode" in pm or "lacp" in pm) and isinstance(node_interface, str) \
                and len(node_interface.split(",")) < 2:
            p.add(f"{path}.params", "bondMode/lacp need two or more comma-separated nodeInterfaces")
        params = OvsParams(mtu_request=pm.get("mtuRequest"), bond_mode=pm.get("bondMode"),
                           lacp=pm.get("lacp"), datapath_type=pm.get("datapathType"))
    if len(p.items) != before:
        return None
    return OvsConfig(bridge_name=bridge, node_interface=",".join(parts) if node_interface
                     else None, params=params)


def _validate_route(p: _Problems, path: str, raw: dict, family: int) -> RouteConfig | None:
    before = len(p.items)
    out = RouteConfig()
    if raw.get("dst") is not None:
        try:
            out.dst = v.canonical_network(raw["dst"], family)
            if out.dst.endswith("/0"):
                out.dst = None  # 0.0.0.0/0 and ::/0 are the default route, as the kernel keeps it
        except ValueError as exc:
            p.add(f"{path}.dst", str(exc))
    for key, check in (("gw", v.check_gateway_ip), ("src", v.check_interface_ip)):
        if raw.get(key) is not None:
            try:
                canon = v.canonical_ip(raw[key], family)
            except ValueError as exc:
                p.add(f"{path}.{key}", str(exc))
                continue
            if p.check(f"{path}.{key}", check(canon) if not (key == "gw" and canon.startswith(
                    "fe80:")) else None):
                setattr(out, key, canon)
    if raw.get("dev") is not None:
        if p.check(f"{path}.dev", check_ifref(raw["dev"])):
            out.dev = canonical_ifref(raw["dev"])
    if raw.get("metric") is not None:
        if p.check(f"{path}.metric", v.check_int_range(raw["metric"], 0, 2**32 - 1)):
            out.metric = raw["metric"]
    if raw.get("gw") is None and raw.get("dev") is None:
        p.add(path, "a route needs a gw, a dev, or both")
    if len(p.items) != before:
        return None
    return out


def _validate_rollout(p: _Problems, path: str, raw: Any) -> RolloutConfig:
    m = _as_map(p, path, raw, _ROLLOUT_KEYS)
    if m is None:
        return RolloutConfig()
    out = RolloutConfig()
    if m.get("maxUnavailable") is not None:
        if p.check(f"{path}.maxUnavailable", check_max_unavailable(m["maxUnavailable"])):
            out.max_unavailable = m["maxUnavailable"]
    if m.get("dryRun") is not None:
        if isinstance(m["dryRun"], bool):
            out.dry_run = m["dryRun"]
        else:
            p.add(f"{path}.dryRun", f"{m['dryRun']!r} is not true or false")
    validate_drain(p.check, path, m, out)
    return out


def parse_template_spec(raw: Any, path: str = "spec") -> TemplateSpec:
    """Validate a raw spec and build the typed spec; raise InvalidSpec with every problem."""
    p = _Problems()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidSpec([f"{path}: must be an object"])
    _unknown(p, path, raw, _SPEC_KEYS)
    selector = raw.get("nodeSelector") or {}
    for problem in v.check_label_selector(selector):
        p.add(f"{path}.nodeSelector", problem)

    sriov = []
    for spath, m in p.objects(f"{path}.sriovConfig", raw.get("sriovConfig"), _SRIOV_KEYS):
        parsed = _validate_sriov(p, spath, m)
        if parsed:
            sriov.append(parsed)

    interfaces = []
    seen_names: dict[str, str] = {}  # name -> the entry's path
    for ipath, m in p.objects(f"{path}.interfaceConfig", raw.get("interfaceConfig"),
                              _IFACE_KEYS):
        parsed = _validate_interface(p, ipath, m)
        if parsed is None:
            continue
        if parsed.name in seen_names:
            p.add(f"{ipath}.name", f"{parsed.name!r} is already configured at "
                                   f"{seen_names[parsed.name]}")
            continue
        seen_names[parsed.name] = ipath
        interfaces.append(parsed)
    # A VLAN above its parent's MTU is refused when both are in this template.
    by_name = {iface.name: iface for iface in interfaces}
    for i, iface in enumerate(interfaces):
        for j, vlan in enumerate(iface.vlan):
            child = by_name.get(vlan.ifname(iface.name))
            if child and child.mtu and iface.mtu and child.mtu > iface.mtu:
                p.add(f"{seen_names[child.name]}.mtu",
                      f"{child.mtu} is above the MTU {iface.mtu} of its parent {iface.name}")

    ovs = []
    seen_bridges: set[str] = set()
    for opath, m in p.objects(f"{path}.ovsConfig", raw.get("ovsConfig"), _OVS_KEYS):
        parsed = _validate_ovs(p, opath, m)
        if parsed is None:
            continue
        if parsed.bridge_name in seen_bridges:
            p.add(f"{opath}.bridgeName", f"{parsed.bridge_name!r} is listed twice")
            continue
        seen_bridges.add(parsed.bridge_name)
        ovs.append(parsed)

    routes = None
    rm = _as_map(p, f"{path}.routes", raw.get("routes"), _ROUTES_KEYS)
    if rm is not None:
        routes = RoutesConfig()
        for family, key in ((4, "ipv4"), (6, "ipv6")):
            seen_dst: set[tuple] = set()
            for rpath, m in p.objects(f"{path}.routes.{key}", rm.get(key), _ROUTE_KEYS):
                parsed = _validate_route(p, rpath, m, family)
                if parsed is None:
                    continue
                ident = (parsed.dst, kernel_metric(family, parsed.metric))
                if ident in seen_dst:
                    p.add(rpath, f"a route to {parsed.dst or 'default'} is listed twice")
                    continue
                seen_dst.add(ident)
                getattr(routes, key).append(parsed)

    bonds = parse_bonds(p, f"{path}.bondConfig", raw.get("bondConfig"),
                        interfaces=interfaces, ovs=ovs)
    linux_bridges = validate_linux_bridges(p, f"{path}.linuxBridgeConfig",
                                           raw.get("linuxBridgeConfig"))
    allow = raw.get("allowApiServerDisruption", False)
    if not isinstance(allow, bool):
        p.add(f"{path}.allowApiServerDisruption", f"{allow!r} is not true or false")
    rollout = _validate_rollout(p, f"{path}.rollout", raw.get("rollout"))
    if p.items:
        raise InvalidSpec(p.items)
    return TemplateSpec(node_selector=dict(selector), sriov_config=sriov, interface_config=interfaces,
                        ovs_config=ovs, routes=routes, allow_api_server_disruption=bool(allow),
                        rollout=rollout, bond_config=bonds,
                        linux_bridge_config=linux_bridges)


def metadata_problems(obj: Any) -> list[str]:
    """What the API server refuses in a HostNetworkTemplate's metadata (customResourceValidator:
    ValidateObjectMetaAccessor with NameIsDNSSubdomain, cluster-scoped), path-annotated. In
    cluster mode the server has checked already; local mode reads files nobody checked, so it
    runs this same check and a template it would refuse is refused there too."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return ["metadata: must be an object with a name"]
    p = _Problems()
    p.check("metadata.name", v.check_dns_subdomain(meta.get("name")))
    if meta.get("namespace"):
        p.add("metadata.namespace", "not allowed on this type (HostNetworkTemplates are "
                                    "cluster-scoped)")
    labels = meta.get("labels")
    if labels is not None:
        for problem in v.check_label_selector(labels):
            p.add("metadata.labels", problem)
    return p.items


def template_from_object(obj: dict) -> Template:
    """Build a Template from an API object (a plain dict); never raises on a bad spec."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    name = str(meta.get("name", ""))
    generation = meta.get("generation") if isinstance(meta.get("generation"), int) else 0
    try:
        spec = parse_template_spec(obj.get("spec") if isinstance(obj, dict) else None)
        problems: list[str] = []
    except InvalidSpec as exc:
        spec, problems = None, exc.problems
    meta_problems = metadata_problems(obj)
    if meta_problems:
        spec, problems = None, meta_problems + problems
    status = obj.get("status") if isinstance(obj, dict) else None
    status = status if isinstance(status, dict) else {}
    return Template(name=name, generation=generation,
                    creation_timestamp=str(meta.get("creationTimestamp") or ""),
                    spec=spec, problems=problems, uid=str(meta.get("uid") or ""),
                    offered=offered_slots(obj))

