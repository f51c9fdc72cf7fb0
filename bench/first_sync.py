"""First sync of a large audience, simulated: the product's real sync path on a virtual clock.

Every change goes through the sync function's own code — `SyncService.handle` (the same object
functions/sync/app.py builds), the `Synchronizer`, the pending log, the context states and the shared
rate-limit window on real boto3 clients, the `LaunchDarklyClient` on a real `requests.Session` — while the
network is replaced by
in-process stand-ins (bench/sim_aws.py, bench/sim_launchdarkly.py) and time by `bench/virtual_time.py`:

* arrivals: Engage sends one change per member at `arrival_rate` a second, over `audiences` audiences in
  the order `pattern` says (bench/sim_workload.py);
* SQS and the Lambda event source mapping: up to `concurrency` instances, each gathering a batch of up
  to `batch_size` records or what the batching window brings, within Lambda's 6 MB payload; a record
  reported failed comes back after the visibility timeout and goes to the DLQ after `max_receive_count`
  receives; a message queued with a delay (a tick, a recheck) comes back after it;
* Lambda: an instance's CPU is this machine's CPU time of our code scaled to its memory (1,769 MB = one
  vCPU), plus 10 ms per invocation and a 1 s cold start;
* DynamoDB: 4 ms a call plus 0.05 ms an item of a transaction or batch read;
* LaunchDarkly: 150 ms + 1 ms per 10 keys a request; `ld_limit` requests a second granted as
  `ld_limit` x `ld_window` per window, each window opened by its first request (the emulator's model,
  devtools/ld_audiences_local/rate_window.py), then 429.

Enforced: DynamoDB's throughput limits (bench/sim_aws.py), LaunchDarkly's windows, Lambda's CPU (an
instance's share of a vCPU), the event source's batching, payload and redrive rules. Only counted: SQS
and API Gateway requests, CloudWatch bytes, anything billed (`bench/cost.py` prices them).

`python -m bench.first_sync '{"changes": 20000, "arrival_rate": 5000}'` runs one scenario and prints
its result as JSON; `run(settings)` is the `make bench` section.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import boto3

from bench.common import PYTHON, REPO_ROOT, Figure, Section, Settings, fmt, table
from bench.sim_aws import InProcessDynamoDB, InProcessSqs, SentMessage, Usage, attach
from bench.sim_launchdarkly import LaunchDarklyModel, session_for
from bench.sim_workload import AUDIENCE_ID, AUDIENCE_KEY, INTERLEAVED, body, exact, optimum_requests
from bench.virtual_time import Cpu, VirtualExecutor, VirtualTime
from ld_audiences.aws_clients import client_config
from ld_audiences.config import SEGMENTS_AT_ONCE, STATE_THREADS, LaunchDarklySettings, SyncSettings, WriterMode
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.state_table import table_definition
from ld_audiences.sync import TICK_BODY
from ld_audiences.sync_service import SyncService
from ld_audiences_local.rate_window import RouteRateLimit

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ld-audiences-changes"
DLQ_URL = QUEUE_URL + "-dlq"
TABLE = "ld-audiences-state-v2"
TOKEN = "api-simulated-token"  # noqa: S105 (a stand-in's, not a credential)
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
INVOKE_OVERHEAD = 0.010
COLD_START = 1.0
DYNAMODB_CALL = 0.004
DYNAMODB_ITEM = 0.00005
SQS_CALL = 0.004


@dataclass(frozen=True)
class Scenario:
    changes: int = 1_000_000
    arrival_rate: float = 5000.0
    memory_mb: int = 1024
    batch_size: int = 1000
    window: float = 1.0
    concurrency: int = 2
    timeout: int = 60
    max_receive_count: int = 5
    ld_limit: float = 5.0  # requests a second
    ld_window: float = 10.0  # seconds
    remaining_headers: bool = True
    audiences: int = 1
    pattern: str = INTERLEAVED
    # Resync instead of a first sync: the table already holds the audience (every member applied), the
    # segment was deleted in LaunchDarkly, and `ld-audiences resync` queues one reassert per context.
    resync: bool = False

    def label(self) -> str:
        return (
            f"{self.memory_mb} MB, batch {self.batch_size:,}, window {self.window:g} s, concurrency {self.concurrency}"
        )


@dataclass
class Outcome:
    scenario: Scenario
    total_seconds: float  # first arrival → last change acknowledged
    arrival_seconds: float  # first → last arrival
    launchdarkly_requests: int
    launchdarkly_429: int
    optimum_requests: int
    dead_lettered: int
    exact: bool
    invocations: int
    deferred: int  # ticks + requeues: messages the sync queued for later
    timeouts: int
    dynamodb_calls: int
    write_units: float
    peak_partition_wcu: float
    cpu_seconds: float  # this machine's CPU time of our code
    real_seconds: float  # how long the simulation took to run
    reads: dict[str, float] = field(default_factory=dict)  # resync: what status, resync and audit read
    ticks: int = 0
    received: int = 0  # messages handed to invocations (receives), ticks and redeliveries included
    billed_ms: int = 0  # Lambda's billed duration, summed over invocations
    read_units: float = 0.0
    peak_table_wcu: float = 0.0  # the table's write units in its busiest second (index writes apart)
    ld_windows: int = 0  # LaunchDarkly rate-limit windows opened

    @property
    def lag_seconds(self) -> float:
        return max(self.total_seconds - self.arrival_seconds, 0.0)

    @property
    def write_units_per_change(self) -> float:
        return self.write_units / self.scenario.changes

    @property
    def rate_allows(self) -> float:
        """LaunchDarkly requests its rate limit allows over the run."""
        return self.scenario.ld_limit * max(self.total_seconds, self.scenario.ld_window)

    @property
    def calls_per_change(self) -> float:
        return self.dynamodb_calls / self.scenario.changes

    @property
    def cpu_us_per_change(self) -> float:
        return self.cpu_seconds / self.scenario.changes * 1e6


# ------------------------------------------------------------------------------------------ SQS + ESM


@dataclass(order=True)
class _Message:
    visible_at: float
    seq: int
    body: str = field(compare=False)
    message_id: str = field(compare=False)
    receives: int = field(default=0, compare=False)


class SimulatedQueue:
    """The queue, its DLQ and the arrivals, as SQS and Lambda's event source mapping treat them."""

    def __init__(
        self, scenario: Scenario, start: float, visibility_timeout: float, bodies: list[str] | None = None
    ) -> None:
        self._s = scenario
        self._bodies = bodies  # what arrives, when it is not a first sync's generated changes
        self._start = start
        self._visibility = visibility_timeout
        self._fresh = 0  # arrivals handed out so far
        self._ready: list[_Message] = []  # returned, deferred or delayed messages, by when they show
        self._seq = itertools.count()
        self.in_flight: dict[str, _Message] = {}
        self.dead_letters = 0
        self.deferred = 0
        self.ticks = 0
        self.received = 0
        self.last_done = start

    def arrival(self, index: int) -> float:
        return self._start + index / self._s.arrival_rate

    def _fresh_body(self, index: int) -> str:
        if self._bodies is not None:
            return self._bodies[index]
        return body(index, self._s.changes, self._s.audiences, self._s.pattern)

    def finished(self) -> bool:
        return self._fresh >= self._s.changes and not self._ready and not self.in_flight

    def next_visible(self) -> float | None:
        times = []
        if self._fresh < self._s.changes:
            times.append(self.arrival(self._fresh))
        if self._ready:
            times.append(self._ready[0].visible_at)
        return min(times) if times else None

    def when_visible(self, count: int) -> float:
        """When `count` messages will be visible, counting arrivals only (a batching window's end)."""
        ready = len(self._ready)
        index = min(self._fresh + max(count - ready, 1) - 1, self._s.changes - 1)
        return self.arrival(index)

    def take(self, limit: int, now: float) -> list[_Message]:
        """Receive up to `limit` visible messages within Lambda's payload limit; moves a message whose
        receives would exceed maxReceiveCount to the DLQ instead, as SQS's redrive policy does."""
        taken: list[_Message] = []
        size = 0
        while len(taken) < limit and size < LAMBDA_PAYLOAD_BYTES - 4096:
            if self._ready and self._ready[0].visible_at <= now:
                message = heapq.heappop(self._ready)
            elif self._fresh < self._s.changes and self.arrival(self._fresh) <= now:
                message = _Message(now, next(self._seq), self._fresh_body(self._fresh), f"m-{self._fresh}")
                self._fresh += 1
            else:
                break
            message.receives += 1
            if message.receives > self._s.max_receive_count:
                self.dead_letters += 1
                continue
            size += len(message.body) + 700  # the record's envelope in the Lambda event
            self.received += 1
            taken.append(message)
            self.in_flight[message.message_id] = message
        return taken

    def acknowledge(self, message: _Message, now: float) -> None:
        self.in_flight.pop(message.message_id, None)
        self.last_done = max(self.last_done, now)

    def return_(self, message: _Message, now: float, delay: float | None = None) -> None:
        self.in_flight.pop(message.message_id, None)
        message.visible_at = now + (self._visibility if delay is None else delay)
        heapq.heappush(self._ready, message)

    def send(self, sent: SentMessage, now: float) -> None:
        if sent.queue_url == DLQ_URL:
            self.dead_letters += 1
            return
        self.deferred += 1
        self.ticks += sent.body == TICK_BODY
        heapq.heappush(self._ready, _Message(now + sent.delay_seconds, next(self._seq), sent.body, sent.message_id))


