"""A simulated Modbus TCP PLC: pymodbus's server holding the two exchange areas as holding registers.

The areas are the same byte layout as on S7, two bytes per register (big-endian words), at
the register addresses from the cell config. The server's access hook copies the PLC area
into the registers on each read and takes the cell's writes into the cell area, under the
same lock the scan holds, so a request never sees half a scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from controller.config import ModbusConfig
from controller.contract import AreaLayout

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SimModbusPlc:
    """PLC → cell area at `plc_address` (read-only to clients), cell → PLC area at `cell_address`."""

    def __init__(
        self,
        layout: AreaLayout,
        plc_address: int,
        cell_address: int,
        host: str = "127.0.0.1",
        device_id: int = 1,
        trig_address: int = 500,
    ) -> None:
        self.layout, self.host, self.device_id = layout, host, device_id
        self.plc_address, self.cell_address, self.trig_address = plc_address, cell_address, trig_address
        self._plc_buf = bytearray(layout.plc_size)
        self._cell_buf = bytearray(layout.cell_size)
        self._trig_buf = bytearray(layout.trig_size)
        self.trig_area: np.ndarray = np.frombuffer(self._trig_buf, dtype=layout.trig_dtype)[0]
        self._trig_words = np.frombuffer(self._trig_buf, dtype=">u2")
        self.plc_area: np.ndarray = np.frombuffer(self._plc_buf, dtype=layout.plc_dtype)[0]
        self.cell_area: np.ndarray = np.frombuffer(self._cell_buf, dtype=layout.cell_dtype)[0]
        self._plc_words = np.frombuffer(self._plc_buf, dtype=">u2")
        self._cell_words = np.frombuffer(self._cell_buf, dtype=">u2")
        self._lock = threading.Lock()
        end = max(
            plc_address + len(self._plc_words),
            cell_address + len(self._cell_words),
            trig_address + len(self._trig_words),
        )
        self._device = SimDevice(
            id=device_id,
            simdata=[SimData(address=0, count=end, values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        p0 = self.plc_address
        c0, c1 = self.cell_address, self.cell_address + len(self._cell_words)
        with self._lock:
            if set_values is None:
                # Refresh what is read from the two areas; the rest of the block stays 0.
                areas = ((p0, self._plc_words), (c0, self._cell_words), (self.trig_address, self._trig_words))
                for a0, words in areas:
                    lo, hi = max(address, a0), min(address + count, a0 + len(words))
                    if lo < hi:
                        registers[lo - start_address : hi - start_address] = words[lo - a0 : hi - a0].tolist()
                return None
            if not (c0 <= address and address + count <= c1):
                return ExcCodes.ILLEGAL_ADDRESS  # only the cell's area is the cell's to write
            self._cell_words[address - c0 : address - c0 + count] = [int(v) for v in set_values]
        return None

    def start(self, port: int = 0) -> int:
        self.port = port or free_port(self.host)
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve(ready))
            loop.close()

        self._thread = threading.Thread(target=serve, name="sim-modbus-server", daemon=True)
        self._thread.start()
        ready.wait(5.0)
        log.info("simulated Modbus PLC on %s:%d", self.host, self.port)
        return self.port

    async def _serve(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        self._server = ModbusTcpServer(self._device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        ready.set()
        await self._stopping.wait()
        await self._server.shutdown()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(5.0)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield


def make_plc(config: ModbusConfig, layout: AreaLayout) -> SimModbusPlc:
    """The simulated PLC a cell config's `plc` (protocol modbus) talks to (`simulators.launcher`)."""
    c = config
    return SimModbusPlc(
        layout, c.plc_register, c.cell_register, device_id=c.device_id, trig_address=c.trig_register
    )
