"""Open vSwitch bridges and ports through `ovs-vsctl` (the only module that runs OVS commands).

Why ovs-vsctl: it is installed wherever OVS is, and HostPlumber does not install OVS. Its traps,
each handled here (see docs/pitfalls.md 30-33 and docs/environment.md):
- it waits forever for a dead ovs-vswitchd: always `--timeout=N`, plus a subprocess timeout a
  little longer in case ovs-vsctl itself is stuck;
- a bridge or port that ovs-vswitchd could not set up stays in the database and ovs-vsctl still
  exits 0 ("Error detected while setting up ..." on stderr): every change is verified by re-reading
  the Interface rows (`ofport` must be a real port number, `error` carries OVS's reason);
- a port whose netdev disappeared keeps `ofport -1`;
- a timed-out transaction may still commit: every change is idempotent and re-reads first;
- cleanup must only touch what we created: everything we create is tagged
  `external_ids:plumber-managed=true`, untagged bridges and ports are never modified or deleted.

A row is created with a plain `add-br`/`add-port`/`add-bond` (no `--may-exist`) in the same
transaction as its tag, so a bridge or port someone else created in the meantime makes the
transaction fail instead of being tagged as ours; we then re-read and treat it as pre-existing.
Rows we already own are updated with `--may-exist`.

Every name is validated again here before it reaches an argv (defence in depth behind the spec
validator); the argv is always a list, never a shell.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import re
import subprocess
from dataclasses import dataclass, field
from typing import Callable, NoReturn, Optional

from plumber_agent.errors import HostError, HostTimeout, InvalidSpec, NotAvailable, Refused
from plumber_agent.models.observed import (OVS_MANAGED_KEY, OVS_MANAGED_VALUE, ObservedBridge,
                                           ObservedOvsInterface, ObservedOvsPort)
from plumber_agent.validation import (BOND_MODES, DATAPATH_TYPES, LACP_MODES, check_ifname,
                                      check_mtu, require)

log = logging.getLogger(__name__)

DEFAULT_DB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_TIMEOUT_S = 10.0
# ovs-vsctl enforces --timeout itself (SIGALRM); the subprocess bound is a backstop for an
# ovs-vsctl that is stuck anyway (e.g. stopped), slightly larger so OVS's own message wins.
SUBPROCESS_GRACE_S = 2.0
MANAGED_KEY = OVS_MANAGED_KEY
MANAGED_VALUE = OVS_MANAGED_VALUE
MANAGED_TAG = f"external_ids:{MANAGED_KEY}={MANAGED_VALUE}"
# ovs-vsctl exits through SIGALRM when --timeout expires: 142 from a shell, -14 from Python.
_ALARM_EXIT_CODES = (-14, 128 + 14)
# Characters that mean something to ovs-vsctl's argument parser (option prefix, set/map syntax,
# remote lists) and must never appear in a name, even if check_ifname were ever loosened.
_NAME_FORBIDDEN_CHARS = frozenset(",=:\"'`[]{}()\\")
_UNIX_DB_PATH_RE = re.compile(r"^/[A-Za-z0-9_./@+-]*$")
_TCP_DB_RE = re.compile(
    r"^(?:tcp|ssl):(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
    r":(\d{1,5})$")

Runner = Callable[[list, float], "subprocess.CompletedProcess[str]"]


def run_subprocess(argv: list, timeout_s: float) -> "subprocess.CompletedProcess[str]":
    """The real runner: argv list, no shell, output captured, bounded in time."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                          stdin=subprocess.DEVNULL)


def check_ovs_name(value) -> Optional[str]:
    """A bridge/port/interface name: a netdev name, and nothing ovs-vsctl would parse."""
    problem = check_ifname(value)
    if problem:
        return problem
    if value.startswith("-"):
        return f"{value!r} starts with '-' (ovs-vsctl would read it as an option)"
    bad = sorted({c for c in value if c in _NAME_FORBIDDEN_CHARS or c.isspace()})
    if bad:
        return f"{value!r} contains characters ovs-vsctl interprets: {''.join(bad)!r}"
    return None


