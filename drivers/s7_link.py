"""The PLC link over S7 (python-snap7 client): the whole input DB in one read per cycle.

python-snap7 3.x notes: the request timeout lives on `client.connection.timeout` (the
RecvTimeout parameter has no effect); the negotiated PDU is at most 480 bytes, which the
contract layout respects; only whole bytes are written (the bit helpers are
read-modify-write in two requests and would race with the PLC).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import numpy as np
import snap7
from snap7.error import S7Error

from controller.contract import AreaLayout
from drivers.area_link import AreaWriter, PlcLinkError

if TYPE_CHECKING:
    from controller.config import S7Config

__all__ = ["PlcLinkError", "S7PlcLink", "make_link"]

log = logging.getLogger(__name__)


class S7PlcLink(AreaWriter):
    """Reads DB `db_plc` (PLC → cell) and writes DB `db_cell` (cell → PLC) on one connection."""

    def __init__(
        self,
        layout: AreaLayout,
        host: str,
        port: int = 102,
        rack: int = 0,
        slot: int = 1,
        db_plc: int = 100,
        db_cell: int = 101,
        timeout_s: float = 0.5,
        db_trig: int = 102,
    ) -> None:
        self.layout = layout
        self.host, self.port, self.rack, self.slot = host, port, rack, slot
        self.db_plc, self.db_cell, self.db_trig = db_plc, db_cell, db_trig
        self.timeout_s = timeout_s
        self._client: snap7.client.Client | None = None

    def __repr__(self) -> str:
        return f"S7PlcLink({self.host}:{self.port} DB{self.db_plc}/DB{self.db_cell})"

    def __str__(self) -> str:
        return (
            f"S7 PLC {self.host}:{self.port} (reads DB{self.db_plc} and DB{self.db_trig}, "
            f"writes DB{self.db_cell})"
        )

    def connect(self) -> None:
        client = snap7.client.Client()
        try:
            client.connect(self.host, self.rack, self.slot, self.port)
        except (S7Error, OSError) as exc:
            raise PlcLinkError(f"{self!r}: cannot connect: {exc}") from None
        if client.connection is not None:
            client.connection.timeout = self.timeout_s
            if client.connection.socket is not None:
                client.connection.socket.settimeout(self.timeout_s)
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(S7Error, OSError):
                self._client.disconnect()
            self._client = None

    def _require(self) -> snap7.client.Client:
        if self._client is None:
            raise PlcLinkError(f"{self!r}: not connected")
        return self._client

    def read_inputs(self) -> np.void:
        return self._read(self.db_plc, self.layout.plc_dtype)

    def read_triggers(self) -> np.void:
        return self._read(self.db_trig, self.layout.trig_dtype)

    def _read(self, db: int, dtype: np.dtype[np.void]) -> np.void:
        size = dtype.itemsize
        try:
            data = self._require().db_read(db, 0, size)
        except (S7Error, OSError) as exc:
            raise PlcLinkError(f"{self!r}: read DB{db} failed: {exc}") from None
        if len(data) != size:
            raise PlcLinkError(f"{self!r}: DB{db} read {len(data)} B, expected {size}")
        rec: np.void = np.frombuffer(data, dtype=dtype)[0]
        return rec

    def _write(self, offset: int, data: bytes) -> None:
        try:
            self._require().db_write(self.db_cell, offset, bytearray(data))
        except (S7Error, OSError) as exc:
            raise PlcLinkError(f"{self!r}: write DB{self.db_cell}@{offset} failed: {exc}") from None


def make_link(config: S7Config, layout: AreaLayout) -> S7PlcLink:
    """The link a cell config's `plc` (protocol s7) describes (`controller.devices`)."""
    c = config
    return S7PlcLink(layout, c.host, c.port, c.rack, c.slot, c.db_plc, c.db_cell, c.timeout_s, c.db_trig)
