"""`cellctl` (and `python -m controller`): Ctrl-C while the program is still loading exits at
once with one line (`cellctl: stopped by SIGINT while starting`) and 130; then the command line
runs (`controller.cli`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType


def _shared_received() -> list[int]:
    """The stop signals that came while loading. `python -m controller` runs this file as
    `__main__`, and the commands import it again as `controller.__main__`: both keep one list."""
    main = sys.modules.get("__main__")
    if __name__ != "__main__" and getattr(getattr(main, "__spec__", None), "name", None) == __name__:
        return main._received  # type: ignore[union-attr,no-any-return]
    return []


_received: list[int] = _shared_received()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise SystemExit(128 + signum)  # no traceback out of whichever module was loading


@contextlib.contextmanager
def quiet_interrupt(signals: Iterable[int] = (signal.SIGINT,)) -> Iterator[None]:
    """Inside, Ctrl-C (and the other `signals`) exits with 128 + its number and no traceback
    (the previous handlers come back after). Only in the main thread, where Python runs signal
    handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupted) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted() -> int | None:
    """The first stop signal that `quiet_interrupt` turned into an exit, if one did."""
    return _received[0] if _received else None


def stopped_while_starting(who: str = "cellctl") -> int:
    """Say that a stop signal came while the program started (one line); its exit code."""
    signum = _received[0]
    print(f"{who}: stopped by {signal.Signals(signum).name} while starting", file=sys.stderr)
    return 128 + signum


def _load_cli() -> Callable[[], int]:
    from controller.cli import main as cli_main

    return cli_main


def main() -> int:
    try:
        with quiet_interrupt():
            cli_main = _load_cli()
        # A command may load more under `quiet_interrupt` (the demo: its console and its control
        # process); a Ctrl-C there ends the program as one here does.
        return cli_main()
    except BaseException:
        # The exit may come back wrapped (a class being built turns it into a RuntimeError).
        if not _received:
            raise
        return stopped_while_starting()


if __name__ == "__main__":
    sys.exit(main())
