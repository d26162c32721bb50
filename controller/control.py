"""One control facade: what may be asked of a running cell, in process or over the local API.

`CellService` offers it on its event loop; the local API serves it on a socket
(`controller.api.ControlApi`) and `controller.api.ApiClient` offers it again on the client's
side, so the console is written once against `CellControl` whichever side it runs on.
"""

from __future__ import annotations

from typing import Protocol

from controller.contract import Command, RecipeResult
from controller.snapshot import StatusSnapshot


class ControlError(Exception):
    """The cell could not be reached or could not answer; the message says why (one line)."""


class CellControl(Protocol):
    """Commands, recipe activation and status of one cell. In process, call it on the cell's
    event loop; a remote one raises `ControlError` when the cell cannot be reached."""

    def command(self, cmd: Command, source: str = "api") -> str | None:
        """Apply a state command; the reason when refused, else None. `source` is who sent it
        ("api", "console", "opcua"): the state change's cause, so the plant sees who stopped
        the line."""
        ...

    async def activate_recipe(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        """Validate, load and switch to a recipe (by name, number or file name); the result and
        its reason (a refusal: one problem a line). `source` is who asked, for the audit."""
        ...

    def snapshot(self) -> StatusSnapshot:
        """The cell's status now."""
        ...
