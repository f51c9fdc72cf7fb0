"""What a simulated sync runs (`Scenario`: the template's settings, the workload, LaunchDarkly's limit) and
what it measures (`Outcome`); bench/first_sync.py runs one."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.sim_workload import INTERLEAVED

# The simulated stack's names.
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/ld-audiences-changes"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:ld-audiences-changes"
DLQ_URL = QUEUE_URL + "-dlq"
TABLE = "ld-audiences-state-v2"
TOKEN = "api-simulated-token"  # noqa: S105 (a stand-in's, not a credential)


@dataclass(frozen=True)
class Scenario:
    changes: int = 1_000_000
    arrival_rate: float = 5000.0
    memory_mb: int = 1024
    batch_size: int = 1000
    window: float = 1.0
    concurrency: int = 5
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


DEFAULTS = Scenario()  # template.yaml's defaults (tests/unit/test_bench_smoke.py keeps them in step)
