from __future__ import annotations

from pathlib import Path

import pytest

from controller.contract import area_layout, contract_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_the_contract_as_coded() -> None:
    for area, off, name, typ, meaning in contract_table(16):
        row = f"| {area} | {off} | `{name}` | {typ} | {meaning} |"
        assert row in README, f"README's contract table is stale at {name}"


@pytest.mark.parametrize("ring", [4, 8, 16])
def test_input_area_fits_one_s7_pdu(ring: int) -> None:
    assert area_layout(ring).plc_size <= 462


def test_too_large_ring_is_refused() -> None:
    with pytest.raises(ValueError, match=r"over one S7 PDU"):
        area_layout(32)


def test_verdict_slots_follow_the_header() -> None:
    lay = area_layout(16)
    assert lay.verdict_offset(0) == 24 and lay.verdict_offset(17) == 32
