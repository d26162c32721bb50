"""Issue 15, item 5: `cellctl sim` starts a simulated line that `cellctl run` attaches to, as a
user would try it: both as subprocesses, `cellctl status` answers, SIGTERM stops both cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cellctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "controller.cli", *args]


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, then the exit code (killed after 30 s: a hang is a failure too)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_run_attaches_to_the_simulated_line_and_both_stop_on_sigterm(tmp_path: Path) -> None:
    unset = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CELLCTL_SOCKET")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    line_dir, sock = tmp_path / "line", tmp_path / "run" / "cell.sock"
    sim_log, run_log = tmp_path / "sim.log", tmp_path / "run.log"
    with sim_log.open("w") as out:  # files: a pipe nobody reads would block them
        sim = subprocess.Popen(
            cellctl("sim", "--dir", str(line_dir)), env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    run = None
    try:
        wait_for("cell config from cellctl sim", lambda: "cellctl run --cell" in sim_log.read_text(), 60)
        text = sim_log.read_text()
        cell_file = line_dir / "cell.yaml"
        assert f"cell config to attach with: {cell_file}" in text
        attach = next(line.split() for line in text.splitlines() if "cellctl run --cell" in line)
        with run_log.open("w") as out:
            run = subprocess.Popen(
                cellctl(*attach[1:], "--socket", str(sock), "--data-dir", str(tmp_path / "data")),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def status() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                cellctl("status", "--socket", str(sock)), env=env, capture_output=True, text=True, timeout=30
            )

        wait_for("status from cellctl run", lambda: status().returncode == 0, 90)
        time.sleep(2.0)
        st = status()
        assert st.returncode == 0 and "STOPPED" in st.stdout and "PLC up" in st.stdout, st
        run_rc = stop(run)
        sim_rc = stop(sim)
    finally:
        for proc in (run, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    run_out, sim_out = run_log.read_text(), sim_log.read_text()
    assert run_rc == 0, run_out[-2000:]
    assert sim_rc == 0, sim_out[-2000:]
    assert "Traceback" not in run_out + sim_out
    assert not sock.exists()
    assert not line_dir.exists(), "the folder it made, with its cell config and camera sockets, is removed"
