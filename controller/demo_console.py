"""`cellctl demo` with its live console: the `cellctl console` of a demo run in a child process.

The control process (the simulated line and the cell service, `run_demo --headless`) runs as a
child in a process group of its own, so the terminal's keys and signals reach only this one.
This process draws exactly the console `cellctl console` draws (`controller.terminal.show`),
against the child's control socket: drawing costs the cell no more than a client polling its
status. Ctrl-C, SIGTERM and SIGHUP are passed on to the child, which drains and scores as the
headless demo does; what the child printed (its score, its log) is written once the console
has left the alternate screen. q stops the demo as Ctrl-C does, but is passed on as `KEY_STOP`:
the demo then ends as its score says (0, or 1 if a part was misrouted or lost), even when a
second q cut the wait for the belt short, never with 128 + a signal.

The child starts with the stop signals blocked, so one passed on while it still loads waits
until its `main` can take it: one line (`cellctl: stopped by SIGINT while starting`), exit 130,
never a traceback.

Run as a module (`python -m controller.demo_console OPTIONS_JSON`), it is that child.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import IO

from pydantic import TypeAdapter
from rich.console import Console, RenderableType

from controller.api import ApiClient, ApiError, default_socket
from controller.config import ConfigError
from controller.console import KEYS, render_unreachable
from controller.control import CellControl, ControlError
from controller.demo import KEY_STOP, STOP_SIGNALS, DemoOptions, run_demo, watch_lines
from controller.snapshot import StatusSnapshot
from controller.terminal import ConsoleSession, show

OPTIONS: TypeAdapter[DemoOptions] = TypeAdapter(DemoOptions)
#: How much lower the console runs than the cell where the idle class is not to be had.
CONSOLE_NICE = 10


def give_way() -> None:
    """Run the calling thread (and those it starts) only on CPU the cell leaves idle: Linux's
    idle scheduling class, where any of the cell's threads that wakes takes the core at once;
    a nice value elsewhere. Drawing waits, the cell does not (at nice 10 the drawing still
    raised the cell's p99 by about 4 ms on 2 cores; as idle class it costs what polling the
    status does: tests/benchmarks/test_console_cost.py)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(CONSOLE_NICE)


#: The child's log lines kept for after the console (the older ones are counted), as `held_logs`.
HELD_LINES = 500


#: What the console passes on to its control process: the stop signals and its q.
CHILD_STOPS = (*STOP_SIGNALS, KEY_STOP)

#: The message line once the run has ended, while the demo scores it and closes its line.
RUN_ENDED = "the run ended: the demo is scoring the parts and closing its simulated line …"


class _DemoClient(ApiClient):
    """The child's control facade; until it first answers, it says that the demo is starting
    rather than only that the service is not reachable. The demo removes its control socket
    once the run has ended (the cell stopped), then scores it and closes its links and line:
    from then on (`ended`) this answers the last status it got."""

    answered = False
    stopping = False
    ended = False
    last: StatusSnapshot | None = None

    def snapshot(self) -> StatusSnapshot:
        try:
            snap = super().snapshot()
        except ApiError as exc:
            if self.answered and not self.path.exists():  # not a busy cell: its socket is gone
                self.ended = True
            if self.ended and self.last is not None:
                return self.last
            if self.stopping:
                raise ApiError("the demo stopped its cell and is scoring the parts") from None
            if not self.answered:
                raise ApiError("the demo is starting its simulated line and cell …") from None
            raise ApiError(str(exc)) from None
        self.answered = True
        self.last = snap
        return snap


class DemoSession(ConsoleSession):
    """`cellctl console`'s session, keys, legend and confirmations; q stops the demo (as Ctrl-C
    does: the belt runs empty, then the score) instead of leaving the console."""

    def __init__(
        self, control: CellControl, stop_demo: Callable[[int], None], watch: list[str] | None = None
    ) -> None:
        super().__init__(control)
        self.stop_demo = stop_demo
        #: How to watch the plant connections (`--mqtt`, `--opcua`): the message line until a
        #: key's answer replaces it.
        if watch:
            self.message, self.message_until = " │ ".join(watch), math.inf

    def key(self, ch: str) -> bool:
        if ch in ("q", "Q"):
            self.pending = None
            self.stop_demo(KEY_STOP)
            return True
        if self._run_ended():  # no cell left to command
            return True
        return super().key(ch)

    def footer(self) -> str:
        return RUN_ENDED if self._run_ended() else super().footer()

    def away(self, exc: ControlError) -> RenderableType:
        if isinstance(self.control, _DemoClient) and not self.control.answered:
            starting = ("the demo is starting", "bold")
            return render_unreachable(str(exc), self.footer(), KEYS, starting, "waiting for the cell …")
        return super().away(exc)

    def _run_ended(self) -> bool:
        return isinstance(self.control, _DemoClient) and self.control.ended


