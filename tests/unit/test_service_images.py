"""The image keeper: the recipe's image policy, and every frame buffer released exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from controller.config import ImagePolicy, load_cell_config
from controller.contract import Verdict
from controller.core.types import ViewResult, ViewStatus
from controller.interfaces import Frame
from controller.recipes import load_recipe
from controller.service.images import ImageKeeper

ROOT = Path(__file__).resolve().parents[2]


class Frames:
    """Frames whose buffers count their releases."""

    def __init__(self) -> None:
        self.released: Counter[tuple[int, str]] = Counter()

    def frame(self, part_id: int, camera: str, value: int = 1) -> Frame:
        key = (part_id, camera)
        image = np.full((4, 4), value, dtype=np.uint8)
        return Frame(camera, part_id, 0.0, 0.0, image, lambda: self.released.update([key]))


def test_every_view_of_a_rejected_part_is_kept_as_a_copy() -> None:
    frames, keeper = Frames(), ImageKeeper()
    top = frames.frame(1, "top", 7)
    keeper.hold(1, top)
    keeper.hold(1, frames.frame(1, "left"))
    assert keeper.decide(1, Verdict.FAIL, ImagePolicy(save_rejected=True)) and keeper.kept(1)
    assert frames.released == {(1, "top"): 1, (1, "left"): 1}
    top.image[:] = 0  # the driver reuses its buffer once released
    images = keeper.take(1)
    assert sorted(images) == ["left", "top"] and int(images["top"][0, 0]) == 7
    assert not keeper.kept(1) and keeper.take(1) == {}  # handed to the record once


def test_rejects_are_not_kept_when_the_recipe_says_so() -> None:
    frames, keeper = Frames(), ImageKeeper()
    keeper.hold(1, frames.frame(1, "top"))
    assert not keeper.decide(1, Verdict.NO_DECISION, ImagePolicy(save_rejected=False))
    assert not keeper.kept(1) and frames.released == {(1, "top"): 1}


def test_every_nth_passed_part_is_kept() -> None:
    frames, keeper = Frames(), ImageKeeper()
    every3 = ImagePolicy(sample_passed_every=3)
    kept = []
    for pid in range(1, 8):
        keeper.hold(pid, frames.frame(pid, "top"))
        if pid == 4:  # rejects do not count towards the passed sample
            assert keeper.decide(pid, Verdict.FAIL, every3)
            continue
        if keeper.decide(pid, Verdict.PASS, every3):
            kept.append(pid)
    assert kept == [3, 7]
    assert all(n == 1 for n in frames.released.values()) and len(frames.released) == 7
    never = ImagePolicy(sample_passed_every=0)
    assert not any(keeper.decide(pid, Verdict.PASS, never) for pid in range(10, 20))


def test_frames_are_released_once_on_decide_late_unknown_and_at_shutdown() -> None:
    frames, keeper = Frames(), ImageKeeper()
    keeper.hold(1, frames.frame(1, "top"))
    keeper.hold(2, frames.frame(2, "top"))
    keeper.hold(2, frames.frame(2, "left"))
    keeper.hold(3, frames.frame(3, "top"))
    keeper.decide(1, Verdict.PASS, ImagePolicy())
    keeper.decide(1, Verdict.PASS, ImagePolicy())  # a second decision finds nothing to release
    assert frames.released == {(1, "top"): 1}
    ImageKeeper.drop(frames.frame(9, "top"))  # a late result: no part wants it
    assert not keeper.decide(3, None, None)  # a part the core no longer knows: released, not kept
    keeper.release_all()  # shutdown: whatever is still held
    keeper.release_all()
    assert frames.released == {(1, "top"): 1, (9, "top"): 1, (3, "top"): 1, (2, "top"): 1, (2, "left"): 1}
    assert not keeper.kept(2)


def test_the_service_releases_a_late_results_frame_once(tmp_path: Path) -> None:
    from controller.service import CellService

    cell = load_cell_config(ROOT / "recipes/cells/demo-cell.yaml")
    cell = cell.model_copy(update={"cameras": cell.cameras[:3]})
    recipe = load_recipe(ROOT / "recipes/plate-4h.yaml")
    cams = {c.name: SimpleNamespace(stats=SimpleNamespace(connected=True)) for c in cell.cameras}
    svc = CellService(cell, recipe, ROOT / "recipes", SimpleNamespace(), cams, "t", tmp_path)  # type: ignore[arg-type]
    frames = Frames()
    svc._on_result(42, ViewResult("top", ViewStatus.OK), 0.0, 0.0, frames.frame(42, "top"))
    assert frames.released == {(42, "top"): 1}
    assert svc.core.counts["late_result"] == 1  # the core saw it, counted as late
    svc._frame_from_camera(frames.frame(43, "left"))  # before the cell runs: nothing to route it to
    assert frames.released[(43, "left")] == 1
