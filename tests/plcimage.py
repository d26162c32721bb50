"""A PLC → cell area held in memory, written the way the PLC writes it, for core tests."""

from __future__ import annotations

import numpy as np

from controller.contract import DISPO_CONFIRMED_REMOVED, DISPO_KICKED, AckStatus, AreaLayout, area_layout

WRAP = 1 << 32


class PlcImage:
    def __init__(self, ring_size: int = 16) -> None:
        self.layout: AreaLayout = area_layout(ring_size)
        self.buf = bytearray(self.layout.plc_size)
        self.area = np.frombuffer(self.buf, dtype=self.layout.plc_dtype)[0]
        self.n = ring_size

    def snapshot(self) -> np.void:
        """What one read of the whole area returns: a copy."""
        rec: np.void = np.frombuffer(bytes(self.buf), dtype=self.layout.plc_dtype)[0]
        self.area["header"]["heartbeat"] = (int(self.area["header"]["heartbeat"]) + 1) & 0xFFFF
        return rec

    def encoder(self, raw: int) -> None:
        self.area["header"]["encoder"] = raw % WRAP

    def add_part(self, pid: int, sensor_raw: int) -> None:
        slot = self.area["parts"][pid % self.n]
        slot["part_id"], slot["sensor_count"] = pid, sensor_raw % WRAP
        self.area["header"]["part_seq"] = pid

    def ack(self, pid: int, verdict: int, attempt: int = 1, status: AckStatus = AckStatus.ACCEPTED) -> None:
        a = self.area["acks"][pid % self.n]
        a["part_id"], a["verdict"], a["attempt"], a["status"] = pid, verdict, attempt, status

    def dispo(self, pid: int, kicked: bool, removed: bool, cause: int) -> None:
        seq = int(self.area["header"]["dispo_seq"]) + 1
        d = self.area["dispos"][seq % self.n]
        d["part_id"] = pid
        d["flags"] = (DISPO_KICKED if kicked else 0) | (DISPO_CONFIRMED_REMOVED if removed else 0)
        d["cause"] = cause
        self.area["header"]["dispo_seq"] = seq

    def restart(self) -> None:
        """The PLC restarted: its memory is back at zero (sequences, rings, heartbeat)."""
        self.buf[:] = bytes(len(self.buf))

    def command(self, code: int) -> None:
        h = self.area["header"]
        h["cmd_code"] = code
        h["cmd_seq"] = (int(h["cmd_seq"]) + 1) & 0xFFFF
