"""Sync efficiency: LaunchDarkly requests against the optimum, CPU per record, peak memory, and the naive
approach (Segment's destination: one request per audience per batch carrying every raw change).

The product's real `Synchronizer`, `SegmentAudiencesWriter` and `LaunchDarklyClient` run; only the
network is replaced: a recording `requests.Session` answers 204 and keeps segment state as LaunchDarkly
does, and the state table is bench/sim_aws/'s in-process DynamoDB (checked against moto) behind a client
without botocore (`DirectDynamoDB`, bench/fakes.py), whose answering CPU is not counted.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import real_path
from bench.common import PYTHON, REPO_ROOT, Figure, Section, Settings, fmt, table
from bench.fakes import DirectDynamoDB, NullDeadLetters, RecordingSession, direct_state_table, json_bytes
from bench.workload import SyncWorkload, sqs_event, sync_batch
from ld_audiences.change import MembershipChange
from ld_audiences.context_state import ContextStates
from ld_audiences.gc_policy import settle_after_init
from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord, SyncReport
from ld_audiences.pending_log import PendingLog
from ld_audiences.sync import Synchronizer
from ld_audiences.writers import SegmentAudiencesWriter, Target

CLIENT_SIDE_ID = "bench-client-side-id"
CPU_TARGET_US = 20.0
RSS_TARGET_MB = 200.0
DEFAULT_CHUNK = 1000
TABLE = "bench-state"
# One invocation reconciles everything it recorded: the figures are about requests and CPU, not about time.
RECONCILE_SECONDS = 900.0


@dataclass
class Outcome:
    """One sync of one batch, with everything needed to judge it."""

    requests: int
    optimum: int
    bytes: int
    report: SyncReport
    net_by_target: dict[tuple[str, str], int]
    store_calls: dict[str, int] = field(default_factory=dict)  # DynamoDB calls by operation
    write_units: float = 0.0
    members: dict[str, set[str]] = field(default_factory=dict)
    expected: dict[str, set[str]] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return {k: v for k, v in self.members.items() if v} == {k: v for k, v in self.expected.items() if v}


def make_synchronizer(
    table: DirectDynamoDB, session: RecordingSession, chunk_size: int, clock: Callable[[], float] = time.time
) -> tuple[Synchronizer, LaunchDarklyClient]:
    client = LaunchDarklyClient("https://app.launchdarkly.com", "api-bench-token", session=session)  # type: ignore[arg-type]
    sync = Synchronizer(
        writer=SegmentAudiencesWriter(client, CLIENT_SIDE_ID),
        log=PendingLog(table, TABLE, clock=clock),  # type: ignore[arg-type]
        states=ContextStates(table, TABLE, clock=clock),  # type: ignore[arg-type]
        dead_letters=NullDeadLetters(),
        chunk_size=chunk_size,
        reconcile_seconds=RECONCILE_SECONDS,
        clock=clock,
    )
    return sync, client


def _newest(batches: list[list[MembershipChange]]) -> dict[tuple[str, str, str], MembershipChange]:
    newest: dict[tuple[str, str, str], MembershipChange] = {}
    for batch in batches:
        for c in batch:
            key = (c.audience_id, c.context_kind, c.context_key)
            if key not in newest or c.order > newest[key].order:
                newest[key] = c
    return newest


def net_changes(changes: list[MembershipChange], history: list[list[MembershipChange]]) -> dict[tuple[str, str], int]:
    """Per (audience, context kind): contexts whose newest change in the batch is newer than anything synced
    before (every earlier batch was synced in full), i.e. writes that cannot be avoided without losing an
    update."""
    known = _newest(history)
    net: dict[tuple[str, str], int] = defaultdict(int)
    for key, change in _newest([changes]).items():
        if key not in known or change.order > known[key].order:
            net[key[:2]] += 1
    return dict(net)


def optimum(net: dict[tuple[str, str], int], chunk_size: int) -> int:
    return sum(math.ceil(n / chunk_size) for n in net.values())


def expected_members(batches: list[list[MembershipChange]]) -> dict[str, set[str]]:
    """Ground truth, computed independently of the product: the newest change per context wins."""
    members: dict[str, set[str]] = defaultdict(set)
    for (audience_id, _, key), c in _newest(batches).items():
        if c.included:
            members[audience_id].add(key)
        else:
            members.setdefault(audience_id, set())
    return dict(members)


def run_sync(
    workload: SyncWorkload,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    table: DirectDynamoDB | None = None,
    session: RecordingSession | None = None,
    history: list[list[MembershipChange]] | None = None,
) -> Outcome:
    """Sync one batch and compare the requests made with the optimum."""
    table = table if table is not None else direct_state_table(TABLE)
    session = session if session is not None else RecordingSession()
    net = net_changes(workload.changes, history or [])
    before_requests, before_bytes = len(session.requests), session.total_bytes
    usage = table.service.usage
    before_calls, before_units = dict(usage.calls), usage.write_units
    sync, _ = make_synchronizer(table, session, chunk_size)
    report = sync.sync(workload.records, deadline=time.time() + 900)
    if report.failed or report.dead_lettered:
        raise AssertionError(f"sync failed {len(report.failed)} and dead-lettered {report.dead_lettered} records")
    return Outcome(
        requests=len(session.requests) - before_requests,
        optimum=optimum(net, chunk_size),
        bytes=session.total_bytes - before_bytes,
        report=report,
        net_by_target=net,
        store_calls={k: v - before_calls.get(k, 0) for k, v in usage.calls.items()},
        write_units=usage.write_units - before_units,
        members={k: set(v) for k, v in session.members.items()},
        expected=expected_members([*(history or []), workload.changes]),
    )


@dataclass
class Naive:
    requests: int
    bytes: int
    items: int
    wrong_contexts: int  # contexts whose final membership differs from the newest change


def naive(workload: SyncWorkload, chunk_size: int | None = None) -> Naive:
    """Segment's destination: per audience, one segment-audiences request with every raw change of the
    batch in arrival order (or chunks of `chunk_size` items when given), nothing reduced or ordered."""
    by_audience: dict[tuple[str, str, str], list[MembershipChange]] = defaultdict(list)
    for change in workload.changes:
        by_audience[(change.audience_id, change.audience_key, change.context_kind)].append(change)
    requests = size = items = 0
    members: dict[str, set[str]] = defaultdict(set)
    for (audience_id, audience_key, kind), changes in by_audience.items():
        target = Target(audience_id, audience_key, kind)
        step = chunk_size or len(changes)
        for start in range(0, len(changes), step):
            part = changes[start : start + step]
            body = {
                "environmentId": CLIENT_SIDE_ID,
                "contextKind": kind,
                "batch": [
                    {
                        "userId": c.context_key,
                        "cohortName": target.cohort_name,
                        "cohortId": audience_id,
                        "value": c.included,
                    }
                    for c in part
                ],
            }
            requests += 1
            size += json_bytes(body)
            items += len(part)
            for c in part:
                (members[audience_id].add if c.included else members[audience_id].discard)(c.context_key)
    expected = expected_members([workload.changes])
    wrong = sum(len(members.get(a, set()) ^ expected.get(a, set())) for a in set(members) | set(expected))
    return Naive(requests, size, items, wrong)


# ----------------------------------------------------------------------------------------- CPU


def cpu_per_record(records: int, contexts: int, runs: int) -> list[float]:
    """CPU per record of `Synchronizer.sync`, in a fresh process that sets the collector up as the sync
    function's init does (`cpu_child`)."""
    return [float(v) for v in _child("--cpu-child", records, contexts, runs)]


