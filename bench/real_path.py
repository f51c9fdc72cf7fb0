"""The sync core's CPU on the real client path: real boto3 against moto in another process.

The process that measures runs only our code and its clients (botocore building, signing and parsing
every call, `requests` for LaunchDarkly against a recording session); moto answers from its own process,
so `time.process_time()` here is what a Lambda instance would spend. Beside it, in the same run, the CPU
of one plain conditional `UpdateItem` — the cost the first-sync issue found dominant when the store made
two of them per change.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3

from bench.common import PYTHON, REPO_ROOT
from bench.fakes import NullDeadLetters, RecordingSession
from ld_audiences.aws_clients import client_config
from ld_audiences.change import MembershipChange
from ld_audiences.config import SEGMENTS_AT_ONCE, STATE_THREADS
from ld_audiences.context_state import ContextStates
from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.pending_log import PendingLog
from ld_audiences.state_table import table_definition
from ld_audiences.sync import Synchronizer
from ld_audiences.writers import SegmentAudiencesWriter

TABLE = "bench-state"
# moto with the local stack's patches (atomic items, transactions that copy what they touch): without the
# second, moto copies the whole table per transaction item and the run measures moto, not us.
_MOTO = (
    "import sys; from ld_audiences_local.moto_patches import prepare_moto; prepare_moto(); "
    "from moto.server import main; main(['-H', '127.0.0.1', '-p', sys.argv[1]])"
)


@dataclass
class RealPath:
    update_item_cpu_ms: list[float]  # one plain conditional UpdateItem, per call
    sync_cpu_us: list[float]  # Synchronizer.sync on a first sync, per change
    calls_per_change: list[float]  # DynamoDB calls the sync made, per change
    changes: int


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [PYTHON, "-c", _MOTO, str(port)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ends = time.monotonic() + 30
        while time.monotonic() < ends:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _changes(run: int, count: int) -> list[QueuedRecord]:
    records = []
    for i in range(count):
        change = MembershipChange(
            audience_id=f"aud_bench_{run}",
            audience_key="bench",
            context_kind="user",
            context_key=f"user-{i:07d}",
            included=True,
            event_time=f"2026-11-20T10:00:00.{i:09d}Z",
            message_id=f"personas_{run}_{i}",
        )
        records.append(QueuedRecord(f"sqs-{run}-{i}", change.to_message()))
    return records


def measure(runs: int, changes: int, update_calls: int = 200) -> RealPath:
    result = RealPath([], [], [], changes)
    with moto_process() as endpoint, ThreadPoolExecutor(STATE_THREADS) as pool:
        client: Any = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106 (moto's dummy credentials)
            # moto answers one transaction at a time, about 0.5 s for 100 items: sixteen at once would outlast
            # the functions' 5 s read timeout, which is sized for DynamoDB.
            config=client_config(threads=SEGMENTS_AT_ONCE + STATE_THREADS, read_timeout=120),
        )
        client.create_table(**table_definition(TABLE))
        sync_once(client, pool, -1, 100)  # warm-up: connections, botocore's caches
        for run in range(runs):
            result.update_item_cpu_ms.append(update_item_cpu(client, run, update_calls) * 1e3)
            cpu, calls = sync_once(client, pool, run, changes)
            result.sync_cpu_us.append(cpu / changes * 1e6)
            result.calls_per_change.append(calls / changes)
    return result


def update_item_cpu(client: Any, run: int, calls: int) -> float:
    """CPU of one conditional UpdateItem (what each claim and each confirm used to be)."""
    started = time.process_time()
    for i in range(calls):
        client.update_item(
            TableName=TABLE,
            Key={"pk": {"S": f"plain-{run}"}, "sk": {"S": f"{i:08d}"}},
            UpdateExpression="SET desired_order = :o, lease_until = :u",
            ConditionExpression="attribute_not_exists(desired_order) OR desired_order < :o",
            ExpressionAttributeValues={":o": {"S": "2026-11-20T10:00:00.000000000Z|m"}, ":u": {"N": "1.5"}},
        )
    return (time.process_time() - started) / calls


def sync_once(client: Any, pool: ThreadPoolExecutor, run: int, changes: int) -> tuple[float, int]:
    """First sync of `changes` new contexts through the real pending log and context states; (CPU seconds,
    DynamoDB calls)."""
    log = PendingLog(client, TABLE, executor=pool)
    states = ContextStates(client, TABLE, executor=pool)
    launchdarkly = LaunchDarklyClient(
        "https://app.launchdarkly.com", "api-bench", session=RecordingSession(keep_state=False)
    )  # type: ignore[arg-type]
    sync = Synchronizer(
        writer=SegmentAudiencesWriter(launchdarkly, "bench-client-side-id"),
        log=log,
        states=states,
        dead_letters=NullDeadLetters(),
        chunk_size=1000,
        reconcile_seconds=600,  # moto is slow: one invocation reconciles all it recorded
    )
    records = _changes(run, changes)
    started = time.process_time()
    report = sync.sync(records, deadline=time.time() + 600)
    cpu = time.process_time() - started
    if report.added != changes:
        raise AssertionError(f"the real-path sync added {report.added} of {changes}")
    return cpu, log.calls + states.calls
