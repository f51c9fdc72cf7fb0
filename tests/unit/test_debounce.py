"""When an audience is worth a LaunchDarkly request under contention (`debounce.py`)."""

from __future__ import annotations

from ld_audiences.debounce import (
    FLOOD_MAX_WAIT_SECONDS,
    FLOOD_QUIET_SECONDS,
    MAX_WAIT_SECONDS,
    QUIET_SECONDS,
    ready_at,
    waited_enough,
)


def test_an_audience_is_ready_once_nothing_was_recorded_for_the_quiet_period() -> None:
    assert ready_at(100.0, 103.0) == 103.0 + QUIET_SECONDS


def test_an_audience_that_never_goes_quiet_is_ready_when_its_oldest_change_waited_long_enough() -> None:
    assert ready_at(100.0, 100.0 + MAX_WAIT_SECONDS - 1) == 100.0 + MAX_WAIT_SECONDS


def test_without_a_newest_time_the_oldest_change_counts_as_the_newest() -> None:
    """A work item recorded by an earlier version has no `pending_newest`; one whose clocks disagree may hold a
    newest time before its oldest: neither waits less than the quiet period after the oldest change."""
    assert ready_at(100.0, None) == ready_at(100.0, 90.0) == 100.0 + QUIET_SECONDS


def test_an_audience_that_waited_long_enough_is_ready_without_reading_its_newest_change() -> None:
    assert waited_enough(100.0, 100.0 + MAX_WAIT_SECONDS) and not waited_enough(100.0, 100.0 + MAX_WAIT_SECONDS - 0.5)
    assert ready_at(100.0, 100.0 + MAX_WAIT_SECONDS) <= 100.0 + MAX_WAIT_SECONDS  # what the read would have said


def test_while_the_sync_is_behind_on_recording_an_audience_waits_for_the_longer_quiet_period() -> None:
    assert ready_at(100.0, 103.0, flooded=True) == 103.0 + FLOOD_QUIET_SECONDS
    assert ready_at(100.0, 100.0 + FLOOD_MAX_WAIT_SECONDS - 1, flooded=True) == 100.0 + FLOOD_MAX_WAIT_SECONDS
    assert not waited_enough(100.0, 100.0 + MAX_WAIT_SECONDS, flooded=True)
    assert waited_enough(100.0, 100.0 + FLOOD_MAX_WAIT_SECONDS, flooded=True)
