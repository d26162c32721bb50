"""What every config model is built on: the strict, frozen base model and `Invalid`, the error
their cross-field checks raise. A leaf: the cell config (`controller.config`) and the plant
sections it embeds (`controller.plant`) both build on it, so neither imports the other for it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

#: A field's path within a model: keys and list indexes (`cameras.0.name`).
Loc = tuple[str | int, ...]


class Invalid(ValueError):
    """What a cross-field check found, every item at once: (field path within the model that
    raises it, expected, found). The config loader turns each into a `file:line: field:
    expected …, found …` problem at its own line."""

    def __init__(self, items: list[tuple[Loc, str, str]]) -> None:
        super().__init__(
            "; ".join(f"{'.'.join(map(str, loc))}: expected {e}, found {f}" for loc, e, f in items)
        )
        self.items = items


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, and it is frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
