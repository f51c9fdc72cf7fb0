"""The whole product on loopback, no Docker: moto for AWS, the real handlers, an SQS event source.

`LocalStack` composes
* `LocalAws`: moto's server mode (SQS, Secrets Manager, DynamoDB) with the queue, its dead-letter
  queue, the state table and both secrets as the SAM template defines them;
* `IngestServer` + `ApiGateway`: the real ingest handler behind real HTTP, each request turned into
  the API Gateway REST (v1) proxy event the deployed function receives;
* `SqsEventSource`: pollers feeding the real sync handler the way Lambda's SQS event source mapping does;
* unless `launchdarkly_url` is given, the LaunchDarkly emulator (`emulator.py`) in process;
* the status page at `GET {url}/` (`status_page.py`).

moto's backends and Powertools' parameter caches are process-wide: one LocalStack per process at a
time. The stack sets the environment variables of docs/CONTRACTS.md while it runs and restores the
previous environment when it stops.
"""

from __future__ import annotations

import contextlib
import errno
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ld_audiences.auth import WebhookCredentials
from ld_audiences.aws_clients import READ_TIMEOUT_VARIABLE
from ld_audiences.pending_log import PendingLog
from ld_audiences_local import status_page
from ld_audiences_local.api_gateway import ApiGateway
from ld_audiences_local.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCHING_WINDOW,
    DEFAULT_CLIENT_SIDE_ID,
    DEFAULT_LD_TOKEN,
    DEFAULT_PORT,
    DEFAULT_SYNC_TIMEOUT,
    DEFAULT_WEBHOOK_SECRET,
    INGEST_FUNCTION,
    MAX_RECEIVE_COUNT,
    METRICS_NAMESPACE,
    REGION,
    SYNC_FUNCTION,
    TABLE_NAME,
    VISIBILITY_TIMEOUT_FACTOR,
)
from ld_audiences_local.environment import EnvironmentOverlay, aws_environment
from ld_audiences_local.event_source import BatchOutcome, EventSourceStats, SqsEventSource
from ld_audiences_local.handlers import load_handler
from ld_audiences_local.ingest_server import IngestServer
from ld_audiences_local.local_aws import LocalAws
from ld_audiences_local.moto_patches import prepare_moto

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from ld_audiences_local.emulator import Emulator, RouteRateLimit

# Also importable from here, as before the stack was split into modules.
__all__ = [
    "REGION",
    "SYNC_FUNCTION",
    "LocalStack",
    "PortUnavailable",
    "SqsEventSource",
    "bearer_secret",
    "prepare_moto",
]

_active_lock = threading.Lock()
_active: LocalStack | None = None


class PortUnavailable(OSError):
    """A port the stack was told to serve on cannot be had; `option` is the LocalStack field that names it."""

    def __init__(self, option: str, port: int, cause: OSError) -> None:
        taken = cause.errno == errno.EADDRINUSE
        super().__init__(cause.errno, "in use by another program" if taken else (cause.strerror or str(cause)))
        self.option = option
        self.port = port


@contextlib.contextmanager
def _binding(option: str, port: int) -> Iterator[None]:
    try:
        yield
    except PortUnavailable:
        raise
    except OSError as exc:
        raise PortUnavailable(option, port, exc) from exc


def bearer_secret(webhook_secret: str) -> str:
    """The secret a sender presents: the secret itself, or `current` of the JSON form."""
    accepted = WebhookCredentials.from_secret(webhook_secret).accepted
    if not accepted:
        raise ValueError('the webhook secret is empty (as JSON, it needs a non-empty "current")')
    return accepted[0]