def _child(*args: object) -> Any:
    """What a fresh `python -m bench.sync ARGS` printed last, as JSON."""
    out = subprocess.run(
        [PYTHON, "-m", "bench.sync", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_child(records: int, contexts: int, runs: int, chunk_size: int = DEFAULT_CHUNK) -> None:
    """Run in a fresh process: imports, then the collector settled as at the end of functions/sync/app.py's
    init, then the batch (made after, as an invocation's event is); print the process CPU time of
    `Synchronizer.sync` per record (parsing included), fresh table each run, less what the in-process
    DynamoDB spent answering."""
    settle_after_init()
    workload = sync_batch(records, contexts_per_audience=contexts)
    samples = []
    run_sync(workload, chunk_size=chunk_size)  # warm-up
    for _ in range(runs):
        table, session = direct_state_table(TABLE), RecordingSession(keep_state=False)
        sync, _ = make_synchronizer(table, session, chunk_size)
        c0 = time.process_time()
        sync.sync(workload.records, deadline=time.time() + 900)
        cpu = time.process_time() - c0 - table.answer_seconds
        samples.append(cpu / len(workload.records) * 1e6)
    print(json.dumps(samples))


# ----------------------------------------------------------------------------------------- RSS


def _vm_hwm_kb() -> int | None:
    """Peak RSS of this process image (Linux). `ru_maxrss` alone is not enough: Linux carries the parent's
    high-water mark into a child across fork and execve, so a child of a big parent reports the parent's."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_kb() -> int:
    import resource

    hwm = _vm_hwm_kb()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(records: int) -> None:
    """Run in a fresh process: the Lambda event as JSON text → records → sync; print peak RSS."""
    import resource

    settle_after_init()  # as functions/sync/app.py's init leaves the collector
    baseline = _peak_kb()
    workload = sync_batch(records)
    text = sqs_event(workload.records)
    del workload
    event = json.loads(text)  # what the Lambda runtime hands the handler
    event_bytes = len(text)
    del text
    queued = [QueuedRecord(r["messageId"], r["body"]) for r in event["Records"]]
    table, session = direct_state_table(TABLE), RecordingSession(keep_state=False)
    sync, _ = make_synchronizer(table, session, DEFAULT_CHUNK)
    report = sync.sync(queued, deadline=time.time() + 900)
    print(
        json.dumps(
            {
                "baseline_kb": baseline,
                "peak_kb": _peak_kb(),
                "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "event_bytes": event_bytes,
                "failed": len(report.failed),
            }
        )
    )


def peak_rss(records: int, runs: int) -> tuple[list[float], list[float], int]:
    peaks, baselines, event_bytes = [], [], 0
    for _ in range(runs):
        data = _child("--rss-child", records)
        peaks.append(data["peak_kb"] / 1024)
        baselines.append(data["baseline_kb"] / 1024)
        event_bytes = data["event_bytes"]
    return peaks, baselines, event_bytes


# ----------------------------------------------------------------------------------------- section


def run(settings: Settings) -> Section:
    section = Section("sync", "Sync efficiency", ".venv/bin/python -m bench --only sync")
    size = settings.size(10_000, 600)
    contexts = settings.size(600, 40)
    first = sync_batch(size, contexts_per_audience=contexts)
    second = sync_batch(
        size, contexts_per_audience=contexts, seed=8, start_ns=1_800_000_000_000, replay_of=first, replay_share=0.3
    )

    rows = []
    checks = []
    for label, chunk in (("default chunk size (1,000)", DEFAULT_CHUNK), ("chunk size 100", 100)):
        if settings.quick:
            chunk = 25 if chunk == 100 else chunk
            label = f"chunk size {chunk}"
        state, session = direct_state_table(TABLE), RecordingSession()
        one = run_sync(first, chunk_size=chunk, table=state, session=session)
        two = run_sync(second, chunk_size=chunk, table=state, session=session, history=[first.changes])
        for name, outcome in (
            (f"batch 1, empty state, {label}", one),
            (f"batch 2, 30% late redeliveries, {label}", two),
        ):
            checks.append((name, outcome))
            rows.append(
                [
                    name,
                    fmt(len(first.records), 0),
                    len(outcome.net_by_target),
                    fmt(sum(outcome.net_by_target.values()), 0),
                    outcome.optimum,
                    outcome.requests,
                    "yes" if outcome.requests == outcome.optimum else "**NO**",
                    outcome.report.superseded,
                    outcome.report.stale,
                    outcome.report.duplicates,
                    fmt(sum(outcome.store_calls.values()), 0),
                    fmt(outcome.write_units, 0),
                    "yes" if outcome.correct else "**NO**",
                ]
            )
    request_figure = Figure(
        "LaunchDarkly requests - optimum (4 scenarios below)",
        "requests",
        [float(o.requests - o.optimum) for _, o in checks],
        0.0,
        "equal",
        digits=0,
    )
    correct_figure = Figure(
        "segments end in the newest state (4 scenarios; 1 = yes)",
        "",
        [float(o.correct) for _, o in checks],
        1.0,
        "equal",
        digits=0,
    )

    cpu = cpu_per_record(size, contexts, settings.runs)
    peaks, baselines, event_bytes = peak_rss(size, settings.runs if not settings.quick else 1)
    real_changes = settings.size(2000, 200)
    real = real_path.measure(settings.runs, real_changes)
    update_us = statistics.median(real.update_item_cpu_ms) * 1000
    section.figures = [
        request_figure,
        correct_figure,
        Figure(
            f"CPU per change, real path: Synchronizer.sync of a {fmt(real_changes, 0)}-member first sync, real boto3 "
            "against moto in another process",
            "µs",
            real.sync_cpu_us,
            0.5 * update_us,
            "lower",
            note="target: half of one plain conditional UpdateItem, measured in the same run",
        ),
        Figure(
            "  one plain conditional UpdateItem, same client and run (CPU per call)",
            "µs",
            [x * 1000 for x in real.update_item_cpu_ms],
        ),
        Figure("  DynamoDB calls per change, same run", "calls", real.calls_per_change, 0.1, "lower", digits=3),
        Figure(
            f"CPU per record, pure core: Synchronizer.sync of {fmt(size, 0)} records, in-process state table "
            "(no botocore; its answering not counted)",
            "µs",
            cpu,
            CPU_TARGET_US,
            "lower",
            digits=2,
        ),
        Figure(f"peak RSS, fresh process syncing {fmt(size, 0)} records", "MB", peaks, RSS_TARGET_MB, "lower"),
        Figure("  RSS of that process before building the batch (imports only)", "MB", baselines),
    ]

    ours = run_sync(first)
    raw = naive(first)
    raw_chunked = naive(first, DEFAULT_CHUNK)
    ours_items = sum(ours.net_by_target.values())
    section.details.append(
        f"Workload (`bench/workload.py::sync_batch`, seeded): {fmt(len(first.records), 0)} SQS records over 5 "
        f"audiences, each audience drawing from {contexts} context keys (pools overlap: one profile is in several "
        f"audiences), so a context changes about {len(first.records) / 5 / contexts:.1f} times per batch; "
        f"{first.identifier_duplicates} records repeat a change under a new messageId (Engage's one event per "
        f"identifier) and {first.redelivered} are SQS redeliveries of another record's body; shuffled. Batch 2 "
        f"continues half an hour later and carries 30% late redeliveries of batch 1 (stale or already applied)."
    )
    section.details.append(
        "Requests are counted at the HTTP session under the real `SegmentAudiencesWriter` and "
        "`LaunchDarklyClient`; the optimum is Σ over (audience, context kind) of ⌈net changes ÷ chunk size⌉, "
        "where a net change is a context whose newest change in the batch is newer than anything synced "
        'before. "Correct" compares the recorded LaunchDarkly state with a ground truth computed '
        "independently (newest event per context wins).\n\n"
        + table(
            [
                "scenario",
                "records",
                "segments",
                "net changes",
                "optimum",
                "requests",
                "= optimum",
                "superseded",
                "stale",
                "duplicates",
                "DynamoDB calls",
                "write units",
                "correct",
            ],
            rows,
        )
        + "\n\nDynamoDB calls and write units are what the in-process table counted and billed: the batch recorded in "
        "its audiences' pending logs (compressed items, then each audience's work item), the reconcile's reads, one "
        "context item per context written (after LaunchDarkly acknowledged it) and the log items deleted. "
        "Superseded records cost nothing: LaunchDarkly requests are at the optimum, and DynamoDB pays per context "
        "written, not per record."
    )
    section.details.append(
        "Beside the naive approach on batch 1 — Segment's LaunchDarkly Audiences destination sends, per audience, "
        "one segment-audiences request with every raw change of the batch in arrival order (bodies built with "
        "the same item shape and serializer as ours, so only the item count differs):\n\n"
        + table(
            ["approach", "requests", "items sent", "request bytes", "contexts left in a wrong state"],
            [
                [
                    "ours (coalesced, ordered, chunks of 1,000)",
                    ours.requests,
                    fmt(ours_items, 0),
                    fmt(ours.bytes, 0),
                    0 if ours.correct else "**some**",
                ],
                [
                    "naive: one request per audience per batch, all raw changes",
                    raw.requests,
                    fmt(raw.items, 0),
                    fmt(raw.bytes, 0),
                    raw.wrong_contexts,
                ],
                [
                    "naive, split at LaunchDarkly's 1,000-item practice",
                    raw_chunked.requests,
                    fmt(raw_chunked.items, 0),
                    fmt(raw_chunked.bytes, 0),
                    raw_chunked.wrong_contexts,
                ],
            ],
        )
        + f"\n\nRatios (naive ÷ ours): {raw.items / max(1, ours_items):.2f}x the items, "
        f"{raw.bytes / max(1, ours.bytes):.2f}x the bytes; split at 1,000 items the naive approach also needs "
        f"{raw_chunked.requests / max(1, ours.requests):.1f}x the requests. The naive approach applies changes in "
        "arrival order, so shuffled redeliveries and out-of-order events leave contexts in a stale state."
    )
    section.headline = (
        f"requests equal the optimum in every scenario ({ours.requests} for {fmt(len(first.records), 0)} records at "
        f"the default chunk size); the naive approach sends {raw.items / max(1, ours_items):.1f}x the items and "
        f"bytes and leaves {raw.wrong_contexts} contexts in a stale state."
        if all(o.requests == o.optimum for _, o in checks)
        else "**requests differ from the optimum** (see the scenario table)."
    )
    section.details.append(
        "Real path (bench/real_path.py): `time.process_time()` of this process around `Synchronizer.sync` of a "
        f"first sync of {fmt(real_changes, 0)} new contexts, through the real `PendingLog` and `ContextStates` "
        "(compressed log items, batched writes, one reused 16-thread pool) on a real boto3 client built with "
        "`client_config`, against moto "
        "running in another process (its CPU is not counted here), LaunchDarkly answered by a recording session; "
        "beside it, in the same run and on the same client, a plain conditional `UpdateItem` (what each claim and "
        "each confirm of the earlier state store was: two per change). "
        f"Medians: {statistics.median(real.sync_cpu_us):.0f} µs of CPU per change against "
        f"{update_us:.0f} µs per UpdateItem ({statistics.median(real.sync_cpu_us) / update_us:.2f}x), "
        f"{statistics.median(real.calls_per_change):.3f} DynamoDB calls per change."
    )
    section.details.append(
        f"Pure core: `time.process_time()` around `Synchronizer.sync` (JSON parsing and validation of every body, "
        "coalescing, recording and reconciling, request bodies serialized as `requests` would) with a fresh table "
        "each run, in a fresh process whose garbage collector is set up as the sync function's init leaves it "
        f"(`ld_audiences/gc_policy.py`; `.venv/bin/python -m bench.sync --cpu-child {size} {contexts} 7`); "
        "no network and no botocore, the in-process table's own CPU subtracted: what our own code "
        "costs, not what a "
        "Lambda instance pays (the real-path figure above). Peak RSS: the peak resident set of a fresh process "
        "that builds "
        f"the Lambda SQS event as JSON text ({fmt(event_bytes / 1024 / 1024, 1)} MiB: more than Lambda's 6 MB "
        "invocation payload, so a real batch of these records is smaller and this figure errs high), parses it as "
        "the runtime does, "
        "and syncs; read from `/proc/self/status` VmHWM, because `resource.getrusage(RUSAGE_SELF).ru_maxrss` "
        "inherits the parent's high-water mark across fork and exec on Linux (a child of a big parent reports "
        "the parent's peak); `ru_maxrss` is the fallback where /proc is missing "
        f"(`.venv/bin/python -m bench.sync --rss-child {size}`)."
    )
    return section


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-child":
        rss_child(int(sys.argv[2]))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--cpu-child":
        cpu_child(*map(int, sys.argv[2:]))
        return
    raise SystemExit(
        "usage: python -m bench.sync --rss-child RECORDS | --cpu-child RECORDS CONTEXTS RUNS"
        " (the benchmark itself: python -m bench)"
    )


if __name__ == "__main__":
    main()
