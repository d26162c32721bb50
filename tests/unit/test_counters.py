"""Typed counters: the same JSON names (and values) as when counters were strings."""

from __future__ import annotations

import pytest

from controller.contract import AlarmCode, DispositionCause, ReasonCode, Verdict
from controller.core.counters import Count, Counters, FrameFate
from tests.unit.test_pairing import run_line

#: `dict(core.counts)` of two runs, recorded from the string counters before they were typed.
RECORDED = {
    "trigger ring, strays and a lost pulse": (
        dict(trigger_ring=True, strays=(40, 80), lost=(60,)),
        {
            "ambiguous_frame:a": 55, "ambiguous_frame:b": 54, "extra_frame:a": 2,
            "inference_overrun:a": 97, "inference_overrun:b": 97, "late_frame:a": 42, "late_frame:b": 44,
            "missing_frame:a": 1, "missing_frame:b": 1, "no_decision:deadline": 102,
            "no_decision:frame_ambiguous": 97, "no_decision:missing_frame": 1, "parts": 200,
            "trigger_resync:a": 8, "verdict:no_decision": 200,
        },
    ),
    "positions only": (
        {},
        {
            "ambiguous_frame:a": 54, "ambiguous_frame:b": 54, "inference_overrun:a": 96,
            "inference_overrun:b": 96, "late_frame:a": 45, "late_frame:b": 45, "no_decision:deadline": 101,
            "no_decision:frame_ambiguous": 99, "parts": 200, "verdict:no_decision": 200,
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(RECORDED))
def test_a_run_serialises_to_the_names_and_values_the_string_counters_had(name: str) -> None:
    kw, before = RECORDED[name]
    _, core = run_line(0.020, 4000.0, (20.0, 30.0), parts=200, **kw)  # type: ignore[arg-type]
    core.flush(100.0)
    assert core.counters.as_dict() == before
    assert list(core.counters.as_dict()) == sorted(before)  # sorted by name
    assert dict(core.counts) == before  # the serialised copy older readers still use


def test_every_family_keeps_its_old_name() -> None:
    """Each family against the f-string the core used to count it under."""
    c = Counters()
    for name in Count:
        c.add(name)
    c.verdicts.update([Verdict.PASS, Verdict.FAIL, Verdict.FAIL, Verdict.NO_DECISION])
    c.no_decision.update([ReasonCode.DEADLINE, ReasonCode.NOT_INSPECTING])
    for fate in FrameFate:
        c.frame("top", fate)
    c.frame("left", FrameFate.MISSING)
    c.view_failures.update([ReasonCode.INFERENCE_FAILED, ReasonCode.UNCERTAIN])
    c.plc_data[AlarmCode.PART_DATA_INVALID] += 1
    c.plc_rejects.update([DispositionCause.NO_VERDICT, DispositionCause.LATE_VERDICT])
    c.trigger_resyncs["left"] += 3
    assert c.as_dict() == {
        "parts": 1, "imprecise_encoder_samples": 1, "frame_before_encoder": 1, "late_result": 1,
        "verdict_repeats": 1, "verdict_late_at_plc": 1, "verdict_queue_full": 1, "misroute": 1,
        "reject_not_confirmed": 1, "dispo_before_connect": 1, "trigger_ring_overrun": 1,
        "trigger_bad_camera": 1,
        "verdict:pass": 1, "verdict:fail": 2, "verdict:no_decision": 1,
        "no_decision:deadline": 1, "no_decision:not_inspecting": 1,
        "missing_frame:top": 1, "extra_frame:top": 1, "late_frame:top": 1, "ambiguous_frame:top": 1,
        "matched_frame:top": 1, "inference_overrun:top": 1, "missing_frame:left": 1,
        "view_inference_failed": 1, "view_uncertain": 1,
        "plc_data:part_data_invalid": 1,
        "plc_reject:no_verdict": 1, "plc_reject:late_verdict": 1,
        "trigger_resync:left": 3,
    }  # fmt: skip
    assert not any(k.startswith("verdict:") for k in c.as_dict(verdicts=False))
    assert len(c.as_dict(verdicts=False)) == len(c.as_dict()) - 3


def test_typed_accessors_answer_what_the_status_asked_by_prefix() -> None:
    c = Counters()
    assert c.rejects_by_reason() == {} and c[Count.PARTS] == 0
    c.verdicts.update({Verdict.FAIL: 4, Verdict.NO_DECISION: 3})
    c.no_decision.update({ReasonCode.MISSING_FRAME: 2, ReasonCode.DEADLINE: 1, ReasonCode.OVERLOAD: 0})
    assert c.rejects_by_reason() == {"missing_frame": 2, "deadline": 1, "defect": 4}
    c.frame("top", FrameFate.MISSING)
    c.frame("top", FrameFate.MISSING)
    c.frame("left", FrameFate.AMBIGUOUS)
    assert c.frames_of("top", FrameFate.MISSING) == 2 and c.frames_of("left", FrameFate.MISSING) == 0
    assert c.of_fate(FrameFate.AMBIGUOUS) == 1 and c.of_fate(FrameFate.LATE) == 0
