"""On the local stack with real moto and the LaunchDarkly emulator: a write LaunchDarkly applies after the
client gave up on it cannot leave a stale state (issue 11, item 4), and messages queued by an earlier
version still sync (issue 9, item 8)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ld_audiences import state_table as t
from ld_audiences.change import MembershipChange
from ld_audiences_local.defaults import TABLE_NAME
from ld_audiences_local.emulator import Faults
from ld_audiences_local.stack import LocalStack
from tests.e2e.stack_helpers import SECRET, post_events, segments, wait_until
from tests.segment_events import engage_event

pytestmark = pytest.mark.e2e

AUDIENCE, KEY, USER = "aud_late_apply", "late_apply", "user-late"
LATE_SECONDS = 14.0  # what issue 11 reproduced


def state_item(stack: LocalStack) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(TableName=TABLE_NAME, Key=t.context_item_key(AUDIENCE, "user", USER))
    return dict(item.get("Item", {}))


def work_item(stack: LocalStack) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(TableName=TABLE_NAME, Key=t.work_item_key(AUDIENCE, "user"))
    return dict(item.get("Item", {}))


@pytest.mark.slow
def test_a_write_applied_after_the_lease_is_repaired_by_the_newest_change() -> None:
    """The entry's write never gets an answer (every attempt's connection drops) and LaunchDarkly applies it
    14 s later. The audience's lease is kept until it runs out; then the entry, still pending, is written
    again and the newer exit after it. The late entry lands over the exit; the reassert after the lease
    writes the newest change again, and the segment ends empty."""
    entered = engage_event(audience_id=AUDIENCE, audience_key=KEY, user_id=USER, timestamp="2026-11-20T10:00:10Z")
    exited = engage_event(
        audience_id=AUDIENCE, audience_key=KEY, user_id=USER, value=False, timestamp="2026-11-20T10:00:20Z"
    )
    with LocalStack(
        port=0,
        webhook_secret=SECRET,
        batching_window=0.2,
        sync_timeout=6,  # the entry's lease ends 5 s after its invocation's deadline: ~8 s after it started
        visibility_timeout=12,
        # The second look comes 15 s after the lease: after the late apply (~14-16 s after the entry's
        # attempts, 6-8 s after the lease); the first one (2 s) comes before it and changes nothing.
        late_apply_rechecks=(2, 15),
    ) as stack:
        emulator = stack.emulator
        assert emulator is not None
        emulator.set_faults(Faults(rate_late=1.0, late_seconds=LATE_SECONDS))
        post_events(stack, [entered])
        # The reconcile gave up on the entry: it keeps the lease and queues a tick (and rechecks) for later.
        wait_until(lambda: stack.queue_counts()["delayed"] >= 1, 20, "the entry's write gave up")
        emulator.set_faults(Faults())
        late_writes = emulator.stats()["faults"]["late"]
        assert late_writes >= 1 and emulator.stats()["late_applied"] == 0
        assert t.APPLIED_ORDER not in state_item(stack)  # unknown: still pending

        lease_until = float(work_item(stack)[t.LEASE_UNTIL]["N"])
        assert lease_until > time.time()  # held, so no newer write of the audience goes first
        wait_until(lambda: time.time() > lease_until, 20, "the entry's lease ended")
        post_events(stack, [exited])
        wait_until(
            lambda: state_item(stack).get(t.APPLIED_ORDER, {}).get("S", "").startswith("2026-11-20T10:00:20"),
            20,
            "the exit is applied",
        )
        assert emulator.stats()["late_applied"] == 0, "the late write must land after the newer one"

        wait_until(lambda: emulator.stats()["late_applied"] == late_writes, 30, "the late writes are applied")
        stack.wait_until_drained(60)
        assert segments(stack) == {AUDIENCE: set()}
        assert stack.dead_letter_count() == 0


def test_the_v1_message_of_design_md_is_synced_next_to_todays() -> None:
    """Issue 9, item 8: a message queued before an upgrade (docs/DESIGN.md's v1 change, written out here as it
    stands there) is synced like one ingest queues today; neither is dead-lettered."""
    v1 = (
        '{"v": 1, "audience_id": "aud_v1", "audience_key": "v1_audience", "context_kind": "user", '
        '"context_key": "user-v1", "included": true, "event_time": "2026-11-20T10:00:00.000000000Z", '
        '"message_id": "personas_2fK9v1message"}'
    )
    with LocalStack(port=0, webhook_secret=SECRET, batching_window=0.2, max_receive_count=1) as stack:
        assert stack.sqs is not None
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=v1)
        today = engage_event(audience_id="aud_v1", audience_key="v1_audience", user_id="user-today")
        post_events(stack, [today])
        stack.wait_until_drained(30)
        assert segments(stack) == {"aud_v1": {"user-v1", "user-today"}}
        assert stack.dead_letter_count() == 0
    # Today's body is the v1 schema: the same fields, so an older reader understands it too.
    body = MembershipChange.from_message(v1).to_message()
    assert json.loads(body) == json.loads(v1)
