"""The cell service: a few parts with one job each, wired together by `CellService`.

- `plc_io`: the `plc-io` thread (reads, header, verdict queue and journal, reconnects);
- `generations`: model generations per recipe (build, warm, activate, retire);
- `changeover`: recipe activation (validate, load beside the running one, switch, audit);
- `images`: the image keeper (frames until decided, the recipe's image policy);
- `status`: stage latencies, rates and the status snapshot;
- `actions`: the `ActionRunner`, which carries out the core's actions (verdicts, records,
  frames to inference or back to their pool, alarms and state changes to the outlet);
- `cell_service`: `CellService`, which wires them to the core, cameras and record store.
"""

from controller.service.cell_service import CellService
from controller.service.generations import Stack, build_plan, trigger_mm
from controller.snapshot import STAGES, StatusSnapshot, snapshot_from_dict

__all__ = [
    "STAGES",
    "CellService",
    "Stack",
    "StatusSnapshot",
    "build_plan",
    "snapshot_from_dict",
    "trigger_mm",
]
