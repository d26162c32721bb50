from __future__ import annotations

from pathlib import Path

import pytest

from controller.contract import area_layout, contract_markdown

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_the_contract_as_coded() -> None:
    """The README's contract (areas, codes, alarms) is exactly what the code declares."""
    block = README.split("<!-- contract: generated", 1)[1].split("-->", 1)[1].split("<!-- /contract -->")[0]
    assert block.strip() == contract_markdown(16), "README's contract is stale: cellctl contract --markdown"


@pytest.mark.parametrize("ring", [4, 8, 16])
def test_input_area_fits_one_s7_pdu(ring: int) -> None:
    assert area_layout(ring).plc_size <= 462


def test_too_large_ring_is_refused() -> None:
    with pytest.raises(ValueError, match=r"over one S7 PDU"):
        area_layout(32)


def test_verdict_slots_follow_the_header() -> None:
    lay = area_layout(16)
    assert lay.verdict_offset(0) == 24 and lay.verdict_offset(17) == 36


def test_writes_are_packed_from_the_declared_layout() -> None:
    """Header and verdict bytes come from the declarations: big-endian, each in its place."""
    import struct

    from controller.contract import cell_header_bytes, verdict_slot_bytes

    hdr = cell_header_bytes(heartbeat=7, state=6, alarm=14, contract_version=2, recipe_from_part=70_000)
    assert hdr == struct.pack(">10HI", 7, 6, 0, 0, 0, 0, 14, 0, 0, 2, 70_000)
    slot = verdict_slot_bytes((1 << 32) + 5, 3, 257, 19, 0xFFFFFFF0)
    assert slot == struct.pack(">IBBHI", 5, 3, 1, 19, 0xFFFFFFF0)  # ids and counters wrap
    with pytest.raises(ValueError):
        cell_header_bytes(nonsense=1)