def check_ovsdb_remote(db) -> Optional[str]:
    """`unix:/absolute/path` (no '..' components) or `tcp:HOST:PORT` / `ssl:HOST:PORT`."""
    if not isinstance(db, str) or not db:
        return f"{db!r} is not an OVSDB remote"
    if db.startswith("unix:"):
        path = db[len("unix:"):]
        if not path.startswith("/"):
            return f"{db!r}: the socket path must be absolute (unix:/var/run/openvswitch/db.sock)"
        if ".." in path.split("/"):
            return f"{db!r}: '..' is not allowed in the socket path"
        if not _UNIX_DB_PATH_RE.match(path) or len(path) > 107:
            return f"{db!r}: the socket path has characters other than A-Z a-z 0-9 _ . / @ + -"
        return None
    match = _TCP_DB_RE.match(db)
    if match:
        if not 1 <= int(match.group(1)) <= 65535:
            return f"{db!r}: port {match.group(1)} is outside 1..65535"
        return None
    return (f"{db!r} is not an OVSDB remote (unix:/absolute/path.sock, tcp:HOST:PORT or "
            "ssl:HOST:PORT)")


# --- OVSDB JSON (RFC 7047) decoding ---------------------------------------------------------

def _atoms(value) -> list:
    """A column value as a list: ["set", [...]] or a single atom (a 1-element set)."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return list(value[1])
    return [value]


def _optional(value):
    """An optional column (a set of 0 or 1 atoms) as the atom or None."""
    atoms = _atoms(value)
    return atoms[0] if atoms else None


def _map(value) -> dict:
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {str(k): str(v) for k, v in value[1]}
    return {}


def _uuid(value) -> str:
    if isinstance(value, list) and len(value) == 2 and value[0] == "uuid":
        return value[1]
    raise ValueError(f"not a uuid: {value!r}")


def _int_or_none(value) -> Optional[int]:
    atom = _optional(value)
    return atom if isinstance(atom, int) and not isinstance(atom, bool) else None


def _rows(table: dict) -> list[dict]:
    headings = table["headings"]
    return [dict(zip(headings, row)) for row in table["data"]]


@dataclass
class _Snapshot:
    """One consistent read of the Bridge, Port and Interface tables."""

    bridges: dict[str, ObservedBridge] = field(default_factory=dict)
    port_bridge: dict[str, str] = field(default_factory=dict)  # port name -> bridge name
    ports: dict[str, ObservedOvsPort] = field(default_factory=dict)
    interfaces: dict[str, ObservedOvsInterface] = field(default_factory=dict)
    interface_errors: dict[str, str] = field(default_factory=dict)
    interface_mtu: dict[str, Optional[int]] = field(default_factory=dict)


def _is_managed(external_ids: dict) -> bool:
    return external_ids.get(MANAGED_KEY) == MANAGED_VALUE


class Ovs:
    """The OVS driver over ovs-vsctl. `runner` is the seam tests may replace (argv, timeout_s)."""

    def __init__(self, db: Optional[str] = None, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 vsctl: str = "ovs-vsctl"):
        self.db = DEFAULT_DB if db is None else db
        problem = check_ovsdb_remote(self.db)
        if problem:
            raise InvalidSpec([f"ovsdb: {problem}"])
        if (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                or not math.isfinite(timeout_s) or timeout_s <= 0):
            raise InvalidSpec([f"ovs timeout_s: {timeout_s!r} is not a positive number"])
        if not isinstance(vsctl, str) or not vsctl or vsctl.startswith("-"):
            raise InvalidSpec([f"ovs-vsctl path: {vsctl!r} is not a program path"])
        self.timeout_s = float(timeout_s)
        self.vsctl = vsctl
        self.runner: Runner = run_subprocess

    # --- the one chokepoint every OVS command goes through ---------------------------------

    def _unreachable(self, why: str) -> NotAvailable:
        return NotAvailable(f"Open vSwitch is not reachable at {self.db}: {why}; "
                            "HostPlumber does not install OVS")

    def _run(self, args: list[str], *, change: bool) -> subprocess.CompletedProcess:
        """Run `ovs-vsctl --db=DB --timeout=N ARGS`; map failures onto our error types.

        Reads that time out mean OVS is unreachable (NotAvailable); changes that time out are a
        HostTimeout (the change may still commit later: callers re-read before acting)."""
        vsctl_timeout = max(1, math.ceil(self.timeout_s))
        argv = [self.vsctl, f"--db={self.db}", f"--timeout={vsctl_timeout}", *args]
        shown = " ".join(args)
        if change:
            log.info("ovs-vsctl %s", shown)
        try:
            result = self.runner(argv, vsctl_timeout + SUBPROCESS_GRACE_S)
        except FileNotFoundError as exc:
            raise self._unreachable(f"{self.vsctl} is not installed ({exc.strerror or exc})")
        except PermissionError as exc:
            raise self._unreachable(f"cannot run {self.vsctl} ({exc.strerror or exc})")
        except subprocess.TimeoutExpired:
            return self._timed_out(shown, change=change, detail="ovs-vsctl did not exit")
        stderr = (result.stderr or "").strip()
        if result.returncode in _ALARM_EXIT_CODES or "Alarm clock" in stderr:
            return self._timed_out(shown, change=change, detail=stderr)
        if result.returncode != 0:
            if "database connection failed" in stderr:
                raise self._unreachable(stderr.removeprefix("ovs-vsctl: "))
            raise HostError(f"ovs-vsctl {shown} failed: {stderr or f'exit {result.returncode}'}")
        return result

    def _timed_out(self, shown: str, *, change: bool, detail: str) -> NoReturn:
        limit = max(1, math.ceil(self.timeout_s))
        if not change:
            raise self._unreachable(f"ovs-vsctl timed out after {limit} s (ovsdb-server is "
                                    "not answering)")
        raise HostTimeout(f"ovs-vsctl {shown} did not finish within {limit} s: ovs-vswitchd or "
                          f"ovsdb-server at {self.db} is not responding (is ovs-vswitchd running?);"
                          " the change may still be applied and is re-checked next time"
                          + (f" [{detail}]" if detail and "Alarm clock" not in detail else ""))

    # --- reading ------------------------------------------------------------------------------

    def _snapshot(self) -> _Snapshot:
        socket_path = self.db[len("unix:"):] if self.db.startswith("unix:") else None
        if socket_path and not os.path.exists(socket_path) and shutil.which(self.vsctl):
            # No socket, no ovsdb-server: say so without spawning ovs-vsctl on every discovery
            # (a missing ovs-vsctl is left to _run, which says that OVS is not installed).
            raise self._unreachable(f"{socket_path} does not exist (is ovsdb-server running?)")
        result = self._run(["--format=json",
                            "--", "--columns=name,datapath_type,external_ids,ports", "list",
                            "Bridge",
                            "--", "--columns=_uuid,name,interfaces,bond_mode,lacp,external_ids",
                            "list", "Port",
                            "--", "--columns=_uuid,name,type,ofport,mtu_request,mtu,"
                            "external_ids,error", "list", "Interface"], change=False)
        try:
            tables = _decode_tables(result.stdout, 3)
            return _build_snapshot(*tables)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise HostError(f"could not parse ovs-vsctl output ({exc}): "
                            f"{result.stdout[:200]!r}") from None

    def discover(self) -> dict[str, ObservedBridge]:
        """All bridges with their ports and interfaces (sorted by name, for stable comparison).
        Raises NotAvailable when OVS is not installed or not reachable."""
        return self._snapshot().bridges

    def is_managed(self, name: str) -> bool:
        """Is bridge `name` there and tagged as created by HostPlumber? False for a pre-existing
        (untagged) bridge, which ensure_bridge leaves alone and delete_bridge refuses."""
        self._require_name(name, "bridge name")
        bridge = self._snapshot().bridges.get(name)
        return bridge is not None and _is_managed(bridge.external_ids)

    def is_port_managed(self, port: str) -> bool:
        """Is port `port` there and tagged as created by HostPlumber?"""
        self._require_name(port, "port name")
        observed = self._snapshot().ports.get(port)
        return observed is not None and _is_managed(observed.external_ids)

    # --- bridges ------------------------------------------------------------------------------

    def ensure_bridge(self, name: str, datapath_type: Optional[str] = None) -> None:
        """Create bridge `name` (tagged as ours) or update our bridge's datapath_type; leave a
        pre-existing untagged bridge as it is (Refused if it conflicts with datapath_type).
        Verified: raises HostError with OVS's reason when ovs-vswitchd could not set it up."""
        self._require_name(name, "bridge name")
        if datapath_type is not None and datapath_type not in DATAPATH_TYPES:
            raise InvalidSpec([f"datapathType: {datapath_type!r} is not one of "
                               f"{', '.join(DATAPATH_TYPES)}"])
        settings = [f"datapath_type={datapath_type}"] if datapath_type else []
        snapshot = self._snapshot()
        result = None
        created = False
        if name not in snapshot.bridges:
            try:
                result = self._run(["add-br", name, "--", "set", "Bridge", name, MANAGED_TAG,
                                    *settings], change=True)
                created = True
            except HostError as exc:
                if isinstance(exc, HostTimeout) or "already exists" not in str(exc):
                    raise
                snapshot = self._snapshot()  # created meanwhile by someone else: re-read
                if name not in snapshot.bridges:
                    raise  # the name is taken by a port or interface elsewhere
        if result is None:
            bridge = snapshot.bridges[name]
            if _is_managed(bridge.external_ids):
                if settings and bridge.datapath_type != datapath_type:
                    result = self._run(["--may-exist", "add-br", name, "--", "set", "Bridge",
                                        name, *settings], change=True)
            elif datapath_type and (bridge.datapath_type or "system") != datapath_type:
                raise Refused(f"bridge {name} exists with datapath_type "
                              f"{bridge.datapath_type or 'system'} and was not created by "
                              f"HostPlumber; not changing it to {datapath_type}")
        try:
            self._verify_bridge(name, result.stderr if result is not None else "")
        except HostError:
            if created:
                # ovs-vsctl exits 0 and leaves the row behind when ovs-vswitchd cannot set the
                # bridge up; a failed create must not leave a half-made bridge that no ledger
                # record owns (it would never be cleaned up).
                self._run(["--if-exists", "del-br", name], change=True)
            raise

    def _verify_bridge(self, name: str, stderr: str) -> None:
        snapshot = self._snapshot()
        if name not in snapshot.bridges:
            raise HostError(f"bridge {name} is not in the OVS database after adding it")
        local = snapshot.interfaces.get(name)
        ofport = local.ofport if local is not None else None
        if ofport is None or ofport < 0:
            reason = (snapshot.interface_errors.get(name) or _setup_error(stderr)
                      or "ovs-vswitchd did not create it")
            hint = ""
            if (snapshot.bridges[name].datapath_type or "system") == "system":
                hint = (" (datapath_type system needs the openvswitch kernel module; "
                        "datapath_type netdev is the userspace datapath)")
            raise HostError(f"bridge {name} is in the OVS database but ovs-vswitchd could not "
                            f"set it up: {reason}{hint}")

    def delete_bridge(self, name: str) -> None:
        """Delete our bridge (absent is fine). Refused for a bridge we did not create, or one that
        holds ports we did not create (deleting the bridge would delete them)."""
        self._require_name(name, "bridge name")
        bridge = self._snapshot().bridges.get(name)
        if bridge is None:
            return
        if not _is_managed(bridge.external_ids):
            raise Refused(f"bridge {name} was not created by HostPlumber; not deleting it")
        foreign = [p.name for p in bridge.ports
                   if p.name != name and not _is_managed(p.external_ids)]
        if foreign:
            raise Refused(f"bridge {name} holds ports not created by HostPlumber "
                          f"({', '.join(foreign)}); not deleting it")
        self._run(["--if-exists", "del-br", name], change=True)

    # --- ports --------------------------------------------------------------------------------

    def ensure_port(self, bridge: str, port: str, interfaces: list[str],
                    bond_mode: Optional[str] = None, lacp: Optional[str] = None,
                    mtu_request: Optional[int] = None) -> None:
        """One interface: a plain port named after it (`port` must equal it). Two or more: a bond
        named `port`. bond_mode/lacp (Port) and mtu_request (each Interface) are set when given.
        Our port is updated (rebuilt when its interfaces or bridge changed); a pre-existing
        untagged port is left alone and Refused if it differs. Verified: every interface must
        have a real ofport (a missing netdev gives ofport -1)."""
        self._require_name(bridge, "bridge name")
        self._require_name(port, "port name")
        interfaces = self._require_interfaces(port, interfaces)
        if bond_mode is not None and bond_mode not in BOND_MODES:
            raise InvalidSpec([f"bondMode: {bond_mode!r} is not one of {', '.join(BOND_MODES)}"])
        if lacp is not None and lacp not in LACP_MODES:
            raise InvalidSpec([f"lacp: {lacp!r} is not one of {', '.join(LACP_MODES)}"])
        if mtu_request is not None:
            require(check_mtu, mtu_request, "mtuRequest")

        snapshot = self._snapshot()
        if bridge not in snapshot.bridges:
            raise HostError(f"cannot add port {port}: bridge {bridge} does not exist")
        port_settings = [f"bond_mode={bond_mode}"] if bond_mode else []
        port_settings += [f"lacp={lacp}"] if lacp else []
        iface_settings: list[str] = []
        if mtu_request is not None:
            for iface in interfaces:
                iface_settings += ["--", "set", "Interface", iface, f"mtu_request={mtu_request}"]
        add = (["add-port", bridge, interfaces[0]] if len(interfaces) == 1
               else ["add-bond", bridge, port, *interfaces])
        tag_and_set = ["--", "set", "Port", port, MANAGED_TAG, *port_settings, *iface_settings]

        existing = snapshot.ports.get(port)
        result = None
        if existing is None:
            try:
                result = self._run([*add, *tag_and_set], change=True)
            except HostError as exc:
                if isinstance(exc, HostTimeout) or "already exists" not in str(exc):
                    raise
                snapshot = self._snapshot()  # created meanwhile by someone else: re-read
                existing = snapshot.ports.get(port)
                if existing is None:
                    raise
        if result is None and existing is not None:
            on_bridge = snapshot.port_bridge.get(port)
            current = sorted(i.name for i in existing.interfaces)
            if not _is_managed(existing.external_ids):
                differences = _port_differences(
                    existing, snapshot, on_bridge=on_bridge, bridge=bridge,
                    interfaces=interfaces, bond_mode=bond_mode, lacp=lacp,
                    mtu_request=mtu_request)
                if differences:
                    raise Refused(f"port {port} on bridge {on_bridge} was not created by "
                                  f"HostPlumber; not modifying it ({'; '.join(differences)})")
            elif on_bridge != bridge or current != sorted(interfaces):
                # Rebuild in one transaction: a bond's members or the bridge changed.
                result = self._run(["--if-exists", "del-port", on_bridge or bridge, port, "--",
                                    *add, *tag_and_set], change=True)
            elif _port_differences(existing, snapshot, on_bridge=on_bridge, bridge=bridge,
                                   interfaces=interfaces, bond_mode=bond_mode, lacp=lacp,
                                   mtu_request=mtu_request):
                result = self._run(["--may-exist", *add, *tag_and_set], change=True)
        self._verify_port(bridge, port, interfaces, mtu_request,
                          result.stderr if result is not None else "")

    def _verify_port(self, bridge: str, port: str, interfaces: list[str],
                     mtu_request: Optional[int], stderr: str) -> None:
        snapshot = self._snapshot()
        if snapshot.port_bridge.get(port) != bridge:
            raise HostError(f"port {port} is not on bridge {bridge} after adding it")
        problems = []
        for name in interfaces:
            iface = snapshot.interfaces.get(name)
            ofport = iface.ofport if iface is not None else None
            if ofport is None or ofport < 0:
                reason = (snapshot.interface_errors.get(name) or _setup_error(stderr)
                          or "ovs-vswitchd could not open it")
                problems.append(f"interface {name} has no OpenFlow port (ofport "
                                f"{'none' if ofport is None else ofport}): {reason}; its netdev "
                                "must exist in the network namespace ovs-vswitchd runs in")
            elif mtu_request is not None and snapshot.interface_mtu.get(name) != mtu_request:
                problems.append(f"interface {name}: mtu is {snapshot.interface_mtu.get(name)}, "
                                f"not the requested {mtu_request}"
                                + (f" ({snapshot.interface_errors[name]})"
                                   if snapshot.interface_errors.get(name) else ""))
        if problems:
            raise HostError(f"port {port} on bridge {bridge}: {'; '.join(problems)}")

    def delete_port(self, bridge: str, port: str) -> None:
        """Delete our port from `bridge` (absent, or on another bridge, is fine). Refused for a
        port we did not create."""
        self._require_name(bridge, "bridge name")
        self._require_name(port, "port name")
        snapshot = self._snapshot()
        existing = snapshot.ports.get(port)
        if existing is None or snapshot.port_bridge.get(port) != bridge:
            return
        if not _is_managed(existing.external_ids):
            raise Refused(f"port {port} on bridge {bridge} was not created by HostPlumber; "
                          "not deleting it")
        self._run(["--if-exists", "del-port", bridge, port], change=True)

    # --- validation ---------------------------------------------------------------------------

    @staticmethod
    def _require_name(value, what: str) -> str:
        return require(check_ovs_name, value, what)

    def _require_interfaces(self, port: str, interfaces) -> list[str]:
        if isinstance(interfaces, str) or not isinstance(interfaces, (list, tuple)):
            raise InvalidSpec([f"nodeInterface: {interfaces!r} is not a list of interface names"])
        if not interfaces:
            raise InvalidSpec([f"nodeInterface: port {port} needs at least one interface"])
        for index, iface in enumerate(interfaces):
            self._require_name(iface, f"nodeInterface[{index}]")
        if len(set(interfaces)) != len(interfaces):
            raise InvalidSpec([f"nodeInterface: {', '.join(interfaces)} names an interface twice"])
        if len(interfaces) == 1 and interfaces[0] != port:
            raise InvalidSpec([f"port {port}: a single-interface port is named after its "
                               f"interface ({interfaces[0]})"])
        if len(interfaces) > 1 and port in interfaces:
            raise InvalidSpec([f"bond {port}: a bond cannot be named after one of its members"])
        return list(interfaces)