# ------------------------------------------------------------------------------------------ the run


def simulate(scenario: Scenario) -> Outcome:
    clock = VirtualTime()
    start = clock.now
    visibility = 6 * scenario.timeout
    # A newly created on-demand table, throttling on: what a first sync meets after a deploy.
    dynamodb = InProcessDynamoDB(clock.time)
    dynamodb.create_table(table_definition(TABLE))
    reads: dict[str, float] = {}
    with dynamodb.unlimited():  # the state a resync starts from is made outside the simulated time
        bodies = prepare_resync(scenario, dynamodb, reads) if scenario.resync else None
    dynamodb.usage = Usage()  # what the sync does from here on
    queue = SimulatedQueue(scenario, start, visibility, bodies)
    sqs = InProcessSqs(lambda sent: queue.send(sent, clock.time()))
    launchdarkly = LaunchDarklyModel(
        clock=clock.time,
        block=clock.block,
        uncounted=clock.uncounted,
        rate_limit=RouteRateLimit.per_second(scenario.ld_limit, scenario.ld_window, scenario.remaining_headers),
    )
    cpus = [Cpu(scenario.memory_mb) for _ in range(scenario.concurrency)]
    stats = {"invocations": 0, "timeouts": 0, "billed_ms": 0}

    def dynamodb_latency(operation: str, request: dict[str, Any]) -> None:
        items = len(request.get("TransactItems", [])) + sum(
            len(spec) if isinstance(spec, list) else len(spec.get("Keys", []))
            for spec in request.get("RequestItems", {}).values()
        )
        clock.block(DYNAMODB_CALL + DYNAMODB_ITEM * items)

    settings = SyncSettings(
        token_secret_id="simulated",  # noqa: S106 (a stand-in's name, not a credential)
        launchdarkly=LaunchDarklySettings(writer=WriterMode.SEGMENT_AUDIENCES, client_side_id="simulated"),
        state_table=TABLE,
        queue_url=QUEUE_URL,
        dlq_url=DLQ_URL,
    )

    def instance(cpu: Cpu) -> None:
        with clock.uncounted():
            session = boto3.session.Session(
                aws_access_key_id="simulated",
                aws_secret_access_key="simulated",  # noqa: S106 (nothing checks them: no network)
                region_name="us-east-1",
            )
            service = SyncService(
                settings=settings,
                dynamodb=attach(
                    session.client("dynamodb", config=client_config(threads=SEGMENTS_AT_ONCE + STATE_THREADS)),
                    dynamodb,
                    latency=dynamodb_latency,
                    uncounted=clock.uncounted,
                    sleep=clock.sleep,
                ),
                sqs=attach(
                    session.client("sqs", config=client_config(threads=STATE_THREADS)),
                    sqs,
                    latency=lambda operation, request: clock.block(SQS_CALL),
                    uncounted=clock.uncounted,
                ),
                segment_pool=VirtualExecutor(clock, cpu, SEGMENTS_AT_ONCE, "segment"),
                state_pool=VirtualExecutor(clock, cpu, STATE_THREADS, "state"),
                session=session_for(launchdarkly),
                clock=clock.time,
                sleep=clock.sleep,
            )
        clock.block(COLD_START)
        while (batch := collect()) is not None:
            if batch:
                invoke(service, batch)

    def collect() -> list[_Message] | None:
        while True:
            now = clock.time()
            if queue.finished():
                return None
            visible_at = queue.next_visible()
            if visible_at is None:
                clock.sleep(0.1)  # everything is in flight elsewhere: it may come back
                continue
            if visible_at > now:
                clock.sleep(visible_at - now)
                continue
            if scenario.window > 0:
                full_at = queue.when_visible(scenario.batch_size)
                wake = min(now + scenario.window, full_at)
                if wake > now:
                    clock.sleep(wake - now)
            with clock.uncounted():
                batch = queue.take(scenario.batch_size, clock.time())
            if batch:
                return batch

    def invoke(service: SyncService, batch: list[_Message]) -> None:
        stats["invocations"] += 1
        clock.block(INVOKE_OVERHEAD)
        with clock.uncounted():  # the event source mapping builds the event...
            event = json.dumps({"Records": [_record(m) for m in batch]})
        started = clock.time()
        # ...the runtime parses it in the function's process
        records = [QueuedRecord(r["messageId"], r["body"], r["receiptHandle"]) for r in json.loads(event)["Records"]]
        result = service.handle(records, TOKEN, scenario.timeout)
        now = clock.time()
        with clock.uncounted():
            stats["billed_ms"] += math.ceil((now - started + INVOKE_OVERHEAD) * 1000)
            if now - started > scenario.timeout:
                stats["timeouts"] += 1
                failed = {m.message_id for m in batch}
            else:
                failed = set(result.settlement.failures)
            for message in batch:
                if message.message_id in failed:
                    queue.return_(message, now)
                else:
                    queue.acknowledge(message, now)

    def main() -> None:
        for cpu in cpus:
            clock.spawn(lambda cpu=cpu: instance(cpu), cpu=cpu, name="instance")

    began = time.perf_counter()
    clock.run(main, cpu=Cpu(scenario.memory_mb))
    real = time.perf_counter() - began
    if scenario.resync:
        with dynamodb.unlimited():
            audit_after_resync(dynamodb, launchdarkly, reads)
    table_seconds: dict[int, float] = {}
    for (_, second), units in dynamodb.usage.partition_seconds.items():
        table_seconds[second] = table_seconds.get(second, 0.0) + units
    return Outcome(
        scenario=scenario,
        total_seconds=queue.last_done - start,
        arrival_seconds=queue.arrival(scenario.changes - 1) - start,
        launchdarkly_requests=sum(launchdarkly.statuses.values()),
        launchdarkly_429=launchdarkly.statuses[429],
        optimum_requests=optimum_requests(
            scenario.changes, scenario.audiences, scenario.pattern, settings.launchdarkly.chunk_size
        ),
        dead_lettered=queue.dead_letters,
        exact=exact(launchdarkly.members, scenario.changes, scenario.audiences, scenario.pattern),
        invocations=stats["invocations"],
        deferred=queue.deferred,
        timeouts=stats["timeouts"],
        dynamodb_calls=sum(dynamodb.usage.calls.values()),
        write_units=dynamodb.usage.write_units,
        peak_partition_wcu=dynamodb.usage.peak_partition_wcu(),
        cpu_seconds=sum(cpu.used for cpu in cpus),
        real_seconds=real,
        reads=reads,
        ticks=queue.ticks,
        received=queue.received,
        billed_ms=stats["billed_ms"],
        read_units=dynamodb.usage.read_units,
        peak_table_wcu=max(table_seconds.values(), default=0.0),
        ld_windows=launchdarkly.windows,
    )


