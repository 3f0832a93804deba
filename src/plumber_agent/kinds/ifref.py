"""Not a kind: interface references (models/ifref.py, desired/ifref.py) serve every kind's
`interface_refs`, and the ledger records of a renamed NIC follow it (planner/renames.py, the
ledger-only `move_record`). Declared with the kinds' fields so that the checklist finds what
they read and show owned."""
from plumber_agent.kinds.base import NO_PATH, Kind

RECORD = Kind(
    name="ifref",
    doc="a NIC named by pci:, mac: or altname:, resolved on every pass; its records follow it",
    spec_keys={},
    # What a reference matches (the PCI address is read for the sriov kind as well).
    observed=("links[].pci_addr", "links[].perm_mac", "links[].altnames"),
    verbs={"move_record": NO_PATH},  # ledger only: writes no key kind of its own
    status=("interface_status[].perm_mac", "interface_status[].alt_names"),
)
