"""Fixtures the unit tests share."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def demo_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """`cellctl demo` never really starts here: the options it would run with are recorded."""
    import controller.demo as demo

    calls: list[Any] = []

    def fake(opts: Any) -> int:
        calls.append(opts)
        return 0

    monkeypatch.setattr(demo, "run_demo", fake)
    return calls