@dataclass(kw_only=True, eq=False, repr=False)  # no repr: it would show the secrets
class LocalStack:
    """moto + the real handlers over HTTP + the SQS event source (+ the LaunchDarkly emulator).

    Use as a context manager, or `start()` / `stop()`. `url` is the ingest base URL once started
    (`POST {url}/events`, `POST {url}/v1/batch`). Ports of 0 are free ones picked at start; fixed ports keep
    the URLs (events/env.json's, printed commands) the same from one start to the next.
    """

    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    aws_port: int = 0  # moto's
    launchdarkly_port: int = 0  # the in-process emulator's
    launchdarkly_url: str | None = None  # the emulator's once started, unless given
    launchdarkly_rate_limit: RouteRateLimit | None = None  # the in-process emulator's (None: unlimited)
    launchdarkly_token: str = DEFAULT_LD_TOKEN
    client_side_id: str = DEFAULT_CLIENT_SIDE_ID
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    writer: str = "segment-audiences"
    project_key: str = ""
    environment_key: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE
    batching_window: float = DEFAULT_BATCHING_WINDOW
    context_key_policy: str = "user_id_only"
    context_kind: str = "user"
    chunk_size: int = 1000
    visibility_timeout: int | None = None  # None: VISIBILITY_TIMEOUT_FACTOR times sync_timeout
    max_receive_count: int = MAX_RECEIVE_COUNT
    sync_timeout: float = DEFAULT_SYNC_TIMEOUT
    sync_concurrency: int = 1
    # Seconds after the leases of a write with an unknown outcome end when its contexts are written again.
    # The template waits 30 and 900 s for LaunchDarkly; the emulator applies a write at once or, with its
    # late-apply fault, after the seconds it is given: 5 and 30 s keep a local run from waiting 15 minutes.
    late_apply_rechecks: tuple[int, ...] = (5, 30)
    log_level: str = "WARNING"
    metrics: bool = False
    access_log: bool = False

    def __post_init__(self) -> None:
        if self.writer == "rest" and not (self.project_key and self.environment_key):
            raise ValueError("the rest writer needs project_key and environment_key")
        if self.visibility_timeout is None:
            self.visibility_timeout = math.ceil(VISIBILITY_TIMEOUT_FACTOR * self.sync_timeout)
        if not 0 <= self.visibility_timeout <= 43200:
            raise ValueError("visibility_timeout must be between 0 and 43200 seconds")
        if self.visibility_timeout < self.sync_timeout:
            # Lambda refuses such an event source mapping: records would be redelivered mid-batch.
            raise ValueError("visibility_timeout must be at least sync_timeout")
        if not 1 <= self.sync_concurrency <= 64:
            raise ValueError("sync_concurrency must be between 1 and 64")
        if not 1 <= self.max_receive_count <= 1000:
            raise ValueError("max_receive_count must be between 1 and 1000")
        bearer_secret(self.webhook_secret)  # fail now on a JSON secret without "current"
        if self.launchdarkly_url and self.launchdarkly_rate_limit is not None:
            raise ValueError("launchdarkly_rate_limit sets the in-process emulator's: not with launchdarkly_url")
        if self.launchdarkly_url and self.launchdarkly_port:
            raise ValueError("launchdarkly_port is the in-process emulator's: not with launchdarkly_url")
        self._external_launchdarkly = self.launchdarkly_url.rstrip("/") if self.launchdarkly_url else None
        self.emulator: Emulator | None = None  # the in-process emulator, when this stack started one
        self.aws = LocalAws(self.aws_port)
        self._pending_log: PendingLog | None = None
        self._http: IngestServer | None = None
        self._http_thread: threading.Thread | None = None
        self._gateway: ApiGateway | None = None
        self._sources: list[SqsEventSource] = []
        self._environment = EnvironmentOverlay()
        self._started = False

    # ------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start everything; returns the ingest base URL. Raises PortUnavailable when a port is taken."""
        global _active
        with _active_lock:
            if self._started:
                raise RuntimeError("this local stack is already running")
            if _active is not None:
                raise RuntimeError("another LocalStack is running in this process (moto state is process-wide)")
            _active = self
        try:
            # Bind first: a taken port fails fast, before anything else is started.
            with _binding("port", self.port):
                self._http = IngestServer((self.host, self.port), access_log=self.access_log)
            with _binding("aws_port", self.aws_port):
                self.aws.start()
            with _binding("launchdarkly_port", self.launchdarkly_port):
                self._start_launchdarkly()
            self._environment.set(aws_environment(self.aws.url))
            self.aws.create_resources(
                visibility_timeout=self.visibility_timeout,
                max_receive_count=self.max_receive_count,
                launchdarkly_token=self.launchdarkly_token,
                webhook_secret=self.webhook_secret,
            )
            self._environment.set(self._function_environment())
            self._load_functions()
            self._http.gateway = self._gateway
            self._http.pages = status_page.routes(self, self._http.server_port)
            self._http_thread = threading.Thread(
                target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, name="ld-audiences-ingest", daemon=True
            )
            self._http_thread.start()
            for source in self._sources:
                source.start()
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop everything this stack started and restore the environment. Safe to call twice."""
        global _active
        if self._http is not None:
            if self._http_thread is not None:
                self._http.shutdown()
                self._http_thread.join(timeout=5)
            self._http.server_close()
            self._http_thread = None
        for source in self._sources:
            source.stop(wait=False)  # their idle long polls end while moto shuts down
        finishing = time.monotonic() + self.sync_timeout
        while any(not source.idle for source in self._sources) and time.monotonic() < finishing:
            time.sleep(0.02)  # a batch being handled still needs moto
        self.aws.stop()
        for source in self._sources:
            source.stop()
        self._sources = []
        if self.emulator is not None:
            with contextlib.suppress(Exception):
                self.emulator.stop()
        self._environment.restore()
        _clear_parameter_caches()
        self._started = False
        with _active_lock:
            if _active is self:
                _active = None

    def _start_launchdarkly(self) -> None:
        if self._external_launchdarkly:
            self.launchdarkly_url = self._external_launchdarkly
            return
        from ld_audiences_local.emulator import DEFAULT_ENVIRONMENTS, Emulator

        # The rest writer's project and environment exist, with the client-side ID as theirs; else the client-side
        # ID is the first default environment's.
        environments = (
            (f"{self.project_key}/{self.environment_key}",) if self.writer == "rest" else DEFAULT_ENVIRONMENTS
        )
        self.emulator = Emulator(
            tokens=(self.launchdarkly_token,),
            client_side_ids=(self.client_side_id,),
            environments=environments,
            rate_limit=self.launchdarkly_rate_limit,
        )
        self.launchdarkly_url = self.emulator.start(host="127.0.0.1", port=self.launchdarkly_port)

    def _function_environment(self) -> dict[str, str | None]:
        return {
            # moto answers DynamoDB transactions one at a time, far slower than DynamoDB (aws_clients.py).
            READ_TIMEOUT_VARIABLE: "60",
            "QUEUE_URL": self.aws.queue_url,
            "WEBHOOK_SECRET_ARN": self.aws.webhook_secret_arn,
            "CONTEXT_KEY_POLICY": self.context_key_policy,
            "DEFAULT_CONTEXT_KIND": self.context_kind,
            "ALLOWED_CONTEXT_KINDS": None,  # the template's default: only the default kind
            "LD_TOKEN_SECRET_ARN": self.aws.token_secret_arn,
            "LD_WRITER": self.writer,
            "LD_CLIENT_SIDE_ID": self.client_side_id,
            "LD_PROJECT_KEY": self.project_key,
            "LD_ENVIRONMENT_KEY": self.environment_key,
            "LD_BASE_URL": self.launchdarkly_url,
            "LD_CHUNK_SIZE": str(self.chunk_size),
            "STATE_TABLE_NAME": TABLE_NAME,
            "DLQ_URL": self.aws.dlq_url,
            "LATE_APPLY_RECHECK_SECONDS": ",".join(map(str, self.late_apply_rechecks)),
            "SYNC_BATCH_SIZE": str(self.batch_size),
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": self.log_level.upper(),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "false" if self.metrics else "true",
        }

    def _load_functions(self) -> None:
        # Powertools keeps one Secrets Manager provider (and its cache) per process: a previous
        # stack's would point at a stopped moto.
        _clear_parameter_caches()
        self._environment.set({"POWERTOOLS_SERVICE_NAME": INGEST_FUNCTION})
        self._gateway = ApiGateway(load_handler("ingest"), domain=f"{self.host}:{self.port}")
        self._environment.set({"POWERTOOLS_SERVICE_NAME": SYNC_FUNCTION})
        # One module per concurrent sync "instance": each has its own globals, as separate Lambda
        # execution environments do; they share the queue, the state table and LaunchDarkly.
        for instance in range(self.sync_concurrency):
            sync = load_handler("sync", instance=instance if self.sync_concurrency > 1 else None)
            source = SqsEventSource(
                self.client("sqs"),
                self.queue_url,
                self.aws.queue_arn,
                sync,
                batch_size=self.batch_size,
                batching_window=self.batching_window,
                function_timeout=self.sync_timeout,
                region=REGION,
            )
            self._sources.append(source)

    # ------------------------------------------------------------------------------------ where things are

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("local stack not started")
        return f"http://{self.host}:{self._http.server_port}"

    @property
    def launchdarkly_environment(self) -> tuple[str, str] | None:
        """The project and environment the segments are in, when known: the in-process emulator's environment
        of the client-side ID for the segment-audiences writer, else the ones given."""
        if self.writer != "rest" and not self._external_launchdarkly:
            from ld_audiences_local.emulator import DEFAULT_ENVIRONMENTS

            project, _, environment = DEFAULT_ENVIRONMENTS[0].partition("/")
            return project, environment
        if self.project_key and self.environment_key:
            return self.project_key, self.environment_key
        return None

    @property
    def bearer_secret(self) -> str:
        return bearer_secret(self.webhook_secret)

    @property
    def moto_url(self) -> str:
        return self.aws.url

    @property
    def queue_url(self) -> str:
        return self.aws.queue_url

    @property
    def dlq_url(self) -> str:
        return self.aws.dlq_url

    @property
    def sqs(self) -> SQSClient | None:
        return self.aws.sqs

    def client(self, service: str) -> Any:
        """A boto3 client for moto (explicit endpoint and credentials; independent of the environment)."""
        return self.aws.client(service)

    # ------------------------------------------------------------------------------------ inspection

    def queue_counts(self, queue_url: str | None = None) -> dict[str, int]:
        return self.aws.queue_counts(queue_url or self.queue_url)

    def drained(self) -> bool:
        """Nothing queued, in flight, being ingested or pending in the state table, and the poller holds no
        batch."""

        def idle() -> bool:
            ingesting = self._gateway is not None and self._gateway.in_flight
            return bool(self._sources) and all(s.idle for s in self._sources) and not ingesting

        return idle() and not any(self.queue_counts().values()) and self.oldest_pending() is None and idle()

    def oldest_pending(self) -> float | None:
        """When the oldest change not yet in LaunchDarkly was recorded (None: every change is written)."""
        if self._pending_log is None:
            self._pending_log = PendingLog(self.aws.client("dynamodb"), TABLE_NAME)
        return self._pending_log.oldest_since()

    def wait_until_drained(self, timeout: float = 60.0) -> None:
        """Block until `drained()` holds twice in a row; TimeoutError (with the counts) otherwise.

        Records that keep failing stay in flight until SQS moves them to the DLQ, after
        `max_receive_count` receives, `visibility_timeout` seconds apart.
        """
        ends = time.monotonic() + timeout
        streak = 0
        while True:
            streak = streak + 1 if self.drained() else 0
            if streak >= 2:
                return
            if time.monotonic() > ends:
                pending = self.oldest_pending()
                waiting = f", changes pending since {time.time() - pending:.0f} s ago" if pending is not None else ""
                raise TimeoutError(f"the queue did not drain within {timeout:.0f} s: {self.queue_counts()}{waiting}")
            time.sleep(0.05)

    def dead_letter_count(self) -> int:
        return sum(self.queue_counts(self.dlq_url).values())

    def dead_letters(self) -> list[dict[str, Any]]:
        """The DLQ's messages (body and attributes), left in place (visible again right away)."""
        assert self.sqs is not None, "local stack not started"
        from ld_audiences_cli.redrive import list_dead_letters

        return [asdict(m) for m in list_dead_letters(self.sqs, self.dlq_url, wait_seconds=0)]

    def stats(self) -> dict[str, int]:
        source = EventSourceStats()
        for each in self._sources:
            for name, value in asdict(each.stats()).items():
                setattr(source, name, getattr(source, name) + value)
        return {
            "ingest_requests": self._gateway.requests if self._gateway else 0,
            **asdict(source),
            "dead_lettered": self.dead_letter_count() if self.sqs else 0,
        }

    def recent_batches(self, limit: int) -> list[BatchOutcome]:
        """The last `limit` batches the sync pollers handled, oldest first."""
        batches = sorted((b for source in self._sources for b in source.recent_batches()), key=lambda b: b.finished_at)
        return batches[-limit:]

    def describe(self) -> Iterator[str]:
        """Human-readable lines about what runs where (no secrets)."""
        yield f"ingest:       POST {self.url}/events, POST {self.url}/v1/batch"
        yield f"moto (AWS):   {self.moto_url}"
        yield f"queue:        {self.queue_url} (visibility {self.visibility_timeout} s)"
        yield f"dead letters: {self.dlq_url} (after {self.max_receive_count} receives)"
        yield f"state table:  {TABLE_NAME}"
        where = "in-process emulator" if self.emulator is not None else "external"
        limit = self.launchdarkly_rate_limit
        if limit is not None:
            where += f", {limit.requests} requests per {limit.window_seconds:g} s per route"
        yield f"LaunchDarkly: {self.launchdarkly_url} ({where}, writer {self.writer})"
        yield (
            f"sync:         batch size {self.batch_size}, batching window {self.batching_window:g} s, "
            f"concurrency {self.sync_concurrency}"
        )


def _clear_parameter_caches() -> None:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()  # type: ignore[no-untyped-call]
