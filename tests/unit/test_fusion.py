from __future__ import annotations

from controller.contract import Verdict
from controller.core.fusion import FusionRule, fuse
from controller.core.types import ReasonCode, ViewResult, ViewStatus

CAMS = ("a", "b", "c")


def ok(cam: str, *defects: str, score: float = 0.9) -> ViewResult:
    return ViewResult(cam, ViewStatus.OK, (score if defects else 0.01,), defects)


def test_all_views_clean_pass() -> None:
    f = fuse(CAMS, {c: ok(c) for c in CAMS}, FusionRule())
    assert f.verdict is Verdict.PASS and f.reasons == ()


def test_any_fail_gives_fail_with_reasons() -> None:
    views = {"a": ok("a"), "b": ok("b", "scratch", "spot"), "c": ok("c")}
    f = fuse(CAMS, views, FusionRule())
    assert f.verdict is Verdict.FAIL
    assert f.reasons == ("b:scratch", "b:spot")


def test_missing_view_is_no_decision_even_if_another_fails() -> None:
    views = {"a": ok("a", "crack"), "b": ok("b")}
    f = fuse(CAMS, views, FusionRule())
    assert f.verdict is Verdict.NO_DECISION
    assert f.reason is ReasonCode.MISSING_FRAME
    assert f.reasons == ("c:missing_frame",)


def test_failed_inference_is_no_decision_with_its_cause() -> None:
    views = {c: ok(c) for c in CAMS}
    views["b"] = ViewResult("b", ViewStatus.FAILED, cause=ReasonCode.INFERENCE_TIMEOUT)
    f = fuse(CAMS, views, FusionRule())
    assert (f.verdict, f.reason) == (Verdict.NO_DECISION, ReasonCode.INFERENCE_TIMEOUT)


def test_k_of_n() -> None:
    views = {"a": ok("a", "spot"), "b": ok("b"), "c": ok("c")}
    assert fuse(CAMS, views, FusionRule("k_of_n", k=2)).verdict is Verdict.PASS
    views["c"] = ok("c", "spot")
    assert fuse(CAMS, views, FusionRule("k_of_n", k=2)).verdict is Verdict.FAIL


def test_weighted_score() -> None:
    views = {"a": ok("a", "spot", score=0.9), "b": ok("b"), "c": ok("c")}
    rule = FusionRule("weighted", weights={"a": 1.0, "b": 1.0, "c": 1.0}, threshold=0.5)
    assert fuse(CAMS, views, rule).verdict is Verdict.PASS  # (0.9 + 0.01 + 0.01) / 3 < 0.5
    heavy = FusionRule("weighted", weights={"a": 10.0, "b": 1.0, "c": 1.0}, threshold=0.5)
    assert fuse(CAMS, views, heavy).verdict is Verdict.FAIL