def _setup_error(stderr: str) -> str:
    """OVS's 'Error detected while setting up ...' line (ovs-vsctl still exits 0)."""
    for line in (stderr or "").splitlines():
        if "Error detected" in line:
            return line.removeprefix("ovs-vsctl: ").strip()
    return ""


def _port_differences(existing: ObservedOvsPort, snapshot: _Snapshot, *, on_bridge, bridge,
                      interfaces, bond_mode, lacp, mtu_request) -> list[str]:
    """What differs between an observed port and the request (only keys the caller set)."""
    differences = []
    if on_bridge != bridge:
        differences.append(f"it is on bridge {on_bridge}, not {bridge}")
    current = sorted(i.name for i in existing.interfaces)
    if current != sorted(interfaces):
        differences.append(f"interfaces are {', '.join(current)}, not "
                           f"{', '.join(sorted(interfaces))}")
    if bond_mode is not None and existing.bond_mode != bond_mode:
        differences.append(f"bond_mode is {existing.bond_mode}, not {bond_mode}")
    if lacp is not None and existing.lacp != lacp:
        differences.append(f"lacp is {existing.lacp}, not {lacp}")
    if mtu_request is not None:
        for iface in existing.interfaces:
            if iface.mtu_request != mtu_request:
                differences.append(f"interface {iface.name} mtu_request is {iface.mtu_request},"
                                   f" not {mtu_request}")
    return differences


