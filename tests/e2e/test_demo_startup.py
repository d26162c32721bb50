"""Issue 15: Ctrl-C (a key of the terminal) at any moment while `cellctl demo` starts gives
one line and exit 130, never a traceback: while the program loads, while the console starts
its control process and while that process loads and builds its line. Once the line runs, it
drains and scores as ever."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_demo_console import TerminalDemo

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][0-9A-B]|\r")


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("delay", [0.3, 0.8, 1.2, 1.6, 2.2, 3.0])
def test_ctrl_c_while_the_demo_starts_gives_one_line_and_130(tmp_path: Path, delay: float) -> None:
    import time

    demo = TerminalDemo(tmp_path, "--parts", "2000")
    try:
        time.sleep(delay)
        demo.type(b"\x03")  # the terminal sends SIGINT to its foreground process group
        rc = demo.finish()
    finally:
        _, text = demo.close()
    for bad in ("Traceback", "KeyboardInterrupt", "EOFError"):
        assert bad not in text, text[-3000:]
    lines = [ln.strip() for ln in ANSI.sub("", text).splitlines()]
    if rc == 0:  # the line ran already: it drained and scored
        assert any("misrouted" in ln for ln in lines), text[-3000:]
    else:
        assert rc == 130, text[-3000:]
        said = [ln for ln in lines if "stopped by SIGINT" in ln]
        assert len(said) == 1, lines
    demo.assert_nothing_left()
