"""A PLC written from the printed contract alone, as an outside PLC engineer would.

The PLC below knows nothing of the project's code: it parses the table `cellctl contract
--markdown` prints, lays out its three DBs from the byte offsets and S7 types there, and
follows the table's words (part p in slot p % ring, then part_seq = p; take a verdict only if
part_id and sensor_count match). The cell reads it over real S7; every part it registers must
be tracked, and every verdict must land where the table says.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from snap7.server import Server
from snap7.type import SrvArea

from controller.contract import Verdict, area_layout, cell_header_bytes
from controller.core.cell import CellCore, CellPlan, WriteVerdict
from controller.core.packml import Command
from drivers.s7_link import S7PlcLink

FMT = {"UINT": ">H", "UDINT": ">I", "USINT": ">B"}
RING = 16


def printed_table() -> list[tuple[str, int, str, str]]:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "cellctl"), "contract", "--markdown"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        m = re.match(r"\| (PLC → cell(?: \(triggers\))?|cell → PLC) \| (\d+) \| `([^`]+)` \| (\w+) \|", line)
        if m:
            rows.append((m[1], int(m[2]), m[3], m[4]))
    return rows


class TablePlc:
    """Three DBs laid out from the table; fields addressed by the table's names."""

    DBS: ClassVar[dict[str, int]] = {"PLC → cell": 100, "cell → PLC": 101, "PLC → cell (triggers)": 102}

    def __init__(self, rows: list[tuple[str, int, str, str]]) -> None:
        self.fields: dict[tuple[str, str], tuple[int, str]] = {}
        self.stride: dict[tuple[str, str], int] = {}
        size: dict[str, int] = dict.fromkeys(self.DBS, 0)
        for area, off, name, typ in rows:
            self.fields[(area, name)] = (off, FMT[typ])
            size[area] = max(size[area], off + struct.calcsize(FMT[typ]))
            ring = name.split("[")[0] if "[" in name else None
            if ring is not None:  # a slot's stride: the sum of its fields' sizes
                self.stride[(area, ring)] = self.stride.get((area, ring), 0) + struct.calcsize(FMT[typ])
        for (area, ring), stride in self.stride.items():  # the ring's slots extend its area
            first = min(o for (a, n), (o, _) in self.fields.items() if a == area and n.startswith(ring + "["))
            size[area] = max(size[area], first + RING * stride)
        self.bufs = {area: bytearray(n) for area, n in size.items()}
        self.server = Server(log=False)
        for area, db in self.DBS.items():
            self.server.register_area(SrvArea.DB, db, self.bufs[area])
        self.server.start_to("127.0.0.1", 0)
        sock = self.server.server_socket
        assert sock is not None
        self.port = int(sock.getsockname()[1])

    def _where(self, area: str, name: str, slot: int | None) -> tuple[int, str]:
        if slot is None:
            return self.fields[(area, name)]
        ring, field = name.split(".")
        off, fmt = self.fields[(area, f"{ring}[0..{RING - 1}].{field}")]
        return off + slot * self.stride[(area, ring)], fmt

    def set(self, area: str, name: str, value: int, slot: int | None = None) -> None:
        off, fmt = self._where(area, name, slot)
        struct.pack_into(fmt, self.bufs[area], off, value)

    def get(self, area: str, name: str, slot: int | None = None) -> int:
        off, fmt = self._where(area, name, slot)
        return int(struct.unpack_from(fmt, self.bufs[area], off)[0])


@pytest.fixture
def plc() -> Iterator[TablePlc]:
    p = TablePlc(printed_table())
    yield p
    p.server.stop()


def test_a_plc_built_from_the_printed_table_talks_to_the_cell(plc: TablePlc) -> None:
    layout = area_layout(RING)
    link = S7PlcLink(layout, "127.0.0.1", plc.port, timeout_s=0.5)
    link.connect()
    try:
        _talk(plc, link)
    finally:
        link.close()


def _talk(plc: TablePlc, link: S7PlcLink) -> None:
    layout = link.layout
    plan = CellPlan(
        cameras=("a",), camera_offsets={"a": 1500}, decision_offset=4000, deadline_offset=4500,
        reject_offset=5000, confirm_offset=5500, match_tolerance=100,
    )  # fmt: skip
    core = CellCore(plan, layout)
    core.models_ready()
    pin, t, enc, hb = "PLC → cell", 0.0, 1_000_000, 0

    def cycle() -> list[object]:
        nonlocal t, hb
        t += 0.002
        hb += 1
        plc.set(pin, "heartbeat", hb & 0xFFFF)
        plc.set(pin, "encoder", enc)
        return list(core.on_plc_inputs(link.read_inputs(), t, 0.0, link.read_triggers()))

    cycle()
    for cmd in (Command.RESET, Command.START):
        assert core.command(cmd) is None
        cycle()
    writes: list[WriteVerdict] = []
    for p in range(1, 41):  # 40 parts: the ring wraps twice
        enc += 200
        plc.set(pin, "parts.part_id", p, slot=p % RING)
        plc.set(pin, "parts.sensor_count", enc - 10, slot=p % RING)
        plc.set(pin, "part_seq", p)
        writes += [a for a in cycle() if isinstance(a, WriteVerdict)]
    assert not core.alarms, core.alarms
    assert sorted(core.parts) == list(range(1, 41)), "every part the table-built PLC registered is tracked"
    writes += [a for a in core.decide_all(t) if isinstance(a, WriteVerdict)]
    for w in writes[-RING:]:
        link.write_verdict(w.part_id, w.verdict, int(w.reason), w.attempt, w.sensor_count)
    link.write_header(cell_header_bytes(heartbeat=1, **core.header_fields()))
    cout = "cell → PLC"
    for p in range(25, 41):  # the last 16 verdicts sit where the table says
        slot = p % RING
        assert plc.get(cout, "verdicts.part_id", slot) == p
        assert plc.get(cout, "verdicts.verdict", slot) == Verdict.NO_DECISION
        assert plc.get(cout, "verdicts.sensor_count", slot) == plc.get(pin, "parts.sensor_count", slot)
    assert plc.get(cout, "contract_version") == 2
    assert plc.get(cout, "state") == core.state.value