# ------------------------------------------------------------------------------------------ resync


def _plain_client(service: str, answering: Any) -> Any:
    """A real boto3 client answered in process, outside virtual time (the tools are not timed here)."""
    session = boto3.session.Session(
        aws_access_key_id="simulated",
        aws_secret_access_key="simulated",  # noqa: S106 (nothing checks them: no network)
        region_name="us-east-1",
    )
    return attach(session.client(service, config=client_config(threads=STATE_THREADS)), answering)


def prepare_resync(scenario: Scenario, dynamodb: InProcessDynamoDB, reads: dict[str, float]) -> list[str]:
    """The state a resync starts from (every member written by the real `ContextStates`), what `status`
    reads of it, and the reasserts `ld-audiences resync` queues (their bodies, in order)."""
    from ld_audiences.audiences import AudienceReader
    from ld_audiences.change import MembershipChange
    from ld_audiences.context_state import ContextStates
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences_cli import resync, status

    client = _plain_client("dynamodb", dynamodb)
    states = ContextStates(client, TABLE)
    for start in range(0, scenario.changes, 1000):
        changes = [MembershipChange.from_message(body(i)) for i in range(start, min(start + 1000, scenario.changes))]
        states.write(changes)
        states.record_write(AUDIENCE_ID, AUDIENCE_KEY, "user", changes)
    reader = AudienceReader(client, TABLE)
    before = reader.usage
    status.collect(reader, None, None, None, audience_id=AUDIENCE_ID)
    after = reader.usage
    reads["status_read_units"], reads["status_calls"] = after.read_units - before.read_units, after.calls - before.calls
    bodies: list[str] = []
    queue = SqsChangeQueue(_plain_client("sqs", InProcessSqs(lambda sent: bodies.append(sent.body))), QUEUE_URL)
    progress = resync.resync(reader, queue, AUDIENCE_ID, AUDIENCE_KEY, "user")
    done = reader.usage
    reads["resync_read_units"], reads["resync_calls"] = done.read_units - after.read_units, done.calls - after.calls
    if progress.queued != scenario.changes or len(bodies) != scenario.changes:
        raise AssertionError(f"resync queued {progress.queued} of {scenario.changes}")
    return bodies


