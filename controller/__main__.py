"""`cellctl` (and `python -m controller`): Ctrl-C while the program is still loading exits at
once, quietly, with 130; then the command line runs (`controller.cli`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
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


def main() -> int:
    with quiet_interrupt():
        from controller.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
