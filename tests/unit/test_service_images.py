"""The image keeper: the recipe's image policy, and every frame buffer released exactly once."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np

from controller.config import ImagePolicy
from controller.contract import Verdict
from controller.core.cell import DropFrame, Infer
from controller.core.counters import Count
from controller.core.types import ViewResult, ViewStatus
from controller.interfaces import Frame
from controller.service.images import ImageKeeper
from tests.unit.test_service_events import service


class Frames:
    """Frames whose buffers count their releases."""

    def __init__(self) -> None:
        self.released: Counter[tuple[int, str]] = Counter()

    def frame(self, part_id: int, camera: str, value: int = 1) -> Frame:
        key = (part_id, camera)
        image = np.full((4, 4), value, dtype=np.uint8)
        return Frame(camera, part_id, 0.0, 0.0, image, lambda: self.released.update([key]))


def arrived(keeper: ImageKeeper, frame: Frame) -> Frame:
    keeper.arrive(frame)
    return frame


def test_every_view_of_a_rejected_part_is_kept_as_a_copy() -> None:
    frames, keeper = Frames(), ImageKeeper()
    top = arrived(keeper, frames.frame(1, "top", 7))
    assert keeper.hold(1, top)
    assert keeper.hold(1, arrived(keeper, frames.frame(1, "left")))
    assert keeper.decide(1, Verdict.FAIL, ImagePolicy(save_rejected=True)) and keeper.kept(1)
    assert frames.released == {(1, "top"): 1, (1, "left"): 1}
    top.image[:] = 0  # the driver reuses its buffer once released
    images = keeper.take(1)
    assert sorted(images) == ["left", "top"] and int(images["top"][0, 0]) == 7
    assert not keeper.kept(1) and keeper.take(1) == {}  # handed to the record once


def test_rejects_are_not_kept_when_the_recipe_says_so() -> None:
    frames, keeper = Frames(), ImageKeeper()
    keeper.hold(1, arrived(keeper, frames.frame(1, "top")))
    assert not keeper.decide(1, Verdict.NO_DECISION, ImagePolicy(save_rejected=False))
    assert not keeper.kept(1) and frames.released == {(1, "top"): 1}


def test_every_nth_passed_part_is_kept() -> None:
    frames, keeper = Frames(), ImageKeeper()
    every3 = ImagePolicy(sample_passed_every=3)
    kept = []
    for pid in range(1, 8):
        keeper.hold(pid, arrived(keeper, frames.frame(pid, "top")))
        if pid == 4:  # rejects do not count towards the passed sample
            assert keeper.decide(pid, Verdict.FAIL, every3)
            continue
        if keeper.decide(pid, Verdict.PASS, every3):
            kept.append(pid)
    assert kept == [3, 7]
    assert all(n == 1 for n in frames.released.values()) and len(frames.released) == 7
    never = ImagePolicy(sample_passed_every=0)
    assert not any(keeper.decide(pid, Verdict.PASS, never) for pid in range(10, 20))


def test_frames_are_released_once_on_decide_drop_late_unknown_and_at_shutdown() -> None:
    frames, keeper = Frames(), ImageKeeper()
    for pid, cam in ((1, "top"), (2, "top"), (2, "left"), (3, "top")):
        keeper.hold(pid, arrived(keeper, frames.frame(pid, cam)))
    keeper.decide(1, Verdict.PASS, ImagePolicy())
    keeper.decide(1, Verdict.PASS, ImagePolicy())  # a second decision finds nothing to release
    assert frames.released == {(1, "top"): 1}
    dropped = keeper.arrive(frames.frame(8, "top"))  # the core's DropFrame names it by its token
    keeper.release(dropped)
    keeper.release(dropped)
    late = arrived(keeper, frames.frame(9, "top"))
    keeper.release_frame(late)  # a late result: no part wants it
    keeper.release_frame(late)
    assert not keeper.decide(3, None, None)  # a part the core no longer knows: released, not kept
    waiting = keeper.arrive(frames.frame(10, "left"))  # waiting for its trigger record
    lent = keeper.arrive(frames.frame(11, "left"))  # in inference
    assert keeper.frame(lent) is not None and keeper.holding == 4  # parts 2 (two views), 10, 11
    keeper.release_all()  # shutdown: whatever is still held
    keeper.release_all()
    assert keeper.frame(waiting) is None and keeper.holding == 0
    assert not keeper.hold(11, frames.frame(11, "left"))  # its result after shutdown: not held again
    assert frames.released == {
        (1, "top"): 1, (8, "top"): 1, (9, "top"): 1, (3, "top"): 1, (2, "top"): 1, (2, "left"): 1,
        (10, "left"): 1, (11, "left"): 1,
    }  # fmt: skip
    assert keeper.released == 8 and not keeper.kept(2)


def test_a_frame_turned_away_is_released_at_once() -> None:
    frames = Frames()
    ImageKeeper.turn_away(frames.frame(1, "top"))
    assert frames.released == {(1, "top"): 1}


def test_any_mix_of_fates_releases_every_buffer_exactly_once() -> None:
    rng = random.Random(12)
    frames, keeper = Frames(), ImageKeeper()
    policy = ImagePolicy(save_rejected=True, sample_passed_every=2)
    held: list[int] = []
    for n in range(1, 501):
        frame = frames.frame(n, rng.choice(("top", "left")))
        token = keeper.arrive(frame)
        fate = rng.choice(("drop", "late", "hold", "decide", "wait", "lend"))
        if fate == "drop":
            keeper.release(token)
        elif fate == "late":
            keeper.release_frame(frame)
        elif fate in ("hold", "decide"):
            keeper.hold(n, frame)
            held.append(n)
            if fate == "decide":
                keeper.decide(n, rng.choice(list(Verdict)), policy)
                keeper.take(n)
        if rng.random() < 0.1:
            keeper.release(rng.randint(1, n))  # a token dropped twice, or one in use: never twice
    keeper.release_all()
    assert len(frames.released) == 500 and set(frames.released.values()) == {1}
    assert keeper.released == 500 and keeper.holding == 0


def test_the_service_releases_a_late_results_frame_once(tmp_path: Path) -> None:
    svc = service(tmp_path)
    frames = Frames()
    frame = frames.frame(42, "top")
    token = svc.images.arrive(frame)
    svc.actions.carry_out([Infer(42, "top", token)])  # lent to the worker (not running: it only queues)
    svc._on_result(42, ViewResult("top", ViewStatus.OK), 0.0, 0.0, frame)
    assert frames.released == {(42, "top"): 1}
    assert svc.core.counters[Count.LATE_RESULT] == 1  # the core saw it, counted as late
    svc.actions.carry_out([DropFrame(token, "late")])  # whatever else says so: released once only
    svc.images.release_all()
    assert frames.released == {(42, "top"): 1}
    svc._frame_from_camera(frames.frame(43, "left"))  # before the cell runs: nothing to route it to
    assert frames.released[(43, "left")] == 1


def test_the_service_hands_a_frame_to_the_keeper_and_the_core_its_token(tmp_path: Path) -> None:
    svc = service(tmp_path)
    frames = Frames()
    assert svc.core.plan.trigger_cameras  # the demo cell pairs frames by the PLC's trigger ring
    svc._on_frame(frames.frame(7, "top"))  # it waits in the core, by token, for its trigger record
    assert not frames.released and svc.images.holding == 1
    svc.actions.carry_out(svc.core.decide_all(1.0))  # stopping: the core drops it, by token
    assert frames.released == {(7, "top"): 1} and svc.images.holding == 0


def test_frames_still_in_a_worker_that_did_not_stop_are_not_released_at_shutdown() -> None:
    frames, keeper = Frames(), ImageKeeper()
    lent = keeper.arrive(frames.frame(1, "top"))
    back = keeper.arrive(frames.frame(2, "top"))
    waiting = keeper.arrive(frames.frame(3, "top"))
    assert keeper.lend(lent) is not None
    returned = keeper.lend(back)
    assert returned is not None and keeper.hold(2, returned)  # its result came back: not in a worker
    assert keeper.release_all(workers_stopped=False) == 1
    assert frames.released == Counter({(2, "top"): 1, (3, "top"): 1})  # a worker may still read 1
    assert keeper.holding == 1 and waiting != lent
    assert keeper.release_all(workers_stopped=True) == 0  # the worker stopped after all
    assert frames.released == Counter({(1, "top"): 1, (2, "top"): 1, (3, "top"): 1})
