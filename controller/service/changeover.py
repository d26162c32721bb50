"""Recipe changeover: validate, load and warm a recipe beside the running one, then switch.

One changeover at a time, only while the core says it is safe; every attempt, accepted or
refused, is audited and logged with its reason (one problem a line). The active recipe stays
on any failure. Lookups, checks and model loads run off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from controller.config import CellConfig, Recipe, content_hash
from controller.contract import RecipeResult
from controller.core.cell import CellCore
from controller.events import Event, recipe_event
from controller.inference.runner import file_sha256
from controller.interfaces import Camera, CameraError
from controller.recipes import RecipeIndex, RecipeLookupError, check_recipe
from controller.records import RecordStore
from controller.service.generations import ModelGenerations

log = logging.getLogger("controller.service")  # the service's log lines keep their name

#: A refused recipe's reason carries at most this many problems, one a line (API: a JSON list).
MAX_REFUSAL_PROBLEMS = 50


class _Asked(NamedTuple):
    """The recipe asked for, against the active one."""

    unchanged: bool  # the active recipe, same content, same model file: nothing to do
    note: str  # the answer (unchanged), or what the changeover's answer starts with


class Changeover:
    """Recipe activations for one cell, from the API or the PLC."""

    def __init__(
        self,
        cell: CellConfig,
        recipe_dir: Path,
        cameras: dict[str, Camera],
        core: CellCore,
        models: ModelGenerations,
        store: RecordStore,
        publish: Callable[[Event], None] | None = None,
    ) -> None:
        """`publish`: where each attempt's RecipeActivated or RecipeRefused goes (the outlet)."""
        self.cell, self.cameras, self.core, self.models, self.store = cell, cameras, core, models, store
        self._publish = publish
        self.recipes = RecipeIndex(recipe_dir)  # recipes by name and number, parsed once per change
        self._changing = False
        self._plc_requests: set[asyncio.Task[None]] = set()  # PLC recipe requests in progress

    async def activate(
        self, source: str, name: str | None = None, number: int | None = None
    ) -> tuple[RecipeResult, str]:
        """Validate, load and warm a recipe, then switch to it; the active one stays on any failure.
        `name` is a name, number (digits) or file name in the recipe folder. The reason of a
        refusal holds one problem a line."""
        wanted = name if name is not None else f"number {number}"
        old = self.models.active
        result, reason, to_hash, new, to_name = RecipeResult.NONE, "", "", None, wanted
        if self._changing:
            result, reason = RecipeResult.BUSY, "another changeover is in progress"
        elif (why := self.core.recipe_refusal()) is not None:
            result, reason = RecipeResult.NOT_SAFE, why
        elif isinstance(path := await asyncio.to_thread(self._lookup, name, number), RecipeLookupError):
            # none (with a did-you-mean and the recipes there are), or two files with its name or number
            by_number = number is not None or (name or "").isdigit()
            unknown = RecipeResult.UNKNOWN_NUMBER if by_number else RecipeResult.UNKNOWN_RECIPE
            result = unknown if path.unknown else RecipeResult.INVALID
            reason = str(path)
        elif self._changing:  # another one started while this one looked its file up
            result, reason = RecipeResult.BUSY, "another changeover is in progress"
        else:
            self._changing = True
            try:
                checked = await asyncio.to_thread(check_recipe, path, self.cell, False)
                missing = [
                    c for c in (checked.recipe.cameras if checked.recipe else ()) if c not in self.cameras
                ]
                if checked.problems or checked.recipe is None:  # one problem a line, every one
                    result = RecipeResult.INVALID
                    reason = "\n".join(str(p) for p in checked.problems[:MAX_REFUSAL_PROBLEMS])
                elif missing:
                    result, reason = RecipeResult.INVALID, f"cameras {missing} are not running in this cell"
                elif (same := await asyncio.to_thread(self._against_active, checked.recipe, path)).unchanged:
                    result, reason, to_hash = RecipeResult.ACTIVE, same.note, old.recipe_hash
                    to_name = checked.recipe.name
                else:
                    try:
                        new = await asyncio.to_thread(self.models.build, checked.recipe, path.parent)
                    except Exception as exc:  # onnxruntime's errors are untyped
                        result, reason = RecipeResult.MODEL_FAILED, str(exc)[:300]
                    else:
                        to_hash = new.recipe_hash
                        if (why := self.core.recipe_refusal()) is not None:  # state changed while loading
                            result, reason = RecipeResult.NOT_SAFE, why
                        else:
                            self.models.activate(new)
                            boundary = self.core.activate(new.plan)
                            result = RecipeResult.ACTIVE
                            provider = new.runner.info.provider
                            reason = f"{same.note}judges parts from {boundary} on, model on {provider}"
                            await asyncio.to_thread(self._apply_camera_settings, new.recipe)
            except Exception as exc:  # whatever a file holds: an audited refusal, never a lost reply
                log.error("recipe %s from %s: %s: %s", wanted, source, type(exc).__name__, exc)
                if result is not RecipeResult.ACTIVE:
                    result, reason = RecipeResult.INVALID, f"{type(exc).__name__}: {exc}"[:300]
            finally:
                self._changing = False
        to_name = new.recipe.name if new else to_name
        self.store.put_audit(
            source, old.recipe.name, old.recipe_hash, to_name, to_hash, result.name, reason,
        )  # fmt: skip
        if self._publish is not None:
            self._publish(
                recipe_event(source, to_name, to_hash, result, reason, old.recipe.name, old.recipe_hash)
            )
        level = logging.INFO if result is RecipeResult.ACTIVE else logging.WARNING
        head, *more = reason.splitlines() or [""]
        log.log(level, "recipe %s from %s: %s %s", wanted, source, result.name, head)
        for line in more:
            log.log(level, "recipe %s from %s:   %s", wanted, source, line)
        return result, reason

    def _against_active(self, recipe: Recipe, path: Path) -> _Asked:
        """Whether `recipe` from `path` is the active recipe with the same content and model
        file, so there is nothing to do, or the same recipe changed on disk, to be reloaded
        (blocking: reads the model file)."""
        active = self.models.active
        if recipe.name != active.recipe.name:
            return _Asked(False, "")
        rhash = content_hash(recipe)
        if rhash != active.recipe_hash:
            return _Asked(
                False, f"reloads {recipe.name}, changed on disk ({active.recipe_hash[:12]} → {rhash[:12]}); "
            )
        model = file_sha256(recipe.model_file(path.parent))
        if model != active.runner.info.sha256:  # retrained in place: the recipe's file is the same
            was = active.runner.info.sha256
            return _Asked(
                False,
                f"reloads {recipe.name}, its model changed on disk (sha256 {was[:12]} → {model[:12]}); ",
            )
        return _Asked(True, f"{recipe.name} is already active ({rhash[:12]}); nothing to do")

    def _lookup(self, name: str | None, number: int | None) -> Path | RecipeLookupError:
        """The one recipe file asked for, or why there is none (blocking: a worker thread)."""
        try:
            return self.recipes.resolve(name, number)
        except RecipeLookupError as exc:
            return exc

    def _apply_camera_settings(self, recipe: Recipe) -> None:
        """Exposure and gain of the recipe, on cameras that take them (Basler; not the simulated ones)."""
        for name, settings in recipe.cameras.items():
            set_exposure = getattr(self.cameras[name], "set_exposure", None)
            if set_exposure is None:
                continue
            try:
                set_exposure(settings.exposure_us, settings.gain_db)
            except CameraError as exc:  # the camera keeps its last values
                log.error("camera %s: recipe %s exposure/gain not applied: %s", name, recipe.name, exc)

    def request_from_plc(self, seq: int, number: int) -> None:
        """The PLC asks for recipe `number`: activated in a task, answered whatever happens."""
        task = asyncio.get_running_loop().create_task(
            self._plc_recipe_request(seq, number), name=f"recipe-request-{seq}"
        )
        self._plc_requests.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._plc_requests.discard)

    async def _plc_recipe_request(self, seq: int, number: int) -> None:
        result = RecipeResult.INVALID
        try:
            result, _ = await self.activate("plc", number=number)
        except Exception as exc:  # the PLC gets an answer whatever happened
            log.error("PLC recipe request %d (recipe %d): %s: %s", seq, number, type(exc).__name__, exc)
        finally:
            self.core.answer_recipe(seq, result)
