"""A PLC link names itself in words a plant reads (the MQTT and OPC UA link events carry it)."""

from __future__ import annotations

from controller.contract import area_layout
from drivers.modbus_link import ModbusPlcLink
from drivers.s7_link import S7PlcLink


def test_an_s7_link_says_protocol_address_and_data_blocks() -> None:
    link = S7PlcLink(area_layout(8), "10.0.0.5", port=102, db_plc=100, db_cell=101, db_trig=102)
    assert str(link) == "S7 PLC 10.0.0.5:102 (reads DB100 and DB102, writes DB101)"


def test_a_modbus_link_says_protocol_address_unit_and_registers() -> None:
    link = ModbusPlcLink(area_layout(8), "10.0.0.6", port=502, device_id=3, plc_address=0, cell_address=1000)
    assert str(link) == "Modbus TCP PLC 10.0.0.6:502 unit 3 (reads registers 0 and 500, writes 1000)"