def _decode_tables(stdout: str, count: int) -> list[dict]:
    """ovs-vsctl prints one JSON table per command."""
    decoder = json.JSONDecoder()
    tables, position = [], 0
    while len(tables) < count:
        while position < len(stdout) and stdout[position].isspace():
            position += 1
        table, position = decoder.raw_decode(stdout, position)
        tables.append(table)
    return tables


def _build_snapshot(bridge_table: dict, port_table: dict, iface_table: dict) -> _Snapshot:
    snapshot = _Snapshot()
    ifaces_by_uuid: dict[str, ObservedOvsInterface] = {}
    for row in _rows(iface_table):
        iface = ObservedOvsInterface(name=row["name"], type=row["type"] or "",
                                     ofport=_int_or_none(row["ofport"]),
                                     mtu_request=_int_or_none(row["mtu_request"]),
                                     external_ids=_map(row["external_ids"]))
        ifaces_by_uuid[_uuid(row["_uuid"])] = iface
        snapshot.interfaces[iface.name] = iface
        error = _optional(row["error"])
        if error:
            snapshot.interface_errors[iface.name] = str(error)
        snapshot.interface_mtu[iface.name] = _int_or_none(row["mtu"])
    ports_by_uuid: dict[str, ObservedOvsPort] = {}
    for row in _rows(port_table):
        members = [ifaces_by_uuid[_uuid(u)] for u in _atoms(row["interfaces"])
                   if _uuid(u) in ifaces_by_uuid]
        port = ObservedOvsPort(name=row["name"],
                               interfaces=sorted(members, key=lambda i: i.name),
                               bond_mode=_optional(row["bond_mode"]),
                               lacp=_optional(row["lacp"]),
                               external_ids=_map(row["external_ids"]))
        ports_by_uuid[_uuid(row["_uuid"])] = port
        snapshot.ports[port.name] = port
    for row in sorted(_rows(bridge_table), key=lambda r: r["name"]):
        ports = [ports_by_uuid[_uuid(u)] for u in _atoms(row["ports"])
                 if _uuid(u) in ports_by_uuid]
        bridge = ObservedBridge(name=row["name"], datapath_type=row["datapath_type"] or "",
                                ports=sorted(ports, key=lambda p: p.name),
                                external_ids=_map(row["external_ids"]))
        snapshot.bridges[bridge.name] = bridge
        for port in bridge.ports:
            snapshot.port_bridge[port.name] = bridge.name
    return snapshot


__all__ = ["Ovs", "DEFAULT_DB", "DEFAULT_TIMEOUT_S", "MANAGED_KEY", "MANAGED_VALUE",
           "check_ovs_name", "check_ovsdb_remote", "run_subprocess"]
