"""First sync of a large audience, simulated: the product's real sync path on a virtual clock.

Every change goes through the sync function's own code — `SyncService.handle` (the same object
functions/sync/app.py builds), the `Synchronizer`, the pending log, the context states and the shared
rate-limit window on real boto3 clients, the `LaunchDarklyClient` on a real `requests.Session` — while the
network is replaced by
in-process stand-ins (bench/sim_aws/, bench/sim_launchdarkly.py) and time by `bench/virtual_time.py`:

* arrivals: Engage sends one change per member at `arrival_rate` a second, over `audiences` audiences in
  the order `pattern` says (bench/sim_workload.py);
* SQS and the Lambda event source mapping (bench/sim_event_source.py, on the rules of the model the local
  stack follows too, devtools/ld_audiences_local/models/sqs_event_source.py): up to `concurrency`
  instances (five at first, five more a second), each gathering a batch of up to `batch_size` records or
  what the batching window brings, within Lambda's 6 MB payload; a record reported failed comes back after
  the visibility timeout and goes to the DLQ after `max_receive_count` receives; a message queued with a
  delay (a tick, a recheck) comes back after it;
* Lambda: an instance's CPU is this machine's CPU time of our code scaled to its memory (1,769 MB = one
  vCPU), plus 10 ms per invocation and a 1 s cold start;
* DynamoDB: 4 ms a call plus 0.05 ms an item of a transaction or batch read;
* LaunchDarkly: 150 ms + 1 ms per 10 keys a request; `ld_limit` requests a second granted as
  `ld_limit` x `ld_window` per window, each window opened by its first request (the emulator's model,
  devtools/ld_audiences_local/models/rate_window.py), then 429.

Enforced: DynamoDB's throughput limits (bench/sim_aws/), LaunchDarkly's windows, Lambda's CPU (an
instance's share of a vCPU), the event source's batching, payload and redrive rules. Only counted: SQS
and API Gateway requests, CloudWatch bytes, anything billed (`bench/cost.py` prices them).

`python -m bench.first_sync '{"changes": 20000, "arrival_rate": 5000}'` runs one scenario and prints
its result as JSON; bench/first_sync_section.py is the `make bench` section.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from typing import Any

import boto3

from bench.sim_aws import InProcessDynamoDB, InProcessSqs, Usage, attach
from bench.sim_event_source import Arrivals, Message, SimulatedEventSource, SimulatedQueue, lambda_event
from bench.sim_launchdarkly import LaunchDarklyModel, session_for
from bench.sim_resync import audit_after_resync, prepare_resync
from bench.sim_scenario import DLQ_URL, QUEUE_ARN, QUEUE_URL, TABLE, TOKEN, Outcome, Scenario
from bench.sim_workload import body, exact, optimum_requests
from bench.virtual_time import Cpu, VirtualExecutor, VirtualTime
from ld_audiences.aws_clients import client_config
from ld_audiences.config import SEGMENTS_AT_ONCE, STATE_THREADS, LaunchDarklySettings, SyncSettings, WriterMode
from ld_audiences.outcomes import QueuedRecord
from ld_audiences.state_table import table_definition
from ld_audiences.sync import TICK_BODY
from ld_audiences.sync_service import SyncService
from ld_audiences_local.models.rate_window import RouteRateLimit
from ld_audiences_local.models.sqs_event_source import EventSourceMapping

INVOKE_OVERHEAD = 0.010
COLD_START = 1.0
DYNAMODB_CALL = 0.004
DYNAMODB_ITEM = 0.00005
SQS_CALL = 0.004
VISIBILITY_TIMEOUT_FACTOR = 6  # template.yaml's SyncTimeouts: the queue's visibility timeout is 6 x the function's


def simulate(scenario: Scenario) -> Outcome:
    clock = VirtualTime()
    start = clock.now
    mapping = EventSourceMapping(
        batch_size=scenario.batch_size,
        batching_window=scenario.window,
        function_timeout=scenario.timeout,
        visibility_timeout=VISIBILITY_TIMEOUT_FACTOR * scenario.timeout,
        max_receive_count=scenario.max_receive_count,
        maximum_concurrency=scenario.concurrency,
    )
    # A newly created on-demand table, throttling on: what a first sync meets after a deploy.
    dynamodb = InProcessDynamoDB(clock.time)
    dynamodb.create_table(table_definition(TABLE))
    reads: dict[str, float] = {}
    with dynamodb.unlimited():  # the state a resync starts from is made outside the simulated time
        bodies = prepare_resync(scenario, dynamodb, reads) if scenario.resync else None
    dynamodb.usage = Usage()  # what the sync does from here on
    arrivals = Arrivals(
        scenario.changes,
        scenario.arrival_rate,
        start,
        bodies.__getitem__
        if bodies is not None
        else lambda index: body(index, scenario.changes, scenario.audiences, scenario.pattern),
    )
    queue = SimulatedQueue(arrivals, mapping, DLQ_URL, TICK_BODY)
    event_source = SimulatedEventSource(clock, queue, mapping)
    sqs = InProcessSqs(lambda sent: queue.send(sent, clock.time()))
    launchdarkly = LaunchDarklyModel(
        clock=clock.time,
        block=clock.block,
        uncounted=clock.uncounted,
        rate_limit=RouteRateLimit.per_second(scenario.ld_limit, scenario.ld_window, scenario.remaining_headers),
    )
    cpus = [Cpu(scenario.memory_mb) for _ in range(scenario.concurrency)]
    stats = {"invocations": 0, "billed_ms": 0}

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
        batch_size=scenario.batch_size,
    )

    def instance(index: int, cpu: Cpu) -> None:
        clock.sleep(mapping.starts_after(index))  # Lambda adds concurrent batches gradually
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
        event_source.serve(lambda batch: invoke(service, batch))

    def invoke(service: SyncService, batch: list[Message]) -> tuple[dict[str, Any], float]:
        stats["invocations"] += 1
        clock.block(INVOKE_OVERHEAD)
        with clock.uncounted():  # the event source mapping builds the event...
            event = lambda_event(batch, QUEUE_ARN)
        started = clock.time()
        # ...the runtime parses it in the function's process
        records = [QueuedRecord(r["messageId"], r["body"], r["receiptHandle"]) for r in json.loads(event)["Records"]]
        result = service.handle(records, TOKEN, scenario.timeout)
        seconds = clock.time() - started
        with clock.uncounted():
            stats["billed_ms"] += math.ceil((seconds + INVOKE_OVERHEAD) * 1000)
        # what functions/sync/app.py answers
        return {"batchItemFailures": [{"itemIdentifier": i} for i in result.settlement.failures]}, seconds

    def main() -> None:
        for index, cpu in enumerate(cpus):
            clock.spawn(lambda index=index, cpu=cpu: instance(index, cpu), cpu=cpu, name="instance")

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
        arrival_seconds=arrivals.at(scenario.changes - 1) - start,
        launchdarkly_requests=sum(launchdarkly.statuses.values()),
        launchdarkly_429=launchdarkly.statuses[429],
        optimum_requests=optimum_requests(
            scenario.changes, scenario.audiences, scenario.pattern, settings.launchdarkly.chunk_size
        ),
        dead_lettered=queue.dead_letters,
        exact=exact(launchdarkly.members, scenario.changes, scenario.audiences, scenario.pattern),
        invocations=stats["invocations"],
        deferred=queue.deferred,
        timeouts=event_source.timeouts,
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


def main(argv: list[str]) -> int:
    scenario = Scenario(**json.loads(argv[0])) if argv else Scenario()
    outcome = simulate(scenario)
    print(json.dumps({**asdict(outcome), "scenario": asdict(scenario)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
