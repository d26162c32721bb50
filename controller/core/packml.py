"""PackML (ISA-TR88.00.02) states and commands, and the cell's state machine on `transitions`.

One table of transitions; queued events; one after-state-change hook that logs and hands the
owner a `StateChanged` to publish. No I/O inside: acting states (Resetting, Starting, ...) are
left by the owner calling `state_complete()` once the work they stand for is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from transitions import Machine

from controller.contract import Command, State

log = logging.getLogger(__name__)

__all__ = [
    "ACTING", "TRANSITIONS", "CellStateMachine", "Command", "CommandRefused", "State", "StateChanged",
]  # fmt: skip


S = State
ACTING = frozenset(
    {
        S.CLEARING, S.STARTING, S.STOPPING, S.ABORTING, S.HOLDING, S.UNHOLDING,
        S.SUSPENDING, S.UNSUSPENDING, S.RESETTING, S.COMPLETING,
    }
)  # fmt: skip

# (trigger, sources, destination). "state_complete" leaves an acting state.
TRANSITIONS: tuple[tuple[str, tuple[State, ...], State], ...] = (
    ("reset", (S.STOPPED, S.COMPLETE), S.RESETTING),
    ("start", (S.IDLE,), S.STARTING),
    ("hold", (S.EXECUTE, S.SUSPENDED), S.HOLDING),
    ("unhold", (S.HELD,), S.UNHOLDING),
    ("suspend", (S.EXECUTE,), S.SUSPENDING),
    ("unsuspend", (S.SUSPENDED,), S.UNSUSPENDING),
    ("complete", (S.EXECUTE,), S.COMPLETING),
    (
        "stop",
        (
            S.IDLE,
            S.STARTING,
            S.EXECUTE,
            S.HOLDING,
            S.HELD,
            S.UNHOLDING,
            S.SUSPENDING,
            S.SUSPENDED,
            S.UNSUSPENDING,
            S.COMPLETING,
            S.COMPLETE,
            S.RESETTING,
        ),
        S.STOPPING,
    ),
    ("abort", tuple(s for s in State if s not in (S.UNDEFINED, S.ABORTING, S.ABORTED)), S.ABORTING),
    ("clear", (S.ABORTED,), S.CLEARING),
    ("state_complete", (S.RESETTING,), S.IDLE),
    ("state_complete", (S.STARTING,), S.EXECUTE),
    ("state_complete", (S.HOLDING,), S.HELD),
    ("state_complete", (S.UNHOLDING,), S.EXECUTE),
    ("state_complete", (S.SUSPENDING,), S.SUSPENDED),
    ("state_complete", (S.UNSUSPENDING,), S.EXECUTE),
    ("state_complete", (S.COMPLETING,), S.COMPLETE),
    ("state_complete", (S.STOPPING,), S.STOPPED),
    ("state_complete", (S.ABORTING,), S.ABORTED),
    ("state_complete", (S.CLEARING,), S.STOPPED),
)


class CommandRefused(Exception):
    """A command the current state does not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """One PackML transition: an event of the cell's outlet, and an action the core hands out.

    `trigger` is what moved it: a command in lower case ("hold") or "state_complete" (an acting
    state's work is done). `cause` says who or why, where known: "plc" for a PLC command, "alarm
    PLC_LINK_LOST" for a hold the cell made itself, what the owner passed for its own commands.
    """

    from_state: State
    to_state: State
    trigger: str
    cause: str = ""
    _: KW_ONLY
    time: float | None = None  # wall clock (UNIX s); the pure core has none: the outlet stamps it


class CellStateMachine:
    """The cell's PackML state. Owned by one thread or loop; commands are checked, not guessed."""

    state: State

    def __init__(self, on_change: Callable[[StateChanged], None] | None = None) -> None:
        self._on_change = on_change
        self._previous = S.STOPPED
        self._machine = Machine(
            model=self,
            states=[s for s in State if s is not S.UNDEFINED],
            initial=S.STOPPED,
            transitions=[{"trigger": t, "source": list(src), "dest": dst} for t, src, dst in TRANSITIONS],
            auto_transitions=False,
            queued=True,
            after_state_change=self._changed,
            send_event=True,
        )

    def _changed(self, event: Any) -> None:
        old, new = self._previous, self.state
        self._previous = new
        cause = str(event.kwargs.get("cause", ""))
        log.info("state %s -> %s (%s%s)", old.name, new.name, event.event.name, f", {cause}" * bool(cause))
        if self._on_change is not None:
            self._on_change(StateChanged(old, new, event.event.name, cause))

    def allowed(self) -> list[Command]:
        """Commands the current state accepts."""
        names = set(self._machine.get_triggers(self.state))
        return [c for c in Command if c.name.lower() in names]

    def command(self, cmd: Command, cause: str = "") -> None:
        """Apply a PackML command, or raise CommandRefused with the reason. `cause`: who or why."""
        if cmd is Command.UNDEFINED:
            raise CommandRefused("command 0 (Undefined) does nothing")
        if cmd not in self.allowed():
            ok = ", ".join(c.name.lower() for c in self.allowed()) or "none"
            raise CommandRefused(f"{cmd.name.lower()} is not allowed in {self.state.name} (allowed: {ok})")
        self._fire(cmd.name.lower(), cause)

    def complete_acting(self, cause: str = "") -> bool:
        """Leave the current acting state (its work is done). False if not in an acting state."""
        if self.state not in ACTING:
            return False
        self._fire("state_complete", cause)
        return True

    def _fire(self, name: str, cause: str) -> None:
        getattr(self, name)(cause=cause)
