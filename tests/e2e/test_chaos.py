"""Chaos: thousands of shuffled, duplicated, re-delivered Engage events through the whole local stack
while LaunchDarkly rate-limits, fails, answers slowly and drops connections. Every segment must end
exactly at the latest audience state: nobody lost, nobody stale, nothing dead-lettered.

The corpus and its ground truth come from `chaos_corpus` (independent of the product's code). The
figures are printed whether the test passes or fails.

The second test pins down, deterministically and in two seconds, the race a chaos run exposed.

Knobs for exploring (the suite runs the defaults): CHAOS_SEED=<int> for another corpus and fault
sequence, CHAOS_FAULTS=off for the same run against a healthy LaunchDarkly (to compare times).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.sync import Synchronizer
from ld_audiences.writers import SegmentAudiencesWriter, SegmentWriter, Target
from ld_audiences_local.emulator import Emulator, Faults
from ld_audiences_local.stack import SYNC_FUNCTION, LocalStack
from tests import audience_state
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, Aws, make_sync
from tests.e2e.chaos_corpus import AUDIENCES, Corpus, Request, build_corpus

SEED = int(os.environ.get("CHAOS_SEED", "20261123"))
FAULTS_ON = os.environ.get("CHAOS_FAULTS", "on").strip().lower() not in ("0", "off", "false", "no")
SECRET = "chaos-webhook-secret"
TOKEN = "api-chaos-token"
CSID = "chaos-client-side-id"
SEGMENT_AUDIENCES = "POST /api/v2/segment-targets/segment-audiences"
DRAIN_TIMEOUT = 360.0  # a run drains in 60-110 s here; a slower or busier CI machine gets three times that

FAULTS = Faults(
    rate_429=0.10,  # with X-Ratelimit-Reset (sometimes already past) and sometimes Retry-After
    reset_ms=300,
    rate_5xx=0.05,
    rate_slow=0.03,  # the write is applied, the answer comes 1.5 s later
    slow_seconds=1.5,
    rate_drop=0.03,  # the connection closes without an answer
    seed=SEED,
)


@dataclass
class Posted:
    requests: int = 0
    events: int = 0
    retried_requests: int = 0
    gzip: int = 0
    shapes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # unexpected answers, for the assertion message


class BatchLog(logging.Handler):
    """Adds up the sync function's structured "batch synced" log lines (one per invocation)."""

    FIELDS = (
        "records",
        "recorded",
        "audiences",
        "failed",
        "dead_lettered",
        "added",
        "removed",
        "superseded",
        "stale",
        "duplicates",
        "retries",
    )

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.invocations = 0
        self.totals: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() != "batch synced":
            return
        self.invocations += 1
        for name in self.FIELDS:
            value = getattr(record, name, 0)
            self.totals[name] += value if isinstance(value, int) else 0
        responses = getattr(record, "launchdarkly_responses", None)
        if isinstance(responses, dict):
            self.responses.update({str(k): int(v) for k, v in responses.items()})


@contextlib.contextmanager
def batch_log() -> Iterator[BatchLog]:
    """Collect the sync function's log lines. Attached once the functions are loaded: Powertools takes
    the first handler of its logger for its own; its level is fixed by the process's first Logger."""
    logger = logging.getLogger(SYNC_FUNCTION)
    handler, level = BatchLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def cohort_name(key: str) -> str:
    """The synced segment's name, as Segment's destination derives it: `churn_risk` → `Churn risk`."""
    name = key.replace("_", " ")
    return name[:1].upper() + name[1:]


def authorization(basic: bool) -> str:
    if basic:  # segment-analytics-python's write-key form
        return "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()
    return f"Bearer {SECRET}"