def audit_after_resync(dynamodb: InProcessDynamoDB, launchdarkly: LaunchDarklyModel, reads: dict[str, float]) -> None:
    """`ld-audiences audit --sample 1000` against the segment the resync restored: its reads and GETs."""
    import random

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.launchdarkly import LaunchDarklyClient
    from ld_audiences_cli import audit

    # LaunchDarkly's reads, answered at once: the audit's time is its GETs at the rate limit (reported).
    model = LaunchDarklyModel(
        clock=time.time, block=lambda seconds: None, rate_limit=RouteRateLimit(10**9), members=launchdarkly.members
    )
    client = LaunchDarklyClient("https://app.launchdarkly.com", TOKEN, session=session_for(model))
    key = f"segment-audiences-{AUDIENCE_ID}"  # the simulated segment's key, as `audit --segment-key` gives it
    reader = AudienceReader(_plain_client("dynamodb", dynamodb), TABLE)
    result = audit.audit(
        reader,
        audit.SegmentMembership(client, "default", "production", key),
        AUDIENCE_ID,
        "user",
        sample=1000,
        rng=random.Random(1),
    )
    reads.update(
        audit_read_units=result.read_units,
        audit_calls=reader.usage.calls,
        audit_gets=model.reads,
        audit_checked=result.checked,
        audit_drift=result.drift,
    )


