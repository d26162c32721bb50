"""Fusion rules: the views of one part become one verdict with reasons.

Every rule starts from the same fail-safe: a required view that is missing or failed makes
NO_DECISION, which is always rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from controller.contract import Verdict
from controller.core.types import ReasonCode, ViewResult, ViewStatus

FusionRuleName = Literal["any_fail", "k_of_n", "weighted"]


@dataclass(frozen=True)
class FusionRule:
    """How views combine. `k` for k_of_n; `weights` and `threshold` for weighted (max score per view)."""

    name: FusionRuleName = "any_fail"
    k: int = 1
    weights: Mapping[str, float] | None = None
    threshold: float = 0.5


@dataclass(frozen=True, slots=True)
class Fused:
    verdict: Verdict
    reason: ReasonCode
    reasons: tuple[str, ...]


def fuse(required: Sequence[str], views: Mapping[str, ViewResult], rule: FusionRule) -> Fused:
    """Fuse the views of one part. Missing entries in `views` count as missing views."""
    uncertain: list[str] = []
    cause = ReasonCode.NONE
    for cam in required:
        v = views.get(cam)
        if v is None or v.status is not ViewStatus.OK:
            c = ReasonCode.MISSING_FRAME if v is None else v.cause
            uncertain.append(f"{cam}:{(c.name if c else 'missing').lower()}")
            cause = cause or c or ReasonCode.MISSING_FRAME
    if uncertain:
        return Fused(Verdict.NO_DECISION, cause, tuple(uncertain))
    failing = [views[c] for c in required if views[c].defects]
    reasons = tuple(f"{v.camera}:{d}" for v in failing for d in v.defects)
    if rule.name == "any_fail":
        fail = bool(failing)
    elif rule.name == "k_of_n":
        fail = len(failing) >= rule.k
    else:
        w = rule.weights or {}
        total = sum(w.get(c, 1.0) for c in required)
        score = sum(w.get(c, 1.0) * max(views[c].scores, default=0.0) for c in required) / total
        fail = score >= rule.threshold
        if fail and not reasons:
            reasons = (f"weighted_score:{score:.3f}",)
    if fail:
        return Fused(Verdict.FAIL, ReasonCode.DEFECT, reasons)
    return Fused(Verdict.PASS, ReasonCode.NONE, ())