def post_all(url: str, requests_: list[Request]) -> Posted:
    posted = Posted()
    with requests.Session() as session:
        for index, request in enumerate(requests_):
            headers = {"Authorization": authorization(request.basic_auth), "Content-Type": "application/json"}
            if request.gzip:
                headers["Content-Encoding"] = "gzip"
            try:
                response = session.post(url + request.path, data=request.body, headers=headers, timeout=(3, 30))
            except requests.RequestException as exc:
                posted.statuses["no answer"] += 1
                posted.wrong.append(f"request #{index}: no answer ({type(exc).__name__})")
                continue
            posted.requests += 1
            posted.events += request.events
            posted.retried_requests += request.retry
            posted.gzip += request.gzip
            posted.shapes[request.shape] += 1
            posted.statuses[str(response.status_code)] += 1
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text[:200]
            counts = (body.get("accepted"), body.get("skipped"), body.get("rejected")) if isinstance(body, dict) else ()
            if response.status_code != 200 or counts != (request.accepted, request.skipped, 0):
                posted.wrong.append(
                    f"request #{index} ({request.shape}, {request.events} events): {response.status_code} {counts}, "
                    f"expected 200 {(request.accepted, request.skipped, 0)}"
                )
    return posted


def figures(
    corpus: Corpus,
    posted: Posted,
    stack: LocalStack,
    batch_log: BatchLog,
    differences: dict[str, tuple[int, int, int]],
    timings: dict[str, float],
    drain_error: str | None,
) -> str:
    assert stack.emulator is not None
    emulator = stack.emulator.stats()
    writes: dict[str, int] = dict(emulator["requests"].get(SEGMENT_AUDIENCES, {}))
    stats = stack.stats()
    lines = [
        "",
        f"=== chaos test: seed {SEED}, faults {'ON' if FAULTS_ON else 'OFF'} " + "=" * 40,
        f"corpus      {len(corpus.events)} events: {corpus.membership_events} membership events "
        f"over {len(AUDIENCES)} audiences and {corpus.users} users, +{corpus.engage_duplicates} Engage "
        f"duplicates, +{corpus.redeliveries} exact re-deliveries, +{corpus.other_events} non-audience events",
        f"posted      {posted.requests} requests ({dict(posted.shapes)}, {posted.gzip} gzip, "
        f"{posted.retried_requests} whole-request retries) carrying {posted.events} events; "
        f"statuses {dict(posted.statuses)}",
        f"faults      injected {emulator['faults']}"
        + (
            f" (rates 429 {FAULTS.rate_429}, 5xx {FAULTS.rate_5xx}, slow {FAULTS.rate_slow}, drop {FAULTS.rate_drop})"
            if FAULTS_ON
            else " (faults off)"
        ),
        f"LaunchDarkly write requests {sum(writes.values())} by status {dict(sorted(writes.items()))}, "
        f"{emulator['writes']} applied",
        f"sync        {stats['batches']} batches, {stats['records']} records received, "
        f"{stats['failures']} failed back to SQS (retried), {stats['handler_errors']} whole-batch errors, "
        f"{stats['deleted']} deleted, {stats['dead_lettered']} dead-lettered",
    ]
    if batch_log.invocations:
        totals = batch_log.totals
        lines.append(
            f"sync log    {batch_log.invocations} invocations: client retries {totals['retries']}, "
            f"added {totals['added']}, removed {totals['removed']}, superseded in batch {totals['superseded']}, "
            f"stale {totals['stale']}, duplicates {totals['duplicates']}, recorded {totals['recorded']}, "
            f"audiences reconciled {totals['audiences']}, "
            f"failed {totals['failed']}, "
            f"dead-lettered {totals['dead_lettered']}; client saw {dict(sorted(batch_log.responses.items()))}"
        )
    for audience in AUDIENCES:
        expected, lost, stale = differences[audience.audience_id]
        lines.append(f"segment     {audience.key:<28} expected {expected:>4}  lost {lost}  stale {stale}")
    lines.append(
        f"time        {timings['total']:.1f} s (corpus {timings['corpus']:.1f}, start {timings['start']:.1f}, "
        f"ingest {timings['ingest']:.1f}, drain {timings['drain']:.1f}; "
        f"{stats['records'] / max(timings['ingest'] + timings['drain'], 1e-9):.0f} records/s)"
    )
    if drain_error:
        lines.append(f"NOT DRAINED {drain_error}")
    return "\n".join(lines)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.chaos
