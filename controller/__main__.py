"""`cellctl` (and `python -m controller`): Ctrl-C while the program is still loading exits at
once, quietly, with 130; then the command line runs (`controller.cli`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

_received: list[int] = []  # the stop signals that came while loading


def _interrupted(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise SystemExit(128 + signum)  # no traceback out of whichever module was loading


@contextlib.contextmanager
def quiet_interrupt() -> Iterator[None]:
    """Inside, Ctrl-C exits with 130 and no traceback (the previous handler comes back after).
    Only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _load_cli() -> Callable[[], int]:
    from controller.cli import main as cli_main

    return cli_main


def main() -> int:
    try:
        with quiet_interrupt():
            cli_main = _load_cli()
    except BaseException:
        # The exit may come back wrapped (a class being built turns it into a RuntimeError).
        if not _received:
            raise
        name = signal.Signals(_received[0]).name
        print(f"cellctl: stopped by {name} while starting", file=sys.stderr)
        return 128 + _received[0]
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
