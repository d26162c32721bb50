"""What `cellctl demo --json` reports of its run (issue 15, item 3: the plant links)."""

from __future__ import annotations

from controller.demo import plant_result


def test_the_plant_links_are_reported_as_they_were_when_the_run_ended() -> None:
    # Closing the links ends them (connected false) and flushes what MQTT still had queued: the
    # result says whether they were up at the end of the run, with the counts after the flush.
    ran = {
        "mqtt": {"connected": True, "sent": 95, "queued": 5, "dropped": 0},
        "opcua": {"connected": True, "sent": 100, "queued": 0, "dropped": 0, "clients": 1, "events": 107},
    }
    closed = {
        "mqtt": {"connected": False, "sent": 100, "queued": 0, "dropped": 0},
        "opcua": {"connected": False, "sent": 100, "queued": 0, "dropped": 0, "clients": 0, "events": 107},
    }
    assert plant_result(ran, closed) == {
        "mqtt": {"connected": True, "sent": 100, "queued": 0, "dropped": 0},
        "opcua": {"connected": True, "sent": 100, "queued": 0, "dropped": 0, "clients": 1, "events": 107},
    }


def test_a_link_that_was_down_at_the_end_says_so() -> None:
    ran = {"mqtt": {"connected": False, "sent": 3, "queued": 7, "dropped": 0}}
    closed = {"mqtt": {"connected": False, "sent": 3, "queued": 0, "dropped": 7}}
    assert plant_result(ran, closed) == {"mqtt": {"connected": False, "sent": 3, "queued": 0, "dropped": 7}}
