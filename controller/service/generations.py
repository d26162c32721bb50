"""Model generations: one per activated recipe, each with its plan, model session and worker.

A changeover builds a new generation (load and warm its model, blocking: seconds) beside the
active one, then activates it; parts registered before the switch are still judged by theirs.
A generation is retired (its worker stopped) once it is not active and no undecided part
depends on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from controller.config import CellConfig, Recipe, content_hash
from controller.core.cell import CellPlan
from controller.core.fusion import FusionRule
from controller.inference.adapters import make_adapter
from controller.inference.preprocess import Preprocessor, PreprocessSpec
from controller.inference.runner import GpuOptions, ModelLoadError, OnnxRunner
from controller.inference.validation import validation_batch
from controller.inference.worker import InferenceWorker, Outcome

log = logging.getLogger("controller.service")  # the service's log lines keep their name


@dataclass
class Stack:
    """Everything one recipe generation needs: its plan, model session and inference worker."""

    recipe: Recipe
    recipe_hash: str
    plan: CellPlan
    runner: OnnxRunner
    worker: InferenceWorker


def build_plan(cell: CellConfig, recipe: Recipe) -> CellPlan:
    """Cell geometry in encoder counts for the recipe's cameras."""
    cpm = cell.encoder.counts_per_mm

    def counts(mm: float) -> int:
        return round(mm * cpm)

    st = cell.stations
    f = recipe.fusion
    return CellPlan(
        cameras=tuple(recipe.cameras),
        camera_offsets={n: counts(trigger_mm(cell, recipe, n)) for n in recipe.cameras},
        decision_offset=counts(recipe.reject.decision_mm or st.decision_mm),
        deadline_offset=counts(st.deadline_mm),
        reject_offset=counts(st.reject_mm),
        confirm_offset=counts(st.confirm_mm),
        match_tolerance=counts(cell.match_tolerance_mm),
        max_counts_per_s=cell.max_belt_speed_mm_s * cpm,
        trigger_cameras=tuple(c.name for c in cell.cameras) if cell.plc.trigger_ring else (),
        counts_per_mm=cpm,
        min_part_pitch=max(1, counts(cell.min_part_pitch_mm)),
        ack_timeout_s=cell.plc.ack_timeout_ms / 1000.0,
        plc_heartbeat_timeout_s=cell.plc.heartbeat_timeout_s,
        fusion=FusionRule(f.rule, f.k, f.weights, f.threshold),
        hold_on_unconfirmed_kick=recipe.reject.stop_on_confirm_failure,
    )


def trigger_mm(cell: CellConfig, recipe: Recipe, camera: str) -> float:
    """Where `camera` fires for this product: its station plus the recipe's offset (mm)."""
    return cell.camera(camera).station_mm + recipe.cameras[camera].trigger_offset_mm


class ModelGenerations:
    """The active generation and those that undecided parts still depend on, by number.
    The first is built here; its worker starts with `start()`. `on_results` gets every
    worker's batches of outcomes (on the worker's thread)."""

    def __init__(
        self,
        cell: CellConfig,
        recipe: Recipe,
        recipe_dir: Path,
        data_root: Path,
        on_results: Callable[[list[Outcome]], None],
    ) -> None:
        self.cell, self.data_root, self.on_results = cell, data_root, on_results
        self._next = 0
        self.active = self.build(recipe, recipe_dir)
        self.stacks: dict[int, Stack] = {self.active.plan.generation: self.active}

    def build(self, recipe: Recipe, recipe_dir: Path) -> Stack:
        """Load and warm a recipe's model (blocking: seconds). Raises ModelLoadError."""
        cell = self.cell
        inf = cell.inference
        gpu = GpuOptions(inf.device_id, inf.fp16, self.data_root / inf.trt_cache, inf.max_batch)
        spec = PreprocessSpec(
            (cell.cameras[0].height, cell.cameras[0].width),
            recipe.model.input_size,
            recipe.roi,
            recipe.model.mean,
            recipe.model.std,
        )
        validation = None
        if inf.fp16 and recipe.model.validation_images:  # an FP16 model is checked on these
            try:
                validation = validation_batch(recipe_dir / recipe.model.validation_images, Preprocessor(spec))
            except (ValueError, OSError) as exc:
                raise ModelLoadError(f"recipe {recipe.name}: {exc}") from None
        runner = OnnxRunner(
            recipe.model_file(recipe_dir), tuple(inf.providers), inf.threads or None, gpu,
            fp16_tolerance=recipe.model.fp16_tolerance, validation=validation,
        )  # fmt: skip
        adapter = make_adapter(recipe, runner.info.output_names)
        gen = self._next
        self._next += 1
        worker = InferenceWorker(
            runner, Preprocessor(spec), adapter, self.on_results,
            cell.inference.max_batch, cell.inference.queue_size, name=f"infer-{gen}",
        )  # fmt: skip
        rhash = content_hash(recipe)
        plan = replace(
            build_plan(cell, recipe),
            recipe_name=recipe.name, recipe_number=recipe.number, recipe_hash=rhash,
            model_hash=runner.info.sha256, generation=gen,
        )  # fmt: skip
        return Stack(recipe, rhash, plan, runner, worker)

    def start(self) -> None:
        """Start the first generation's worker (when the cell starts running)."""
        self.active.worker.start()

    def activate(self, stack: Stack) -> None:
        """Start a newly built generation's worker and make it the active one."""
        stack.worker.start()
        self.stacks[stack.plan.generation] = stack
        self.active = stack

    def of(self, generation: int | None) -> Stack:
        """The generation that judges a part (the active one if it is gone, or None)."""
        return self.active if generation is None else self.stacks.get(generation, self.active)

    async def retire(self, in_use: set[int]) -> None:
        """Stop every generation but the active one that no undecided part depends on."""
        for gen, stack in list(self.stacks.items()):
            if stack is not self.active and gen not in in_use:
                del self.stacks[gen]
                await asyncio.to_thread(stack.worker.stop)
                log.info("recipe %s (generation %d) retired", stack.recipe.name, gen)

    async def stop_all(self) -> None:
        """Stop every generation's worker (at shutdown)."""
        for stack in self.stacks.values():
            await asyncio.to_thread(stack.worker.stop)
