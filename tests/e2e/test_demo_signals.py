"""Issue 15, item 6: the demo stops on Ctrl-C, SIGTERM and SIGHUP as it does on Ctrl-C: no
traceback (from the demo or its line's processes), the belt run empty and scored, and nothing
left behind (processes, control socket, temporary folder); `--json` reports no database that
is gone after exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Demo:
    """`cellctl demo` (through `python -m controller`, as the `cellctl` script starts it) in a
    session of its own, its temporary files in `tmp`, its output in files."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp
        (tmp / "t").mkdir()
        env = dict(os.environ, TMPDIR=str(tmp / "t"), CELLCTL_SOCKET=str(tmp / "s" / "cell.sock"))
        self.out, self.err = tmp / "out.txt", tmp / "err.txt"
        cmd = [sys.executable, "-m", "controller", "demo", "--headless", *args]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=err, text=True, start_new_session=True
            )

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err.read_text():
            assert self.proc.poll() is None, self.err.read_text()[-2000:]
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s"
            time.sleep(0.05)

    def wait_running(self, timeout: float = 60.0) -> None:
        """Until the cell runs (its control socket is there)."""
        self.wait_for("simulated PLC:")
        deadline = time.monotonic() + timeout
        while not (self.tmp / "s" / "cell.sock").exists():
            assert self.proc.poll() is None, self.err.read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)

    def signal(self, sig: int, group: bool = False) -> None:
        """To the demo, or (as a terminal does for Ctrl-C and hang-up) to its whole process group."""
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self.err.read_text()[-2000:]}") from None
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return rc, self.out.read_text(), self.err.read_text()

    def assert_nothing_left(self) -> None:
        # `.ses`: one file of a fixed name that a library (onnxruntime or pylon) keeps in $TMPDIR.
        left = [p.name for p in (self.tmp / "t").iterdir() if p.name != ".ses"]
        assert left == [], f"temporary files left behind: {left}"
        assert not (self.tmp / "s" / "cell.sock").exists(), "a stale control socket was left behind"
        # No process of the demo's group runs on. Exited ones not reaped yet are fine: the
        # orphaned multiprocessing resource tracker is reaped by init, in its own time.
        deadline = time.monotonic() + 10
        while running := self.group_running():
            assert time.monotonic() < deadline, f"processes left running: {running}"
            time.sleep(0.2)

    def group_running(self) -> list[str]:
        ps = subprocess.run(
            ["ps", "-o", "stat=,args=", "-g", str(self.proc.pid)], capture_output=True, text=True
        )
        return [line for line in ps.stdout.splitlines() if not line.lstrip().startswith("Z")]


def clean(err: str) -> None:
    for bad in ("Traceback", "KeyboardInterrupt", "EOFError"):
        assert bad not in err, err[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("after", ["loading", "line starting"])
def test_ctrl_c_in_the_first_second_prints_no_traceback(tmp_path: Path, after: str) -> None:
    demo = Demo(tmp_path, "--parts", "2000")
    if after == "loading":
        time.sleep(0.4)  # Python is still importing the program's modules
    else:
        demo.wait_for("simulated PLC:")  # the line's processes are up, the cell is being built
    demo.signal(signal.SIGINT, group=True)
    rc, _, err = demo.finish()
    clean(err)
    assert rc in (0, 130), (rc, err)
    if rc == 130 and after == "line starting":
        assert "cellctl demo: stopped by SIGINT before the line ran" in err
    demo.assert_nothing_left()


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("sig", "group"), [(signal.SIGTERM, False), (signal.SIGHUP, True), (signal.SIGTERM, True)]
)
def test_sigterm_and_sighup_drain_score_and_clean_up_as_ctrl_c_does(
    tmp_path: Path, sig: int, group: bool
) -> None:
    """Sent to the whole process group (`timeout`, `kill -TERM -PGID`, a closed terminal), the
    signal reaches the line's processes too: they leave stopping to the demo (issue 15)."""
    demo = Demo(tmp_path, "--parts", "2000", "--json")
    demo.wait_running()
    time.sleep(3.0)  # parts on the belt
    demo.signal(sig, group)
    rc, out, err = demo.finish()
    clean(err)
    result = json.loads(out)
    assert rc == 0, err[-2000:]
    assert 0 < result["parts"] < 2000 and result["lost"] == 0 and result["misrouted"] == 0
    # The records were in the temporary folder, removed on exit: no path to a deleted file.
    assert result["database"] is None
    assert "give --data-dir DIR to keep them" in err
    demo.assert_nothing_left()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_json_reports_the_database_it_kept(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--parts", "20", "--json", "--data-dir", str(tmp_path / "data"))
    rc, out, err = demo.finish()
    result = json.loads(out)
    assert rc == 0 and result["parts"] == 20, err[-2000:]
    assert Path(result["database"]).is_file()
    assert "--data-dir" not in err
    demo.assert_nothing_left()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_killed_demo_leaves_no_line_process_running(tmp_path: Path) -> None:
    """SIGKILL leaves the demo no say: its simulated PLC and camera rig, which ignore the stop
    signals, still end (their pipes from the demo close) rather than run on as orphans."""
    demo = Demo(tmp_path, "--parts", "2000")
    demo.wait_running()
    assert len(demo.group_running()) >= 3, demo.group_running()  # the demo, its PLC and its rig
    demo.signal(signal.SIGKILL)
    demo.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while running := demo.group_running():
        assert time.monotonic() < deadline, f"processes left running: {running}"
        time.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_second_signal_scores_what_was_recorded_without_running_the_belt_empty(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--parts", "2000", "--json")
    demo.wait_running()
    time.sleep(3.0)  # parts on the belt
    demo.signal(signal.SIGINT, group=True)
    time.sleep(0.3)
    demo.signal(signal.SIGINT, group=True)  # do not wait for the belt
    rc, out, err = demo.finish()
    clean(err)
    assert rc == 130, err[-2000:]
    assert "cellctl demo: stopped without running the belt empty" in err
    result = json.loads(out)
    assert result["belt_run_empty"] is False
    assert 0 < result["parts"] < 2000 and result["lost"] == 0 and result["misrouted"] == 0
    demo.assert_nothing_left()
