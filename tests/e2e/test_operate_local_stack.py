"""Operating the local stack with `ld-audiences status`, `audit` and `resync` (issue 12): Engage events over
HTTP → ingest → SQS → sync → the LaunchDarkly emulator; then the segment is deleted and edited behind the
sync's back, the audit finds it, and resync and `audit --repair` restore it exactly while new events for
the same audience, and the same contexts, keep arriving. Every command runs through the CLI's entry point.

The expected segment is computed here from the events posted: per context, the latest event wins.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from ld_audiences_cli.main import main as cli_main
from ld_audiences_local.defaults import TABLE_NAME
from ld_audiences_local.emulator import Emulator
from ld_audiences_local.stack import LocalStack
from tests.e2e.test_local_stack import CSID, SECRET, TOKEN, segment_audiences_stack
from tests.segment_events import engage_event

pytestmark = pytest.mark.e2e

AUDIENCE, AUDIENCE_KEY = "aud_operate", "power_users"
SEGMENT = f"{CSID}/{AUDIENCE}"  # the emulator's id of the synced segment
SEGMENT_URL = f"/api/v2/segments/default/production/segment-audiences-{AUDIENCE}"  # where LaunchDarkly's API has it
CONTEXTS = [f"user-{i:03d}" for i in range(240)]


class Engage:
    """Posts audience events to the local stack like Engage does, and keeps the ground truth."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.start = datetime.now(UTC) - timedelta(hours=1)
        self.sent = 0
        self.latest: dict[str, tuple[int, bool]] = {}  # context → (event number, included)
        self.lock = threading.Lock()

    def post(self, changes: list[tuple[str, bool]]) -> None:
        events = []
        with self.lock:
            for user, included in changes:
                self.sent += 1
                moment = self.start + timedelta(milliseconds=self.sent)
                events.append(
                    engage_event(
                        type_="identify",
                        audience_id=AUDIENCE,
                        audience_key=AUDIENCE_KEY,
                        user_id=user,
                        value=included,
                        timestamp=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    )
                )
                self.latest[user] = (self.sent, included)
        response = requests.post(
            f"{self.url}/events",
            data=json.dumps(events),
            headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200 and response.json()["accepted"] == len(events), response.text

    def members(self) -> set[str]:
        with self.lock:
            return {user for user, (_, included) in self.latest.items() if included}


class LiveTraffic(threading.Thread):
    """New events for the same audience while a repair runs: flips of contexts being resynced, new contexts."""

    def __init__(self, engage: Engage, seed: int, rounds: int = 12) -> None:
        super().__init__(name="live-traffic", daemon=True)
        self.engage, self.rng, self.rounds = engage, random.Random(seed), rounds
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for round_ in range(self.rounds):
                known = sorted(self.engage.latest)
                flips = [(user, not self.engage.latest[user][1]) for user in self.rng.sample(known, 12)]
                new = [(f"live-{self.name}-{round_}-{i}", True) for i in range(3)]
                self.engage.post(flips + new)
                time.sleep(0.05)
        except BaseException as exc:  # seen by the test thread
            self.error = exc


@pytest.fixture(scope="module")
def launchdarkly() -> Iterator[Emulator]:
    with Emulator(tokens=(TOKEN,), client_side_ids=(CSID,)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def local(launchdarkly: Emulator) -> Iterator[LocalStack]:
    with segment_audiences_stack(launchdarkly) as stack:
        yield stack


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def test_audit_finds_a_deleted_segment_and_resync_restores_it_while_events_keep_arriving(
    local: LocalStack, launchdarkly: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    # Named like any deployment: the operator CLI knows no local default (credentials: conftest's dummy ones).
    where = ["--endpoint-url", local.moto_url, "--table", TABLE_NAME, "--queue-url", local.queue_url]
    where += ["--dlq-url", local.dlq_url]
    audit = [
        "audit",
        *where,
        "--audience",
        AUDIENCE,
        "--base-url",
        launchdarkly.url,
        "--token",
        TOKEN,
        "--project-key",
        "default",
        "--environment-key",
        "production",
    ]
    engage = Engage(local.url)
    rng = random.Random(12)
    for start in range(0, len(CONTEXTS), 60):
        engage.post([(user, rng.random() < 0.7) for user in CONTEXTS[start : start + 60]])
    engage.post([(user, False) for user in rng.sample(CONTEXTS, 30)])  # some leave again
    local.wait_until_drained(120)
    assert launchdarkly.included(SEGMENT) == engage.members()
    code, out = cli(capsys, *audit)
    assert code == 0 and "drift: 0 of 240 checked" in out, out

    # Someone deletes the segment in LaunchDarkly: the audit finds no segment to compare with, says what it
    # searched and what to do, and cannot tell (3) rather than report every member missing.
    deleted = requests.delete(f"{launchdarkly.url}{SEGMENT_URL}", headers={"Authorization": TOKEN}, timeout=10)
    assert deleted.status_code == 204 and launchdarkly.included(SEGMENT) == set()
    code, out = cli(capsys, *audit)
    assert code == 3, out
    assert "segment not found" in out and "resync" in out and "missing members" not in out

    # Resync while Engage keeps sending changes to the same contexts.
    traffic = LiveTraffic(engage, seed=1)
    traffic.start()
    code, out = cli(capsys, "resync", *where, "--audience", AUDIENCE, "--progress-every", "50")
    assert code == 0, out
    resynced = int(re.search(r"^queued (\d+) reasserts", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert resynced >= len(CONTEXTS)  # and the new contexts it found already
    traffic.join(60)
    assert traffic.error is None and not traffic.is_alive()
    local.wait_until_drained(180)
    assert launchdarkly.included(SEGMENT) == engage.members()

    # Someone edits it: removes members, adds contexts that left. audit --repair, again under live traffic.
    members = sorted(engage.members())
    gone = sorted((set(engage.latest) - set(members)) & set(CONTEXTS))
    edit = {"included": {"add": gone[:4], "remove": members[:6]}}
    edited = requests.post(
        f"{launchdarkly.url}{SEGMENT_URL}/contexts", json=edit, headers={"Authorization": TOKEN}, timeout=10
    )
    assert edited.status_code == 204
    traffic = LiveTraffic(engage, seed=2, rounds=6)
    traffic.start()
    code, out = cli(capsys, *audit, "--repair")
    assert code == 1 and "missing members: " in out and "extra members: " in out, out
    assert "repair: queued " in out
    traffic.join(60)
    assert traffic.error is None
    local.wait_until_drained(180)
    assert launchdarkly.included(SEGMENT) == engage.members()
    assert local.dead_letter_count() == 0

    # Nothing drifts now, and status agrees with LaunchDarkly.
    code, out = cli(capsys, *audit, "--all")
    assert code == 0 and "missing members: 0" in out and "extra members: 0" in out, out
    code, out = cli(capsys, "status", *where, "--audience", AUDIENCE, "--json")
    assert code == 0, out
    report: dict[str, Any] = json.loads(out)
    (line,) = report["audiences"]
    assert (line["audience_key"], line["context_kind"]) == (AUDIENCE_KEY, "user")
    assert line["members"] == len(launchdarkly.included(SEGMENT)) == len(engage.members())
    assert line["contexts"] == len(engage.latest)
    assert report["queue"]["total"] == 0 and report["dead_letter_queue"]["total"] == 0
    assert line["last_write_at"] is not None
