"""One fault-injection plan for the simulated cell: what goes wrong, where and when.

Steady fault rates (verdict writes the PLC loses, frames lost on the way, stray trigger pulses,
kicks that fail) are the line's (`LineConfig`); the events of a run live here, each written
`TARGET[INDEX]:KIND[=VALUE]@SECONDS`, for the tests and `cellctl demo --fault`:

- plc: encoder_step (counts), restart, part_seq_glitch (parts), bad_part_slot (id),
  unknown_disposition (part id), drop (s off the network), freeze (s without a scan);
- camera[K]: drop (s of frames lost, the counter goes on), delay (ms per frame, for 2 s),
  corrupt (frames of the wrong size, for 2 s), freeze (s the camera sees no trigger);
- disk: full (s the data folder's filesystem is full: only a small one, a tmpfs), readonly (s
  the images folder is read-only; root is not stopped by it);
- client: flood (s of 200 concurrent status requests), idle (s of 64 idle connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS: dict[str, tuple[str, ...]] = {
    "plc": ("encoder_step", "restart", "part_seq_glitch", "bad_part_slot", "unknown_disposition", "drop",
            "freeze"),
    "camera": ("drop", "delay", "corrupt", "freeze"),
    "disk": ("full", "readonly"),
    "client": ("flood", "idle"),
}  # fmt: skip

#: A filesystem bigger than this is never filled on purpose.
MAX_FILLED_FS = 256 << 20


@dataclass(frozen=True, slots=True)
class Fault:
    """One event: `target` (plc, camera, disk, client), `kind`, when (s after the start), value."""

    target: str
    kind: str
    at_s: float
    value: float = 0.0
    index: int = 0  # which camera

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`TARGET[INDEX]:KIND[=VALUE]@SECONDS`, e.g. `plc:restart@10`, `camera1:freeze=2@5`."""
        head, at, when = text.partition("@")
        target, _, rest = head.partition(":")
        kind, _, value = rest.partition("=")
        index = 0
        base = target.rstrip("0123456789")
        if base != target:
            index = int(target[len(base) :])
        if base not in KINDS or kind not in KINDS[base] or not at:
            known = "; ".join(f"{t}: {', '.join(k)}" for t, k in KINDS.items())
            raise ValueError(f"{text!r}: expected TARGET[INDEX]:KIND[=VALUE]@SECONDS ({known})")
        try:
            at_s, amount = float(when), float(value or 0)
        except ValueError:
            raise ValueError(f"{text!r}: VALUE and SECONDS must be numbers") from None
        if not (math.isfinite(at_s) and at_s >= 0 and math.isfinite(amount)):
            raise ValueError(
                f"{text!r}: SECONDS must be a number ≥ 0 (after the start), VALUE a finite number"
            )
        return cls(base, kind, at_s, amount, index)

    def __str__(self) -> str:
        idx = str(self.index) if self.target == "camera" else ""
        return f"{self.target}{idx}:{self.kind}={self.value:g}@{self.at_s:g}"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The events of one run, in time order."""

    faults: tuple[Fault, ...] = ()

    @classmethod
    def parse(cls, specs: list[str] | tuple[str, ...]) -> FaultPlan:
        return cls(tuple(sorted((Fault.parse(s) for s in specs), key=lambda f: f.at_s)))


async def run_plan(plan: FaultPlan, sim: Any, data_dir: Path, api_socket: Path | None) -> None:
    """Inject each fault at its time: the PLC and cameras through the simulated line, the disk
    and the clients from here (the cell's environment)."""
    t0 = time.monotonic()
    for f in plan.faults:
        await asyncio.sleep(max(0.0, t0 + f.at_s - time.monotonic()))
        log.warning("injecting fault %s", f)
        try:
            await _inject(f, sim, data_dir, api_socket)
        except (OSError, ValueError, TimeoutError) as exc:
            log.error("fault %s not injected: %s", f, exc)


async def _inject(f: Fault, sim: Any, data_dir: Path, api_socket: Path | None) -> None:
    if f.target == "plc":
        if f.kind == "drop":
            await asyncio.to_thread(sim.drop_link, f.value)
        elif f.kind == "freeze":
            await asyncio.to_thread(sim.freeze, f.value)
        else:
            await asyncio.to_thread(sim.inject, f.kind, int(f.value))
    elif f.target == "camera":
        await asyncio.to_thread(sim.camera_fault, f.index, f.kind, f.value)
    elif f.target == "disk":
        threading.Thread(target=_disk, args=(f, data_dir), name="fault-disk", daemon=True).start()
    elif api_socket is not None:
        threading.Thread(target=_client, args=(f, api_socket), name="fault-client", daemon=True).start()


def _disk(f: Fault, data_dir: Path) -> None:
    if f.kind == "readonly":
        images = data_dir / "var" / "images"
        images.mkdir(parents=True, exist_ok=True)
        images.chmod(0o500)
        time.sleep(f.value)
        images.chmod(0o750)
        return
    st = os.statvfs(data_dir)
    if st.f_blocks * st.f_frsize > MAX_FILLED_FS:
        log.error(
            "disk:full refused: %s is on a filesystem over %d MB (use a tmpfs)", data_dir, MAX_FILLED_FS >> 20
        )
        return
    filler = data_dir / "fault-disk-full"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(bytes(65536))
            out.flush()
    time.sleep(f.value)
    filler.unlink(missing_ok=True)


def _client(f: Fault, path: Path) -> None:
    end = time.monotonic() + f.value
    if f.kind == "idle":
        held = []
        for _ in range(64):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(OSError):
                s.connect(str(path))
            held.append(s)
        time.sleep(f.value)
        for s in held:
            s.close()
        return

    def asker() -> None:
        while time.monotonic() < end:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, contextlib.suppress(OSError):
                s.settimeout(1.0)
                s.connect(str(path))
                s.sendall(b'{"op": "status"}\n')
                s.recv(65536)

    threads = [threading.Thread(target=asker, name=f"fault-flood-{k}", daemon=True) for k in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(f.value + 5.0)
