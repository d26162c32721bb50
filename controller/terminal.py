"""`cellctl console`: attach to the running service and show its console live, with keys.

It polls the local API a few times a second and redraws in place on the terminal's alternate
screen (no scrolling, no flicker). Keys send the state commands; stop and abort ask first.
When the service goes away it says so and reconnects when it is back.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty, Queue

from rich.console import Console, RenderableType
from rich.live import Live

from controller.api import ApiClient
from controller.console import COMMAND_KEYS, KEYS, render_status, render_unreachable
from controller.contract import Command
from controller.control import CellControl, ControlError

CONFIRM = {"stop", "abort"}


@contextlib.contextmanager
def _keys(stop: threading.Event) -> Iterator[Queue[str]]:
    """Single key presses from a terminal's stdin, on a queue (nothing when stdin is not a tty)."""
    q: Queue[str] = Queue(maxsize=16)
    if not sys.stdin.isatty():
        yield q
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)

    def read() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                ch = os.read(fd, 1).decode(errors="ignore")
                if ch and not q.full():
                    q.put(ch)

    tty.setcbreak(fd)
    reader = threading.Thread(target=read, name="console-keys", daemon=True)
    reader.start()
    try:
        yield q
    finally:
        stop.set()
        reader.join(timeout=1.0)
        # TCSAFLUSH: keys typed but not read are dropped, never handed to the shell afterwards.
        # A terminal that hung up cannot be set any more (termios.error): nothing to restore.
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


class ConsoleSession:
    """The console's state between two redraws: pending confirmation, message. It drives the
    cell through its control facade (`ApiClient` for a running service)."""

    def __init__(self, control: CellControl) -> None:
        self.control = control
        self.pending: str | None = None
        self.message = ""
        self.message_until = 0.0

    def key(self, ch: str) -> bool:
        """Handle one key; False to quit."""
        if ch in ("q", "Q"):
            return False
        if self.pending is not None:
            asked, self.pending = self.pending, None
            if ch in ("y", "Y"):
                self.send(asked)
            else:
                self.say(f"{asked} cancelled")
            return True
        cmd = COMMAND_KEYS.get(ch.lower())
        if cmd in CONFIRM:
            self.pending = cmd
        elif cmd is not None:
            self.send(cmd)
        return True

    def send(self, cmd: str) -> None:
        try:
            refused = self.control.command(Command[cmd.upper()], source="console")
        except ControlError as exc:
            self.say(f"{cmd}: {exc}")
            return
        if refused is not None:
            self.say(f"{cmd} refused: {refused}")
            return
        try:
            state = self.control.snapshot().state
        except ControlError:
            state = "state unknown"
        self.say(f"{cmd}: accepted, {state}")

    def say(self, text: str) -> None:
        self.message, self.message_until = text, time.monotonic() + 5.0

    def footer(self) -> str:
        """The message line under the screen (a question, a command's answer); the key legend
        is shown below it always."""
        if self.pending is not None:
            return f"press y to {self.pending.upper()} the cell, any other key to cancel"
        if self.message and time.monotonic() < self.message_until:
            return self.message
        return ""

    def frame(self, size: tuple[int, int]) -> RenderableType:
        try:
            snap = self.control.snapshot()
        except ControlError as exc:  # away or busy: shown, retried
            return self.away(exc)
        return render_status(snap, size, self.footer(), KEYS)

    def away(self, exc: ControlError) -> RenderableType:
        """The screen while the service does not answer (`exc` says why)."""
        return render_unreachable(str(exc), self.footer(), KEYS)


def attach(socket: Path, refresh_hz: float = 4.0) -> int:
    """Run the console until q or Ctrl-C. Log records wait until the screen is closed."""
    return show(ConsoleSession(ApiClient(socket, status_timeout=1.0)), Console(), refresh_hz)


def show(
    session: ConsoleSession,
    console: Console,
    refresh_hz: float = 4.0,
    ended: Callable[[], bool] = lambda: False,
) -> int:
    """Draw `session` on `console`'s alternate screen and hand it the keys until a key quits
    (`session.key` returns False), Ctrl-C, or `ended()` (checked at every redraw). Log records
    wait until the screen is closed."""
    from controller.logs import held_logs

    stop = threading.Event()
    with held_logs(), _keys(stop) as keys, Live(console=console, screen=True, auto_refresh=False) as live:
        try:
            while not ended():
                live.update(session.frame((console.width, console.height)), refresh=True)
                deadline = time.monotonic() + 1.0 / refresh_hz
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        ch = keys.get(timeout=left)
                    except Empty:
                        break
                    if not session.key(ch):
                        return 0
                    live.update(session.frame((console.width, console.height)), refresh=True)
            # The last screen, whatever the drawing missed while the end was busy (it draws only
            # on CPU the cell leaves idle): e.g. the demo's "the run ended" once it has scored.
            live.update(session.frame((console.width, console.height)), refresh=True)
        except KeyboardInterrupt:
            return 0
    return 0
