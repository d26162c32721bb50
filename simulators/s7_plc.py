"""A simulated S7 PLC: python-snap7's server holding the two exchange DBs on loopback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
from snap7.server import Server
from snap7.type import SrvArea

from controller.config import S7Config
from controller.contract import AreaLayout

log = logging.getLogger(__name__)


class SimS7Plc:
    """Hosts DB `db_plc` (PLC → cell) and DB `db_cell` (cell → PLC); numpy views for the scan."""

    def __init__(
        self, layout: AreaLayout, db_plc: int, db_cell: int, host: str = "127.0.0.1", db_trig: int = 102
    ) -> None:
        self.layout = layout
        self.db_plc, self.db_cell, self.db_trig, self.host = db_plc, db_cell, db_trig, host
        self._plc_buf = bytearray(layout.plc_size)
        self._cell_buf = bytearray(layout.cell_size)
        self._trig_buf = bytearray(layout.trig_size)
        self.trig_area: np.ndarray = np.frombuffer(self._trig_buf, dtype=layout.trig_dtype)[0]
        # The server keeps a reference to a bytearray (not a copy), so these views see its memory.
        self.plc_area: np.ndarray = np.frombuffer(self._plc_buf, dtype=layout.plc_dtype)[0]
        self.cell_area: np.ndarray = np.frombuffer(self._cell_buf, dtype=layout.cell_dtype)[0]
        self._server = Server(log=False)
        self._server.register_area(SrvArea.DB, db_plc, self._plc_buf)
        self._server.register_area(SrvArea.DB, db_cell, self._cell_buf)
        self._server.register_area(SrvArea.DB, db_trig, self._trig_buf)
        self.port = 0

    def start(self, port: int = 0) -> int:
        """Listen on `host:port` (0 picks a free port); returns the port."""
        self._server.start_to(self.host, port)
        sock = self._server.server_socket
        assert sock is not None
        self.port = int(sock.getsockname()[1])
        log.info(
            "simulated S7 PLC on %s:%d (DB%d in, DB%d out)", self.host, self.port, self.db_plc, self.db_cell
        )
        return self.port

    def stop(self) -> None:
        self._server.stop()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold both areas, so a scan and a client request never interleave mid-area."""
        self._server.lock_area(SrvArea.DB, self.db_plc)
        self._server.lock_area(SrvArea.DB, self.db_cell)
        self._server.lock_area(SrvArea.DB, self.db_trig)
        try:
            yield
        finally:
            self._server.unlock_area(SrvArea.DB, self.db_trig)
            self._server.unlock_area(SrvArea.DB, self.db_cell)
            self._server.unlock_area(SrvArea.DB, self.db_plc)


def make_plc(config: S7Config, layout: AreaLayout) -> SimS7Plc:
    """The simulated PLC a cell config's `plc` (protocol s7) talks to (`simulators.launcher`)."""
    return SimS7Plc(layout, config.db_plc, config.db_cell, db_trig=config.db_trig)