class _Child:
    """The control process, the signals passed on to it, and its output held for later."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending: list[int] = []
        self.hung_up = False
        self.session: DemoSession | None = None
        self.client: _DemoClient | None = None
        self.out = bytearray()
        self.err: deque[bytes] = deque(maxlen=HELD_LINES)
        self.err_dropped = 0
        self._readers: list[threading.Thread] = []

    def forward(self, signum: int, frame: FrameType | None = None) -> None:
        """A stop signal (or q): to the child, which drains; a second one stops it at once."""
        if signum == signal.SIGHUP:
            self.hung_up = True  # the terminal is gone: stop drawing, wait for the score
        if self.client is not None:
            self.client.stopping = True
        if self.session is not None:
            self.session.say("stopping: the belt runs empty, then the score (q or Ctrl-C again: at once)")
        if self.proc is None:
            self.pending.append(signum)
        elif self.proc.poll() is None:
            self.proc.send_signal(signum)

    def start(self) -> None:
        argv = [sys.executable, "-m", "controller.demo_console", OPTIONS.dump_json(self.opts).decode()]
        # The child inherits the blocked mask: a stop passed on while it loads waits for `main`.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_STOPS)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_out, args=(self.proc.stdout,), name="demo-out", daemon=True),
            threading.Thread(target=self._read_err, args=(self.proc.stderr,), name="demo-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        for signum in self.pending:
            self.proc.send_signal(signum)

    def _read_out(self, pipe: IO[bytes]) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):  # type: ignore[attr-defined]
            self.out += chunk

    def _read_err(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            if len(self.err) == HELD_LINES:
                self.err_dropped += 1
            self.err.append(line)

    def ended(self) -> bool:
        return self.hung_up or self.proc is None or self.proc.poll() is not None

    def finish(self) -> int:
        """Wait for the child (stopping it if it still runs); its exit code as a shell has it."""
        assert self.proc is not None
        if self.proc.poll() is None and not self.pending and not self.hung_up:
            self.forward(signal.SIGTERM)  # the console failed: the demo still drains
        rc = self.proc.wait()
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        for reader in self._readers:
            reader.join(timeout=5.0)
        return rc if rc >= 0 else 128 - rc

    def relay(self) -> None:
        """What the child wrote, now that the screen is closed (nothing if the terminal is gone)."""
        with contextlib.suppress(OSError):
            if self.err_dropped:
                sys.stderr.write(f"cellctl demo: {self.err_dropped} earlier log lines were dropped\n")
            sys.stderr.buffer.write(b"".join(self.err))
            sys.stderr.flush()
            sys.stdout.buffer.write(bytes(self.out))
            sys.stdout.flush()


def run_with_console(opts: DemoOptions, console: Console) -> int:
    """Run the demo's control process and its console on `console` (a terminal) until it ends;
    the child's exit code (`run_demo`'s)."""
    opts = replace(opts, headless=True, socket=opts.socket or default_socket())
    child = _Child(opts)
    previous = {sig: signal.signal(sig, child.forward) for sig in STOP_SIGNALS}
    try:
        child.start()
        give_way()  # after the child started, which keeps its own priority
        assert opts.socket is not None
        child.client = _DemoClient(opts.socket, status_timeout=1.0)
        child.session = DemoSession(child.client, child.forward, watch_lines(opts.mqtt, opts.opcua))
        with contextlib.suppress(OSError):  # the terminal hung up: there is nothing to draw on
            show(child.session, console, ended=child.ended)
        rc = child.finish()
    finally:
        if child.proc is not None and child.proc.poll() is None:  # something failed here
            child.finish()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    child.relay()
    return rc


def _watch_parent() -> None:
    """The parent holds this process's stdin: end of file means it is gone. Then stop as on
    SIGTERM (drain, clean up) rather than run on unseen."""
    while os.read(0, 4096):  # not sys.stdin: its lock would be held at interpreter shutdown
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    """The control process: until the demo takes the stop signals itself (`StopSignals`), one
    passed on (held since `_Child.start`) ends it with one line and 128 + its number (0 for q)."""
    from controller.__main__ import interrupted, quiet_interrupt, stopped_while_starting
    from controller.logs import setup_logging

    try:
        with quiet_interrupt(CHILD_STOPS):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_STOPS)
            opts = OPTIONS.validate_json(argv[0])
            setup_logging(opts.verbose)
            threading.Thread(target=_watch_parent, name="demo-parent", daemon=True).start()
            return run_demo(replace(opts, headless=True), keys=True)
    except ConfigError as exc:  # as `cellctl` reports them: a clear line, not a traceback
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    except BaseException as exc:
        if interrupted() == KEY_STOP:
            print("cellctl demo: stopped by q while starting", file=sys.stderr)
            return 0
        if interrupted() is not None:
            return stopped_while_starting()
        if not isinstance(exc, RuntimeError | OSError | TimeoutError):
            raise
        print(f"cellctl demo: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
