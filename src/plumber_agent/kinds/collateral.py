"""Not a kind: the cross-cutting record of what the kernel removed along with a change of any
kind (models/collateral.py, host/collateral.py, planner/collateral.py), and the ledger-only
`forget`. Declared with the kinds' fields so that the checklist finds its parts owned."""
from plumber_agent.kinds.base import NO_PATH, Cleanup, Kind

RECORD = Kind(
    name="collateral",
    doc="routes/addresses/VF settings the kernel removed with a change, put back after its undo",
    spec_keys={},
    cleanups=(Cleanup("collateral", "collateral", "cleanup", rank=1000),),  # last: reads the undos
    verbs={"restore_collateral": NO_PATH, "forget": NO_PATH},
)
