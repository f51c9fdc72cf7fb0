"""The `make bench` section of the first-sync simulation (bench/first_sync.py): its scenarios, run one per
process, and their table."""

from __future__ import annotations

import json
import math
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Any

from bench.common import PYTHON, REPO_ROOT, Figure, Section, Settings, fmt, table
from bench.cost import COST_HEADER, COST_TARGET, PRICES, SEGMENT_BATCH, cost, cost_rows
from bench.sim_scenario import DEFAULTS, Outcome, Scenario

VARIATIONS: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("memory 512 MB", {"memory_mb": 512}),
    ("memory 1,769 MB (one vCPU)", {"memory_mb": 1769}),
    ("batch 4,000, window 2 s", {"batch_size": 4000, "window": 2.0}),
    ("batch 10, window 0 s", {"batch_size": 10, "window": 0.0}),  # AWS takes at most 10 without a window
    ("concurrency 2", {"concurrency": 2}),
    ("concurrency 10", {"concurrency": 10}),
    ("concurrency 10, LaunchDarkly sends no Remaining headers", {"concurrency": 10, "remaining_headers": False}),
]
SLOW_VARIATIONS = ["defaults", "concurrency 10"]
TARGET_MINUTES = 10.0
TARGET_REQUESTS = 1010


def run_child(scenario: Scenario) -> Outcome:
    """One scenario in a fresh process: memory and caches of one run never help the next."""
    out = subprocess.run(
        [PYTHON, "-m", "bench.first_sync", json.dumps(asdict(scenario))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=7200,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["scenario"] = Scenario(**data["scenario"])
    return Outcome(**data)


LONG_VARIATIONS = ["defaults"]  # make bench-long: the 1M first sync
WRITE_UNITS_TARGET = 1.5  # a change


def scenarios(changes: int, long: bool = False) -> list[tuple[str, Scenario]]:
    if long:
        return [(label, replace(DEFAULTS, changes=changes, **k)) for label, k in VARIATIONS if label in LONG_VARIATIONS]
    fast = [(label, replace(DEFAULTS, changes=changes, **knobs)) for label, knobs in VARIATIONS]
    slow = [
        (label, replace(DEFAULTS, changes=changes, arrival_rate=500.0, **knobs))
        for label, knobs in VARIATIONS
        if label in SLOW_VARIATIONS
    ]
    return fast + slow


RESYNC_MEMBERS = 100_000


def run(settings: Settings) -> Section:
    command = ".venv/bin/python -m bench " + ("--long --only first_sync" if settings.long else "--only first_sync")
    section = Section("first_sync", "First sync of a large audience (simulated)", command)
    # make bench: 100,000 members (the targets scale: requests ≤ members ÷ 1,000 + 1%); make bench-long: 1M.
    changes = settings.size(1_000_000 if settings.long else 100_000, 3_000)
    chosen = scenarios(changes, settings.long)
    resync_scenario = replace(
        DEFAULTS, changes=settings.size(RESYNC_MEMBERS, 3_000), arrival_rate=10_000.0, resync=True
    )
    with ThreadPoolExecutor(max_workers=2) as pool:  # one scenario per core
        resynced = None if settings.long else pool.submit(run_child, resync_scenario)
        outcomes = list(pool.map(lambda item: (item[0], run_child(item[1])), chosen))
        resync_outcome = resynced.result() if resynced is not None else None
    section.outcomes = list(outcomes)
    rows = []
    for label, o in outcomes:
        s = o.scenario
        rows.append(
            [
                f"{fmt(s.arrival_rate, 0)}/s",
                label,
                s.label(),
                f"{o.total_seconds / 60:.1f} min",
                f"{max(o.total_seconds - o.arrival_seconds, 0):.0f} s",
                f"{fmt(o.launchdarkly_requests, 0)} / {fmt(o.optimum_requests, 0)}",
                fmt(o.launchdarkly_429, 0),
                fmt(o.dead_lettered, 0),
                fmt(o.deferred, 0),
                "yes" if o.exact else "**NO**",
                f"{o.calls_per_change:.3f}",
                fmt(o.peak_partition_wcu, 0),
                f"{o.cpu_us_per_change:.0f}",
            ]
        )
    default = next(
        o for label, o in outcomes if label == "defaults" and o.scenario.arrival_rate == DEFAULTS.arrival_rate
    )
    section.figures = [
        Figure(
            f"time to sync {fmt(changes, 0)} new members at the defaults, 5,000/s arriving",
            "min",
            [default.total_seconds / 60],
            TARGET_MINUTES if not settings.quick else None,
            "lower",
        ),
        Figure(
            "  LaunchDarkly requests at the defaults",
            "requests",
            [float(default.launchdarkly_requests)],
            float(math.ceil(TARGET_REQUESTS * changes / 1_000_000)) if not settings.quick else None,
            "lower",
            digits=0,
        ),
        Figure(
            "  records dead-lettered at the defaults", "records", [float(default.dead_lettered)], 0.0, "equal", digits=0
        ),
        Figure("  final segment exactly the members (1 = yes)", "", [float(default.exact)], 1.0, "equal", digits=0),
        Figure(
            "  DynamoDB calls per change at the defaults", "calls", [default.calls_per_change], 0.1, "lower", digits=3
        ),
        Figure(
            "  DynamoDB write units per change at the defaults",
            "units",
            [default.write_units_per_change],
            WRITE_UNITS_TARGET,
            "lower",
            digits=2,
            note=f"peak {fmt(default.peak_partition_wcu, 0)} WCU a partition key (limit 1,000), "
            f"{fmt(default.peak_table_wcu, 0)} the table (a new table's ceiling: 4,000)",
        ),
    ]
    section.figures.append(
        Figure(
            "  cost per million changes at the defaults, batched",
            "$",
            [cost(default, SEGMENT_BATCH).total],
            COST_TARGET,
            "lower",
            digits=2,
        )
    )
    section.headline = (
        f"{fmt(changes, 0)} members at the template's defaults ({DEFAULTS.label()}) in "
        f"{default.total_seconds / 60:.1f} min with {fmt(default.launchdarkly_requests, 0)} LaunchDarkly requests "
        f"(optimum {fmt(default.optimum_requests, 0)}), {default.dead_lettered} dead-lettered, final segment "
        f"{'exact' if default.exact else 'NOT exact'}; {default.calls_per_change:.3f} DynamoDB calls a change."
    )
    section.details.append(
        "Path measured: the product's `SyncService.handle` (what functions/sync/app.py runs) with real boto3 "
        "clients and a real `requests.Session`, answered in process (bench/sim_aws/, bench/sim_launchdarkly.py) "
        "on a virtual clock (bench/virtual_time.py); model in the module docstring of bench/first_sync.py. "
        "Time = first arrival to last change acknowledged; lag = after the last arrival. Requests = all "
        "LaunchDarkly requests (429s included) against the optimum ⌈members ÷ 1,000⌉. Deferred = records "
        "queued again for time (no receive count spent). Peak WCU = the most write units one partition key took "
        "in one second (DynamoDB's limit is 1,000). CPU = this machine's CPU time of our code per change "
        "(x86-64, CPython 3.11; Lambda's arm64 and 3.13 differ), scaled by 1,769 MB ÷ memory in the simulation.\n\n"
        + table(
            [
                "arrivals",
                "knob",
                "settings",
                "time",
                "lag",
                "LD requests / optimum",
                "429s",
                "DLQ",
                "deferred",
                "exact",
                "DynamoDB calls / change",
                "peak WCU / partition",
                "CPU µs / change",
            ],
            rows,
        )
    )
    made_by = "make bench-long" if settings.long else "make bench"
    section.details.append(
        "**Cost per million changes of the first sync at the defaults.** "
        + PRICES
        + "\n\n"
        + table(COST_HEADER, cost_rows(f"first sync, {fmt(changes, 0)} members", default, made_by))
    )
    if resync_outcome is not None:
        section.details.append(resync_details(resync_outcome))
        section.figures.append(
            Figure(
                f"resync of a {fmt(resync_outcome.scenario.changes, 0)}-member audience whose segment was deleted",
                "s",
                [resync_outcome.total_seconds],
                note=f"{fmt(resync_outcome.launchdarkly_requests, 0)} LaunchDarkly requests, "
                f"exact: {resync_outcome.exact}",
            )
        )
    section.details.append(
        "Reproduce one row: `.venv/bin/python -m bench.first_sync "
        f"'{json.dumps(asdict(replace(DEFAULTS, changes=changes)))}'` (prints the outcome as JSON)."
    )
    return section


def resync_details(o: Outcome) -> str:
    r = o.reads
    n = o.scenario.changes
    gets_seconds = r["audit_gets"] / o.scenario.ld_limit
    return (
        f"**Resync and audit of a {fmt(n, 0)}-member audience** (issue 12): the state table holds the audience "
        "(every member written by the real `ContextStates`, as a reconcile leaves it), the segment was deleted in "
        "LaunchDarkly, "
        "`ld-audiences resync` (devtools/ld_audiences_local/resync.py, the real function) reads the audience and "
        "queues one reassert per context, and the sync writes them back on the same simulated clock, LaunchDarkly "
        "and settings as the first-sync rows (the defaults). DynamoDB read units are what the in-process stand-in "
        "bills (eventually consistent Query pages: ½ unit per 4 KB read).\n\n"
        + table(
            ["what", "DynamoDB calls", "read units", "LaunchDarkly requests", "time", "result"],
            [
                [
                    "`status --audience` (exact member count: one COUNT Query per shard)",
                    fmt(r["status_calls"], 0),
                    fmt(r["status_read_units"], 1),
                    "0",
                    "—",
                    "",
                ],
                [
                    "`resync`: read every context, queue a reassert each",
                    fmt(r["resync_calls"], 0),
                    fmt(r["resync_read_units"], 1),
                    "0",
                    "—",
                    f"{fmt(n, 0)} queued",
                ],
                [
                    "sync of the reasserts (record, reconcile: read the applied state, write, record)",
                    f"{fmt(o.dynamodb_calls, 0)} ({o.calls_per_change:.3f} a context)",
                    "—",
                    f"{fmt(o.launchdarkly_requests, 0)} (optimum {fmt(o.optimum_requests, 0)}), "
                    f"{o.launchdarkly_429} answered 429",
                    f"{o.total_seconds:.0f} s",
                    f"segment exact: {'yes' if o.exact else '**NO**'}, dead-lettered {o.dead_lettered}",
                ],
                [
                    f"`audit --sample 1000` afterwards (counts, then a uniform sample of {fmt(r['audit_checked'], 0)})",
                    fmt(r["audit_calls"], 0),
                    fmt(r["audit_read_units"], 1),
                    f"{fmt(r['audit_gets'], 0)} GETs",
                    f"about {gets_seconds:.0f} s at {o.scenario.ld_limit} requests/s",
                    f"drift {fmt(r['audit_drift'], 0)}",
                ],
            ],
        )
    )
