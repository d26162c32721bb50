"""The shipped systemd unit, and the notification protocol against a real datagram socket."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.systemd import Notifier, watchdog_interval

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd/inspection-cell.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # The unit names its install paths; point them at this checkout so verify can check them.
    cellctl = Path(sys.executable).parent / "cellctl"
    env = tmp_path / "cell.env"
    shutil.copy(ROOT / "systemd/cell.env", env)
    text = UNIT.read_text()
    assert "/opt/inspection-cell/.venv/bin/cellctl" in text and "/etc/inspection-cell/cell.env" in text
    unit = tmp_path / "inspection-cell.service"
    unit.write_text(
        text.replace("/opt/inspection-cell/.venv/bin/cellctl", str(cellctl)).replace(
            "/etc/inspection-cell/cell.env", str(env)
        )
    )
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_unit_is_a_hardened_notify_service_with_a_watchdog() -> None:
    keys = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, v)
    assert keys["Type"] == "notify" and keys["Restart"] == "on-failure"
    assert int(keys["WatchdogSec"]) > 0 and keys["EnvironmentFile"]
    assert keys["User"] == "inspection-cell" and keys["NoNewPrivileges"] == "yes"
    assert keys["ProtectSystem"] == "strict" and keys["StateDirectory"] == "inspection-cell"


def test_unit_raises_the_file_handle_limit() -> None:
    """1,024 handles (the default soft limit) ran out under a flood of API clients: images and
    records need handles too, so the unit allows many more than the API's client cap."""
    limits = [ln.split("=", 1)[1] for ln in UNIT.read_text().splitlines() if ln.startswith("LimitNOFILE=")]
    assert len(limits) == 1 and int(limits[0]) >= 8192, limits


def test_notifier_sends_fields_in_one_datagram_and_never_blocks(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        n = Notifier(str(path))
        assert n.notify(READY=1, STATUS="EXECUTE plate-4h")
        assert rx.recv(4096) == b"READY=1\nSTATUS=EXECUTE plate-4h"
        sent = sum(n.notify(WATCHDOG=1) for _ in range(2000))  # nobody reads: the queue fills up
        assert 0 < sent < 2000  # dropped once full instead of blocking the caller
        n.close()
    assert not Notifier(None).notify(READY=1)


def test_watchdog_interval_is_half_of_systemds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "5000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 2.5
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


class _Service:
    """What the supervisor reads of a service: readiness, thread health and loop progress."""

    ready = True

    def __init__(self) -> None:
        self.progress = 0

    def healthy(self) -> bool:
        return True


class _Notes:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def notify(self, **fields: object) -> bool:
        self.sent.append(fields)
        return True


def test_watchdog_is_petted_only_while_the_control_loop_makes_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop that is alive but fails on every PLC cycle stops the pets (systemd restarts it)."""
    import asyncio

    from controller import daemon

    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pet every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(daemon, "status_line", lambda service: "status")
    service, notes = _Service(), _Notes()

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        idle = asyncio.create_task(asyncio.sleep(10), name="service")
        sup = asyncio.create_task(daemon._supervise(service, notes, stop, idle))  # type: ignore[arg-type]
        for _ in range(6):  # progressing
            service.progress += 1
            await asyncio.sleep(0.06)
        progressing = sum("WATCHDOG" in n for n in notes.sent)
        await asyncio.sleep(0.4)  # stuck: alive, but no cycle handled
        stuck = sum("WATCHDOG" in n for n in notes.sent) - progressing
        stop.set()
        await sup
        idle.cancel()
        return progressing, stuck

    progressing, stuck = asyncio.run(scenario())
    assert progressing >= 4
    assert stuck <= 1
