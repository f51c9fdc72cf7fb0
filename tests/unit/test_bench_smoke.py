"""The benchmark code (bench/) works: quick in-process runs on tiny sizes, the request-count optimum on a
small workload, and the sync benchmark's direct DynamoDB client against a real one. No timing is asserted here: figures
are `make bench`'s business."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import boto3
import pytest
import yaml

from bench.__main__ import run_sections
from bench.cold_start import lambda_environment, parse_importtime
from bench.common import Settings, machine
from bench.fakes import RecordingSession, direct_state_table
from bench.first_sync import simulate
from bench.report import render
from bench.sim_aws import InProcessDynamoDB, attach
from bench.sim_scenario import DEFAULTS
from bench.sync import TABLE, make_synchronizer, naive, run_sync
from bench.workload import engage_events, sync_batch
from ld_audiences.change import MembershipChange
from ld_audiences.config import ContextKeyPolicy, NormalizeSettings
from ld_audiences.normalize import normalize
from ld_audiences.state_table import table_definition
from tests.unit.test_template import TEMPLATE, CfnLoader, function_env, load_template

QUICK = Settings(quick=True, runs=2)


def test_quick_ingest_and_sync_sections_run_and_render() -> None:
    sections = run_sections(["ingest", "sync"], QUICK)
    assert [s.key for s in sections] == ["ingest", "sync"]
    for section in sections:
        assert section.skipped is None
        assert section.figures and all(len(f.samples) >= 1 for f in section.figures)
    optimum = next(f for f in sections[1].figures if f.name.startswith("LaunchDarkly requests"))
    assert optimum.samples and all(sample == 0 for sample in optimum.samples)
    report = render(sections, machine(), QUICK, datetime.now(UTC), 1.0, "python -m bench --quick")
    assert report.startswith("# Benchmarks") and "## Sync efficiency" in report and "| PASS |" in report


def test_generated_engage_events_are_valid_audience_events() -> None:
    settings = NormalizeSettings(policy=ContextKeyPolicy.USER_ID_THEN_EMAIL)
    outcomes = [normalize(event, settings) for event in engage_events(300)]
    assert all(isinstance(o, MembershipChange) for o in outcomes)
    assert any(o.context_key.endswith("@example-mail.com") for o in outcomes if isinstance(o, MembershipChange))


def test_requests_equal_the_optimum_on_a_small_workload() -> None:
    first = sync_batch(400, audience_count=3, contexts_per_audience=30)
    second = sync_batch(
        400, audience_count=3, contexts_per_audience=30, seed=9, start_ns=10**12, replay_of=first, replay_share=0.3
    )
    table, session = direct_state_table(TABLE), RecordingSession()
    one = run_sync(first, chunk_size=7, table=table, session=session)
    two = run_sync(second, chunk_size=7, table=table, session=session, history=[first.changes])
    for outcome in (one, two):
        assert outcome.optimum > len(outcome.net_by_target)  # several chunks per segment
        assert outcome.requests == outcome.optimum
        assert outcome.correct
    assert two.report.stale + two.report.duplicates > 0
    baseline = naive(first)
    assert baseline.requests == 3 and baseline.items == len(first.records)


def test_importtime_parser_reads_the_handler_imports_only() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 | site",
            "#bench-import-start",
            "import time:      2000 |       2000 |   botocore.compat",
            "import time:      1000 |       3000 | boto3",
            "import time:       500 |        500 | json",
            "#bench-import-end",
        ]
    )
    tree = parse_importtime(stderr, total_ms=10.0)
    assert tree.direct == [("boto3", 3.0), ("json", 0.5)]
    assert tree.by_package[0] == ("botocore", 2.0, 1)


# ----------------------------------------------------------------------------------------- direct client


def test_the_direct_client_answers_the_sync_as_a_boto3_client_does() -> None:
    """The sync benchmark's botocore-free client (bench/fakes.py) leaves the same report, items and bills as a
    real boto3 client over the same in-process table (which tests/unit/test_sim_aws.py checks against moto)."""
    workload = sync_batch(300, audience_count=3, contexts_per_audience=40)
    direct = direct_state_table(TABLE)
    service = InProcessDynamoDB(time.time, throttle=False)
    service.create_table(table_definition(TABLE))
    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    botocore_client = attach(session.client("dynamodb"), service)
    results = []
    for client, table in ((direct, direct.service), (botocore_client, service)):
        with mock.patch("ld_audiences.pending_log.uuid.uuid4", side_effect=(uuid.UUID(int=i) for i in range(10**6))):
            sync, _ = make_synchronizer(client, RecordingSession(), 7, clock=lambda: 1_800_000_000.0)
            report = sync.sync(workload.records, deadline=1_800_000_900.0)
        items = sorted(str(item) for partition in table.table(TABLE).partitions.values() for item in partition.items())
        results.append((report.counts, report.audiences, items, table.usage.write_units, dict(table.usage.calls)))
    assert results[0] == results[1]
    assert results[0][0]["added"] > 0


# ----------------------------------------------------------------------------------------- first-sync simulation


def test_the_first_sync_simulation_runs_the_product_to_an_exact_segment() -> None:
    outcome = simulate(replace(DEFAULTS, changes=3000, arrival_rate=5000))
    assert outcome.exact and outcome.dead_lettered == 0
    assert outcome.launchdarkly_requests == outcome.optimum_requests == 3
    assert 0 < outcome.calls_per_change <= 0.1
    assert outcome.cpu_seconds > 0 and outcome.total_seconds > outcome.arrival_seconds


def test_the_simulated_launchdarkly_limit_is_met_and_shared() -> None:
    """Many audiences and instances on LaunchDarkly's limit, over several windows: where it publishes
    remaining counts (as it documents), the shared window keeps requests within what the limit allows; where
    it does not, a reset releases every waiting instance and more of them meet 429s. Either way nothing is
    lost or dead-lettered."""
    scenario = replace(DEFAULTS, changes=3000, audiences=150, batch_size=100, concurrency=10, ld_window=2.0)
    counted = simulate(scenario)
    assert counted.exact and counted.dead_lettered == 0
    assert counted.ld_windows > 1 and counted.launchdarkly_requests <= 1.2 * counted.rate_allows
    uncounted = simulate(replace(scenario, remaining_headers=False))
    assert uncounted.exact and uncounted.dead_lettered == 0
    assert uncounted.launchdarkly_429 > counted.launchdarkly_429


def test_the_simulation_defaults_are_the_template_defaults() -> None:
    parameters = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)["Parameters"]  # noqa: S506 (safe loader)
    assert {
        "memory_mb": int(parameters["SyncMemorySize"]["Default"]),
        "batch_size": int(parameters["SyncBatchSize"]["Default"]),
        "window": float(parameters["SyncBatchingWindowSeconds"]["Default"]),
        "concurrency": int(parameters["SyncMaximumConcurrency"]["Default"]),
        "timeout": int(parameters["SyncTimeoutSeconds"]["Default"]),
        "max_receive_count": int(parameters["MaxReceiveCount"]["Default"]),
    } == {
        name: getattr(DEFAULTS, name)
        for name in ("memory_mb", "batch_size", "window", "concurrency", "timeout", "max_receive_count")
    }


@pytest.mark.parametrize(("function", "logical_id"), [("ingest", "IngestFunction"), ("sync", "SyncFunction")])
def test_cold_init_runs_with_every_variable_the_template_sets(function: str, logical_id: str, tmp_path: Path) -> None:
    template_vars = function_env(load_template(), logical_id).keys()
    assert template_vars - lambda_environment(function, tmp_path, tmp_path).keys() == set()