def _record(message: _Message) -> dict[str, Any]:
    return {
        "messageId": message.message_id,
        "receiptHandle": f"{message.message_id}#{message.receives}",
        "body": message.body,
        "attributes": {
            "ApproximateReceiveCount": str(message.receives),
            "SentTimestamp": "1800000000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1800000000000",
        },
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ld-audiences-changes",
        "awsRegion": "us-east-1",
    }


def main(argv: list[str]) -> int:
    scenario = Scenario(**json.loads(argv[0])) if argv else Scenario()
    outcome = simulate(scenario)
    print(json.dumps({**asdict(outcome), "scenario": asdict(scenario)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


# ------------------------------------------------------------------------------------------ the section

DEFAULTS = Scenario()  # template.yaml's defaults (tests/unit/test_bench_smoke.py keeps them in step)
VARIATIONS: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("memory 512 MB", {"memory_mb": 512}),
    ("memory 1,769 MB (one vCPU)", {"memory_mb": 1769}),
    ("batch 4,000, window 2 s", {"batch_size": 4000, "window": 2.0}),
    ("batch 100, window 0 s", {"batch_size": 100, "window": 0.0}),
    ("concurrency 5", {"concurrency": 5}),
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
    section.headline = (
        f"{fmt(changes, 0)} members at the template's defaults ({DEFAULTS.label()}) in "
        f"{default.total_seconds / 60:.1f} min with {fmt(default.launchdarkly_requests, 0)} LaunchDarkly requests "
        f"(optimum {fmt(default.optimum_requests, 0)}), {default.dead_lettered} dead-lettered, final segment "
        f"{'exact' if default.exact else 'NOT exact'}; {default.calls_per_change:.3f} DynamoDB calls a change."
    )
    section.details.append(
        "Path measured: the product's `SyncService.handle` (what functions/sync/app.py runs) with real boto3 "
        "clients and a real `requests.Session`, answered in process (bench/sim_aws.py, bench/sim_launchdarkly.py) "
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
        "`ld-audiences resync` (cli/ld_audiences_cli/resync.py, the real function) reads the audience and "
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