def test_segments_end_exactly_at_the_latest_state_under_faults(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    corpus = build_corpus(SEED)
    timings = {"corpus": time.monotonic() - started}
    assert corpus.membership_events >= 5000

    mark = time.monotonic()
    with (
        LocalStack(
            port=0,
            launchdarkly_token=TOKEN,
            client_side_id=CSID,
            webhook_secret=SECRET,
            batch_size=500,
            batching_window=1.0,
            sync_concurrency=2,
            chunk_size=10,  # several LaunchDarkly requests per audience and batch: more faults to survive
            # A short Lambda timeout: the bigger batches reach its deadline, and the records not written
            # by then go back to SQS, to return after a visibility timeout just above it.
            sync_timeout=14,
            visibility_timeout=18,
            max_receive_count=5,
            log_level="INFO",
        ) as stack,
        batch_log() as log,
    ):
        assert stack.emulator is not None
        if FAULTS_ON:
            stack.emulator.set_faults(FAULTS)
        timings["start"] = time.monotonic() - mark

        mark = time.monotonic()
        posted = post_all(stack.url, corpus.requests)
        timings["ingest"] = time.monotonic() - mark

        mark = time.monotonic()
        drain_error = None
        try:
            stack.wait_until_drained(DRAIN_TIMEOUT)
        except TimeoutError as exc:
            drain_error = str(exc)
        timings["drain"] = time.monotonic() - mark
        timings["total"] = time.monotonic() - started

        segments = {s["key"]: s for s in stack.emulator.segments() if s["environment"] == CSID}
        actual = {a.audience_id: set(segments.get(a.audience_id, {}).get("included", ())) for a in AUDIENCES}
        differences = {
            audience: (len(expected), len(expected - actual[audience]), len(actual[audience] - expected))
            for audience, expected in corpus.expected.items()
        }
        report = figures(corpus, posted, stack, log, differences, timings, drain_error)
        with capsys.disabled():
            print(report)
        dead_letters = stack.dead_letters()

        assert drain_error is None, drain_error
        assert not posted.wrong, posted.wrong[:10]
        assert posted.events == sum(r.events for r in corpus.requests)
        assert stack.stats()["records"] >= sum(r.accepted for r in corpus.requests)
        assert set(segments) == {a.audience_id for a in AUDIENCES}
        for audience in AUDIENCES:
            expected, found = corpus.expected[audience.audience_id], actual[audience.audience_id]
            lost, stale = sorted(expected - found), sorted(found - expected)
            assert not lost and not stale, f"{audience.key}: lost {lost[:10]}, stale {stale[:10]}"
            segment = segments[audience.audience_id]
            assert (segment["contextKind"], segment["name"]) == ("user", cohort_name(audience.key))
        assert dead_letters == [], dead_letters[:3]
        if FAULTS_ON:
            injected = stack.emulator.stats()["faults"]
            assert all(injected[kind] > 0 for kind in ("429", "5xx", "slow", "drop")), injected


# ----------------------------------------------------------------------------------------- what the chaos run found


def test_a_second_copy_of_a_change_cannot_write_under_a_newer_change(aws: Aws, emulator: Emulator) -> None:
    """Found by the chaos run (a stale member): the same change delivered twice (Segment retries, SQS
    redelivers) is handled by two invocations at once, while a newer change arrives. Only the holder of the
    audience's lease writes; whatever the others record meanwhile is written after it, newest last.
    Deterministic here: the copy's write is slow."""
    real = SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID)

    def invocation(writer: SegmentWriter) -> Synchronizer:  # each with its own clients, as on Lambda
        return make_sync(aws, writer, 100)

    def record(included: bool, second: int) -> QueuedRecord:
        change = audience_state.change("aud_chaos", "u1", included, second=second, audience_key="chaos")
        return QueuedRecord(f"sqs-{uuid.uuid4().hex}", change.to_message())

    entered, exited = record(True, 10), record(False, 20)
    first, later = invocation(real), invocation(real)

    class SlowCopy:
        """Meanwhile the first copy and the newer exit are handled to the end by two other invocations."""

        def write(self, target: Target, add: Sequence[str], remove: Sequence[str], deadline: float) -> bool:
            for sync, queued in ((first, entered), (later, exited)):
                assert sync.sync([queued], deadline).failed == []  # recorded; the lease is the copy's
            return real.write(target, add, remove, deadline)

    copy = QueuedRecord(f"sqs-{uuid.uuid4().hex}", entered.body)
    invocation(SlowCopy()).sync([copy], time.time() + 20)
    invocation(real).sync([], time.time() + 20)  # whatever is left, as the next tick would
    assert emulator.included(f"{CLIENT_SIDE_ID}/aud_chaos") == set()
