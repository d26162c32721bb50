"""Issue 15, item 4: `cellctl demo` on a terminal is `cellctl console` on the demo's cell. Run in
a pseudo-terminal of 80x24 that is its controlling terminal: its keys command the cell (hold,
the stop confirmation), it draws on the alternate screen and leaves it, the score comes after,
Ctrl-C (a key of the terminal), SIGTERM and q drain it, no key is left for the shell, and
nothing is left behind (processes, control socket, temporary folders)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

ALT_ON, ALT_OFF = b"\x1b[?1049h", b"\x1b[?1049l"


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # stdin (the terminal) becomes the session's terminal


class TerminalDemo:
    """`cellctl demo` in a session of its own whose controlling terminal is a pseudo-terminal
    of 80x24; what it draws is collected from the terminal's other side."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp = tmp
        (tmp / "t").mkdir()
        self.socket = tmp / "s" / "cell.sock"
        self.env = dict(
            os.environ, TMPDIR=str(tmp / "t"), CELLCTL_SOCKET=str(self.socket), TERM="xterm-256color"
        )
        self.env.pop("FORCE_COLOR", None)
        self.env.pop("NO_COLOR", None)
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.output = bytearray()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "demo", *args],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, env=self.env,
            start_new_session=True, preexec_fn=_controlling_terminal,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process let go of the terminal
                return
            if not chunk:
                return
            self.output += chunk

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def status(self) -> dict[str, object] | None:
        r = subprocess.run(
            [sys.executable, "-m", "controller", "status", "--json", "--socket", str(self.socket)],
            capture_output=True, text=True, env=self.env, timeout=30,
        )  # fmt: skip
        return json.loads(r.stdout) if r.stdout.strip().startswith("{") else None

    def wait_state(self, state: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while (s := self.status()) is None or s.get("state") != state:
            assert self.proc.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, f"not {state} in {timeout} s: {s}"
            time.sleep(0.3)

    def wait_shown(self, text: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert time.monotonic() < deadline, f"{text!r} not shown: {self.text()[-2000:]}"
            time.sleep(0.1)

    def finish(self, timeout: float = 90.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self.text()[-2000:]}") from None
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return rc

    def close(self) -> tuple[int, str]:
        """Keys typed but never read by the demo (that the shell would get), and all it wrote."""
        pending = struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0]
        os.close(self.slave)
        self.reader.join(timeout=10)
        os.close(self.master)
        return pending, self.text()

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def assert_nothing_left(self) -> None:
        left = [p.name for p in (self.tmp / "t").iterdir() if p.name != ".ses"]
        assert left == [], f"temporary files left behind: {left}"
        assert not self.socket.exists(), "a stale control socket was left behind"
        deadline = time.monotonic() + 10
        while running := self.session_running():
            assert time.monotonic() < deadline, f"processes left running: {running}"
            time.sleep(0.2)

    def session_running(self) -> list[str]:
        ps = ["ps", "-o", "stat=,args=", "-s", str(self.proc.pid)]  # the demo's whole session
        found = subprocess.run(ps, capture_output=True, text=True).stdout
        return [line for line in found.splitlines() if not line.lstrip().startswith("Z")]


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["q", "ctrl-c", "sigterm"])
def test_the_demo_is_the_console_with_its_keys_and_leaves_nothing(tmp_path: Path, how: str) -> None:
    demo = TerminalDemo(tmp_path, "--parts", "3000")
    try:
        demo.wait_state("EXECUTE")
        demo.wait_shown(b"h hold")  # the legend of `cellctl console`
        demo.type(b"h")
        demo.wait_state("HELD")
        demo.type(b"u")
        demo.wait_state("EXECUTE")
        demo.type(b"x")  # stop asks first; any other key cancels
        demo.wait_shown(b"press y to STOP")
        demo.type(b"n")
        demo.wait_shown(b"stop cancelled")
        assert (demo.status() or {}).get("state") == "EXECUTE"
        if how == "q":
            demo.type(b"q")
        elif how == "ctrl-c":
            demo.type(b"\x03")  # the terminal sends SIGINT to its foreground process group
        else:
            demo.proc.send_signal(signal.SIGTERM)
        demo.wait_shown(b"stopping: the belt runs empty")
        demo.type(b"zw")  # typed while it drains: read by the console, never left for the shell
        rc = demo.finish()
    finally:
        pending, text = demo.close()
    assert rc == 0, text[-3000:]
    for bad in ("Traceback", "KeyboardInterrupt", "EOFError"):
        assert bad not in text, text[-3000:]
    out = bytes(demo.output)
    assert ALT_ON in out and ALT_OFF in out
    after = out[out.rindex(ALT_OFF) :].decode(errors="replace")
    assert "simulated PLC:" in after and "passed" in after and "misrouted" in after and "0 lost" in after, (
        after
    )
    assert pending == 0, "keys were left for the shell"
    demo.assert_nothing_left()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_json_goes_to_stdout_and_the_console_to_stderr(tmp_path: Path) -> None:
    """With --json the console draws on stderr (the terminal) and stdout carries the result."""
    tmp = tmp_path
    (tmp / "t").mkdir()
    sock = tmp / "s" / "cell.sock"
    env = dict(os.environ, TMPDIR=str(tmp / "t"), CELLCTL_SOCKET=str(sock), TERM="xterm-256color")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    drawn = bytearray()

    def read() -> None:
        with __import__("contextlib").suppress(OSError):
            while chunk := os.read(master, 65536):
                drawn.extend(chunk)

    threading.Thread(target=read, daemon=True).start()
    r = subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--parts", "60", "--json"],
        stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, timeout=180, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    time.sleep(0.5)
    os.close(master)
    result = json.loads(r.stdout)
    assert r.returncode == 0 and result["parts"] == 60 and result["lost"] == 0
    assert ALT_ON in drawn and ALT_OFF in drawn
    assert not sock.exists() and [p.name for p in (tmp / "t").iterdir() if p.name != ".ses"] == []


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_run_that_ends_by_itself_says_it_is_scoring(tmp_path: Path) -> None:
    """Issue 15, item 6: once its parts are through, the demo closes its control socket and
    scores; the console keeps the last figures and says so, not "service not reachable"."""
    demo = TerminalDemo(tmp_path, "--parts", "150")
    try:
        rc = demo.finish()
    finally:
        _, text = demo.close()
    assert rc == 0, text[-3000:]
    out = bytes(demo.output)
    assert b"the run ended" in out[: out.rindex(ALT_OFF)], text[-3000:]
    demo.assert_nothing_left()
