"""The PLC link over Modbus TCP (pymodbus client): the same contract as S7, on holding registers.

Both areas keep the S7 byte layout, two bytes per register (big-endian). The whole input
area is read in one request (at most 125 registers, so the ring is at most 8 slots), and
each verdict slot is written in one request. pymodbus 3.16 notes: clients take `device_id=`;
a client with default settings blocks 12 s on a dead server, so timeout and retries are set.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from controller.contract import AreaLayout
from drivers.area_link import AreaWriter, PlcLinkError

if TYPE_CHECKING:
    from controller.config import ModbusConfig

log = logging.getLogger(__name__)

MAX_READ_REGISTERS = 125


class ModbusPlcLink(AreaWriter):
    """Reads the PLC area at `plc_address`, writes the cell area at `cell_address` (registers)."""

    def __init__(
        self,
        layout: AreaLayout,
        host: str,
        port: int = 502,
        device_id: int = 1,
        plc_address: int = 0,
        cell_address: int = 1000,
        timeout_s: float = 0.5,
        trig_address: int = 500,
    ) -> None:
        if layout.plc_size // 2 > MAX_READ_REGISTERS:
            raise ValueError(
                f"ring_size {layout.ring_size} makes the input area over {MAX_READ_REGISTERS} registers"
            )
        self.layout, self.host, self.port, self.device_id = layout, host, port, device_id
        self.plc_address, self.cell_address, self.timeout_s = plc_address, cell_address, timeout_s
        self.trig_address = trig_address
        self._client: ModbusTcpClient | None = None

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port} id {self.device_id}"
        return f"ModbusPlcLink({where} @{self.plc_address}/@{self.cell_address})"

    def __str__(self) -> str:
        return (
            f"Modbus TCP PLC {self.host}:{self.port} unit {self.device_id} (reads registers "
            f"{self.plc_address} and {self.trig_address}, writes {self.cell_address})"
        )

    def connect(self) -> None:
        client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0)
        if not client.connect():
            client.close()
            raise PlcLinkError(f"{self!r}: cannot connect")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _require(self) -> ModbusTcpClient:
        if self._client is None:
            raise PlcLinkError(f"{self!r}: not connected")
        return self._client

    def read_inputs(self) -> np.void:
        return self._read(self.plc_address, self.layout.plc_dtype)

    def read_triggers(self) -> np.void:
        return self._read(self.trig_address, self.layout.trig_dtype)

    def _read(self, address: int, dtype: np.dtype[np.void]) -> np.void:
        n = dtype.itemsize // 2
        try:
            rr = self._require().read_holding_registers(address, count=n, device_id=self.device_id)
        except (ModbusException, OSError) as exc:
            raise PlcLinkError(f"{self!r}: read {n} registers failed: {exc}") from None
        if rr.isError() or len(rr.registers) != n:
            raise PlcLinkError(f"{self!r}: read {n} registers at {address} refused: {rr}")
        data = np.asarray(rr.registers, dtype=">u2").tobytes()
        rec: np.void = np.frombuffer(data, dtype=dtype)[0]
        return rec

    def _write(self, offset: int, data: bytes) -> None:
        words = np.frombuffer(data, dtype=">u2").tolist()
        address = self.cell_address + offset // 2
        try:
            rr = self._require().write_registers(address, words, device_id=self.device_id)
        except (ModbusException, OSError) as exc:
            raise PlcLinkError(f"{self!r}: write at {address} failed: {exc}") from None
        if rr.isError():
            raise PlcLinkError(f"{self!r}: write at {address} refused: {rr}")


def make_link(config: ModbusConfig, layout: AreaLayout) -> ModbusPlcLink:
    """The link a cell config's `plc` (protocol modbus) describes (`controller.devices`)."""
    c = config
    return ModbusPlcLink(
        layout, c.host, c.port, c.device_id, c.plc_register, c.cell_register, c.timeout_s, c.trig_register
    )
