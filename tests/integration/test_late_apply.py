"""A write LaunchDarkly applies after the client stopped waiting for it (issue 11, item 4), with the real
client, writer and state store against moto and the emulator: deterministic, in seconds."""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests

from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.writers import SegmentAudiencesWriter
from ld_audiences_local.emulator import Emulator, Faults
from tests import audience_state
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, Aws, make_sync

SEGMENT = f"{CLIENT_SIDE_ID}/aud_late"


def record(included: bool, second: int) -> QueuedRecord:
    change = audience_state.change("aud_late", "u1", included, second=second, audience_key="late")
    return QueuedRecord(f"sqs-{uuid.uuid4().hex}", change.to_message())


def test_an_unanswered_attempt_before_a_successful_retry_still_gets_a_second_look(aws: Aws, emulator: Emulator) -> None:
    class DropsOnce(requests.Session):
        """The first attempt's connection drops (LaunchDarkly applies it a second later); the retry is answered."""

        def request(self, *args: Any, **kwargs: Any) -> requests.Response:
            try:
                return super().request(*args, **kwargs)
            except requests.ConnectionError:
                emulator.set_faults(Faults())
                raise

    emulator.set_faults(Faults(rate_late=1.0, late_seconds=1.0))
    client = LaunchDarklyClient(emulator.url, LD_TOKEN, session=DropsOnce())
    sync = make_sync(aws, SegmentAudiencesWriter(client, CLIENT_SIDE_ID), 100, late_apply_rechecks=(1,))
    entry = sync.sync([record(True, 10)], time.time() + 20)
    assert entry.added == 1 and client.responses == {"error": 1, "204": 1}
    assert sync.sync([record(False, 20)], time.time() + 20).removed == 1
    deadline = time.monotonic() + 10
    while emulator.stats()["late_applied"] < 1:
        assert time.monotonic() < deadline, "the dropped attempt was never applied"
        time.sleep(0.05)
    assert emulator.included(SEGMENT) == {"u1"}  # the entry landed over the newer exit

    # The entry's write had an attempt whose outcome stayed unknown: its context gets a second look.
    assert [change.context_key for change, _delay in entry.reasserts] == ["u1"]
    for change, _delay in entry.reasserts:
        assert not sync.sync([QueuedRecord(f"sqs-{uuid.uuid4().hex}", change.to_message())], time.time() + 20).failed
    assert emulator.included(SEGMENT) == set()
