"""When an audience is worth a LaunchDarkly request: the sync's debounce.

A request carries everything pending for one audience, and LaunchDarkly allows a few requests a window. While
few audiences wait, every request is affordable and an audience is written as soon as it is taken. When many
wait (Engage computing hundreds of audiences at once, their members interleaved), a request spent on an
audience whose changes are still arriving is a request its next changes need again, taken from another
audience. So under contention an audience is ready once it has been quiet for a moment (nothing recorded
for QUIET_SECONDS) or once its oldest change has waited MAX_WAIT_SECONDS, whichever comes first: an audience
that never goes quiet is still written at that pace.

While the sync is behind on recording (an invocation got a full batch: more is queued behind it), changes
arrive for thousands of audiences at once and an audience goes quiet for a few seconds between two of its
changes. Then an audience is ready once it has been quiet for FLOOD_QUIET_SECONDS, or its oldest change has
waited FLOOD_MAX_WAIT_SECONDS: requests go to audiences that are complete, and the table's write throughput
goes to recording rather than to context items written twice.
"""

from __future__ import annotations

# At least this many audiences waiting (of the first page of the pending index) is contention: more than a
# rate-limit window's requests at LaunchDarkly's documented pace would write at once.
CONTENDED_AUDIENCES = 20
QUIET_SECONDS = 5.0
MAX_WAIT_SECONDS = 30.0
# Under contention, how many of the oldest waiting audiences are looked at for one that is ready; a work item
# read (eventually consistent) costs a tenth of a write, so a round reads at most this many.
LOOK_AHEAD = 200


# While an invocation's batch is full: Engage's first syncs of thousands of audiences at once.
FLOOD_QUIET_SECONDS = 30.0
FLOOD_MAX_WAIT_SECONDS = 300.0


def ready_at(pending_since: float, pending_newest: float | None, *, flooded: bool = False) -> float:
    """When an audience whose oldest pending change was recorded at `pending_since` and newest at
    `pending_newest` (None: unknown, as recorded by an earlier version) is ready under contention, `flooded`:
    while the sync is behind on recording."""
    newest = pending_since if pending_newest is None else max(pending_newest, pending_since)
    if flooded:
        return min(newest + FLOOD_QUIET_SECONDS, pending_since + FLOOD_MAX_WAIT_SECONDS)
    return min(newest + QUIET_SECONDS, pending_since + MAX_WAIT_SECONDS)


def waited_enough(pending_since: float, now: float, *, flooded: bool = False) -> bool:
    """Whether an audience is ready at `now` whatever its newest change: its oldest has waited long enough.
    The oldest waiting audiences usually have, so most rounds read no work item."""
    return pending_since + (FLOOD_MAX_WAIT_SECONDS if flooded else MAX_WAIT_SECONDS) <= now
