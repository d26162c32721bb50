"""The core's attributes that the service still reads or sets directly, all in one place.

Each of these is for a later step to replace with a method of `CellCore` (the core owning its
state); until then nothing else in the service touches `undecided`, `counts` or
`inference_ready`.
"""

from __future__ import annotations

from collections import Counter

from controller.core.cell import CellCore


class CoreInternals:
    """Reads and writes of `CellCore` attributes on the service's behalf (on the event loop)."""

    def __init__(self, core: CellCore) -> None:
        self.core = core

    def undecided(self, part_id: int) -> bool:
        """The part is registered and has no verdict yet."""
        return part_id in self.core.undecided

    def any_undecided(self) -> bool:
        return bool(self.core.undecided)

    def generation_of(self, part_id: int) -> int:
        """The recipe generation that judges an undecided part."""
        return int(self.core.undecided[part_id].plan.generation)

    def generations_in_use(self) -> set[int]:
        """The recipe generations that undecided parts depend on."""
        return {t.plan.generation for t in self.core.undecided.values() if t.plan is not None}

    def count(self, key: str) -> None:
        """One more of a core counter."""
        self.core.counts[key] += 1

    def counts(self) -> Counter[str]:
        """The core's counters (read only)."""
        return self.core.counts

    def inference_ready(self) -> bool:
        return self.core.inference_ready

    def set_inference_ready(self) -> None:
        """The first model generation runs: the core may start."""
        self.core.inference_ready = True
