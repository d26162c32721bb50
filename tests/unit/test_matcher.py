from __future__ import annotations

from controller.core.matcher import Matcher, MatchKind


def make() -> Matcher:
    m = Matcher(["a", "b"], tolerance=50)
    for pid, pos in ((1, 1000), (2, 1500), (3, 2000)):
        m.expect("a", pos, pid)
    return m


def test_frames_match_in_order_within_tolerance() -> None:
    m = make()
    r1, r2 = m.match("a", 1030), m.match("a", 1460)
    assert (r1.kind, r1.part_id, r2.kind, r2.part_id) == (MatchKind.MATCHED, 1, MatchKind.MATCHED, 2)
    assert m.counts["matched"] == 2


def test_missing_frame_is_reported_when_a_later_part_matches() -> None:
    m = make()
    r = m.match("a", 1505)
    assert r.kind is MatchKind.MATCHED and r.part_id == 2
    assert r.missed == (1,)
    assert m.counts["missing"] == 1


def test_extra_frame_between_parts_is_counted_not_matched() -> None:
    m = make()
    r = m.match("a", 1250)
    assert r.kind is MatchKind.EXTRA and r.part_id is None
    assert m.pending("a") == 2  # part 1's window passed; parts 2 and 3 still expected
    assert r.missed == (1,)


def test_late_frame_for_a_decided_part() -> None:
    m = make()
    assert m.forget(1) == ["a"]
    r = m.match("a", 1010)
    assert r.kind is MatchKind.LATE and r.part_id == 1
    assert m.counts["late"] == 1


def test_unknown_camera() -> None:
    m = make()
    assert m.match("zz", 1000).kind is MatchKind.EXTRA
    assert m.counts["unknown_camera"] == 1
