"""`ld-audiences local` and `ld-audiences demo`: the whole pipeline on loopback, without Docker.

Registered by ld_audiences_cli.main only when one of them is the command run (they need the `local` extra).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ld_audiences.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from ld_audiences_cli.console import Report
from ld_audiences_cli.exit_status import USAGE, UsageError, error
from ld_audiences_cli.options import EPILOG_ENV, WRITERS, Formatter, bounded
from ld_audiences_local import defaults
from ld_audiences_local.emulator_command import add_rate_limit_options, rate_limit_from

if TYPE_CHECKING:
    from ld_audiences_local.stack import LocalStack

POLICIES = (
    "user_id_only",
    "user_id_then_email",
    "user_id_then_anonymousId",
    "user_id_then_email_then_anonymousId",
    "email_only",
)
_seconds = bounded(float, 0.0)
_port = bounded(int, 0, 65535)
# The bounds Lambda, SQS and the functions' configuration put on the `local` options.
_batch_size = bounded(int, 1, 10000)
_batching_window = bounded(float, 0.0, 300.0)
_chunk_size = bounded(int, 1, MAX_CHUNK_SIZE)
_function_timeout = bounded(float, 1.0, 900.0)
_visibility_timeout = bounded(int, 0, 43200)
_max_receive_count = bounded(int, 1, 1000)
_sync_concurrency = bounded(int, 1, 64)
_print = Report().lines


def _stop_event_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM (main thread only)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _stack_from_args(args: argparse.Namespace, **overrides: Any) -> LocalStack:
    from ld_audiences_local.local_banner import launchdarkly_token
    from ld_audiences_local.stack import LocalStack

    options: dict[str, Any] = {
        "port": args.port,
        "aws_port": getattr(args, "aws_port", 0),
        "launchdarkly_port": getattr(args, "launchdarkly_port", 0),
        "launchdarkly_url": args.launchdarkly_url,
        "launchdarkly_rate_limit": rate_limit_from(args),
        "launchdarkly_token": launchdarkly_token(args.launchdarkly_url, args.launchdarkly_token, os.environ),
        "client_side_id": args.client_side_id or os.environ.get("LD_CLIENT_SIDE_ID") or defaults.DEFAULT_CLIENT_SIDE_ID,
        "webhook_secret": args.webhook_secret
        or os.environ.get("LD_AUDIENCES_WEBHOOK_SECRET")
        or defaults.DEFAULT_WEBHOOK_SECRET,
        "writer": args.writer,
        "project_key": args.project_key,
        "environment_key": args.environment_key,
        "batch_size": args.batch_size,
        "batching_window": args.batching_window,
        "context_key_policy": args.context_key_policy,
        "context_kind": args.context_kind,
        "chunk_size": args.chunk_size,
        "visibility_timeout": args.visibility_timeout,
        "sync_timeout": args.sync_timeout,
        "max_receive_count": args.max_receive_count,
        "sync_concurrency": args.sync_concurrency,
        "log_level": args.log_level,
        "metrics": args.metrics,
        "access_log": args.access_log,
    }
    options.update(overrides)
    return LocalStack(**options)


def run_local(args: argparse.Namespace) -> int:
    from ld_audiences_local.local_banner import ready_to_paste
    from ld_audiences_local.stack import PortUnavailable

    _check_options(args)
    try:
        local = _stack_from_args(args)
    except ValueError as exc:
        error(str(exc))
        return USAGE
    stop = _stop_event_on_signals()
    try:
        local.start()
    except PortUnavailable as exc:
        error(f"cannot start the local stack: port {exc.port} (--{exc.option.replace('_', '-')}) is {exc.strerror}")
        return 1
    try:
        _print(*local.describe(), *ready_to_paste(local, _default_events_dir()))
        _print(f"listening on {local.url}")
        while not stop.wait(0.5):
            pass
        _print("shutting down")
    finally:
        local.stop()
    return 0


def _default_events_dir() -> Path:
    relative = Path("events/segment")
    if relative.is_dir():
        return relative
    from ld_audiences_local.handlers import REPO_ROOT

    return REPO_ROOT / "events" / "segment"


def run_demo(args: argparse.Namespace) -> int:
    from ld_audiences_cli.replay import find_fixtures, iter_replay

    events = Path(args.events) if args.events else _default_events_dir()
    try:
        files = find_fixtures([events])
    except FileNotFoundError as exc:
        error(str(exc))
        return USAGE
    if not files:
        error(f"no *.json fixture under {events}")
        return 2

    from ld_audiences_local.stack import LocalStack

    local = LocalStack(port=args.port)
    try:
        local.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        _print(f"port {args.port} is taken: using a free port")
        local = LocalStack(port=0)
        local.start()
    with local:
        _print("local stack:", *(f"  {line}" for line in local.describe()), "")
        _print(f"replaying {len(files)} file(s) from {events} to {local.url}")
        failures = 0
        for result in iter_replay(files, local.url, local.bearer_secret):
            failures += not result.ok
            _print(f"  {result.line()}")
        _print("", "waiting for the queue to drain…")
        drained = True
        try:
            local.wait_until_drained(args.timeout)
        except TimeoutError as exc:
            drained = False
            _print(f"  {exc}")
        assert local.emulator is not None
        segments = local.emulator.segments()
        _print("", f"LaunchDarkly segments ({len(segments)}, emulator at {local.launchdarkly_url}):")
        for segment in segments:
            members = segment["included"]
            _print(
                f"  {segment['name']}  (id {segment['id']}, context kind {segment['contextKind']}, "
                f"{len(members)} member{'s' if len(members) != 1 else ''})"
            )
            _print(*(f"    - {member}" for member in members))
        stats = local.stats()
        _print(
            "",
            f"sync: {stats['batches']} batch(es), {stats['records']} record(s), {stats['failures']} failed",
            f"dead-letter queue: {stats['dead_lettered']} message(s)",
        )
    return 0 if drained and not failures and not stats["dead_lettered"] else 1


def _add_stack_options(parser: argparse.ArgumentParser, *, with_port: bool = True) -> None:
    s = defaults
    if with_port:
        parser.add_argument(
            "--port",
            type=_port,
            metavar="P",
            default=s.DEFAULT_PORT,
            help=f"port of the ingest endpoint on 127.0.0.1; 0 picks a free one (default {s.DEFAULT_PORT})",
        )
        parser.add_argument("--aws-port", type=_port, metavar="P", default=0, help="moto's port (default 0: free)")
        parser.add_argument(
            "--launchdarkly-port", type=_port, metavar="P", default=0, help="the in-process emulator's port (default 0)"
        )
    ld = parser.add_argument_group("LaunchDarkly")
    ld.add_argument(
        "--launchdarkly-url",
        metavar="URL",
        help="LaunchDarkly base URL the sync function writes to; without it an emulator is started in process "
        "that accepts --launchdarkly-token and --client-side-id",
    )
    ld.add_argument(
        "--launchdarkly-token",
        metavar="T",
        help="API access token stored in the token secret; with --launchdarkly-url, one that LaunchDarkly accepts "
        f"(env LD_API_TOKEN, read only for a --launchdarkly-url off this machine; default {s.DEFAULT_LD_TOKEN})",
    )
    ld.add_argument(
        "--client-side-id",
        metavar="ID",
        help="environment client-side ID for the segment-audiences writer "
        f"(env LD_CLIENT_SIDE_ID; default {s.DEFAULT_CLIENT_SIDE_ID})",
    )
    ld.add_argument(
        "--writer",
        choices=WRITERS,
        default="segment-audiences",
        help="how segments are written (default segment-audiences); rest needs --project-key and --environment-key",
    )
    ld.add_argument("--project-key", default="", metavar="KEY", help="project key (required by --writer rest)")
    ld.add_argument("--environment-key", default="", metavar="KEY", help="environment key (required by --writer rest)")
    ld.add_argument(
        "--chunk-size",
        type=_chunk_size,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help=f"context keys per LaunchDarkly request, 1 to {MAX_CHUNK_SIZE} (default {DEFAULT_CHUNK_SIZE})",
    )
    add_rate_limit_options(ld, "the in-process emulator's (not with --launchdarkly-url): ")
    ingest = parser.add_argument_group("ingest")
    ingest.add_argument(
        "--webhook-secret",
        metavar="S",
        help='shared secret callers present, plain or JSON {"current","previous","signing"} '
        f"(env LD_AUDIENCES_WEBHOOK_SECRET; default {s.DEFAULT_WEBHOOK_SECRET}, printed at start; a secret given "
        "here is never printed)",
    )
    ingest.add_argument(
        "--context-key-policy",
        choices=POLICIES,
        default="user_id_only",
        metavar="POLICY",
        help=f"which identifier becomes the LaunchDarkly context key: {', '.join(POLICIES)} (default user_id_only)",
    )
    ingest.add_argument(
        "--context-kind",
        default="user",
        metavar="KIND",
        help="LaunchDarkly context kind of the segments (default user)",
    )
    sync = parser.add_argument_group("sync (SQS event source)")
    sync.add_argument(
        "--batch-size",
        type=_batch_size,
        default=s.DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"records per invocation, 1 to 10000 (default {s.DEFAULT_BATCH_SIZE})",
    )
    sync.add_argument(
        "--batching-window",
        type=_batching_window,
        metavar="S",
        default=s.DEFAULT_BATCHING_WINDOW,
        help="seconds to gather a batch after its first record, 0 to 300; Lambda needs at least 1 above 10 "
        f"records, the local stack allows less to go faster (default {s.DEFAULT_BATCHING_WINDOW:g})",
    )
    sync.add_argument(
        "--sync-timeout",
        type=_function_timeout,
        metavar="S",
        default=s.DEFAULT_SYNC_TIMEOUT,
        help="the sync function's timeout, 1 to 900 seconds: a batch that takes longer fails as a whole "
        f"(default {s.DEFAULT_SYNC_TIMEOUT:g})",
    )
    sync.add_argument(
        "--visibility-timeout",
        type=_visibility_timeout,
        metavar="S",
        help="seconds before a failed record is retried, at least --sync-timeout (Lambda refuses less) "
        f"(default {s.VISIBILITY_TIMEOUT_FACTOR} x --sync-timeout, as template.yaml sets it: "
        f"{s.DEFAULT_VISIBILITY_TIMEOUT})",
    )
    sync.add_argument(
        "--max-receive-count",
        type=_max_receive_count,
        metavar="N",
        default=s.MAX_RECEIVE_COUNT,
        help=f"receives before a record is dead-lettered, 1 to 1000 (default {s.MAX_RECEIVE_COUNT})",
    )
    sync.add_argument(
        "--sync-concurrency",
        type=_sync_concurrency,
        metavar="N",
        default=1,
        help="concurrent sync invocations, each its own copy of the function, 1 to 64 (default 1)",
    )
    logs = parser.add_argument_group("output")
    logs.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="Powertools log level of both functions, JSON lines on stdout (default INFO)",
    )
    logs.add_argument("--metrics", action="store_true", help="print the functions' CloudWatch EMF metrics to stdout")
    logs.add_argument("--access-log", action="store_true", help="log one line per ingest request on stderr")


def _check_options(args: argparse.Namespace) -> None:
    """What argparse cannot check alone: options that depend on each other."""
    if args.writer == "rest" and not (args.project_key and args.environment_key):
        raise UsageError("--writer rest needs --project-key and --environment-key")
    if args.visibility_timeout is not None and args.visibility_timeout < args.sync_timeout:
        raise UsageError(
            f"--visibility-timeout must be at least --sync-timeout ({args.sync_timeout:g} s): Lambda refuses less"
        )
    if args.launchdarkly_url and args.rate_limit:
        raise UsageError("--rate-limit limits the in-process emulator: not with --launchdarkly-url")
    if args.launchdarkly_url and getattr(args, "launchdarkly_port", 0):
        raise UsageError("--launchdarkly-port is the in-process emulator's: not with --launchdarkly-url")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "local",
        help="run the whole pipeline locally",
        formatter_class=Formatter,
        description=(
            "Run the pipeline on loopback without Docker: moto (SQS, Secrets Manager, DynamoDB) with\n"
            "the queue, DLQ, state table and secrets; the real ingest handler behind\n"
            "POST http://127.0.0.1:PORT/events and /v1/batch (as API Gateway proxy events); a poller\n"
            "feeding the real sync handler like Lambda's SQS event source; and, without\n"
            "--launchdarkly-url, a LaunchDarkly emulator. A status page at http://127.0.0.1:PORT/ shows\n"
            "segments, queue depths and the last batches. Prints `listening on URL` once ready and runs\n"
            "until Ctrl-C or SIGTERM."
        ),
        epilog=(
            "example: ld-audiences local --port 3000\n"
            "         ld-audiences local --aws-port 5000 --launchdarkly-port 8765  # the ports of events/env.json\n"
            "         ld-audiences replay events/segment --endpoint http://127.0.0.1:3000 "
            "--secret local-webhook-secret\n" + EPILOG_ENV
        ),
    )
    _add_stack_options(p)
    p.set_defaults(run=run_local)

    p = commands.add_parser(
        "demo",
        help="start the local stack, replay the bundled fixtures, show the segments",
        formatter_class=Formatter,
        description=(
            "Start the local stack on its defaults (port 3000, or a free port when it is taken), replay\n"
            "the bundled Segment fixtures, wait until the queue is drained, and print every resulting\n"
            "LaunchDarkly segment (name, id, context kind, members) and the dead-letter count.\n"
            "Exit status 1 if a request failed, the queue did not drain or anything was dead-lettered."
        ),
    )
    p.add_argument("--events", metavar="DIR", help="fixture directory (default: events/segment of the repository)")
    p.add_argument(
        "--port",
        type=_port,
        metavar="P",
        default=defaults.DEFAULT_PORT,
        help=f"preferred ingest port (default {defaults.DEFAULT_PORT})",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="how long to wait for the queue to drain (default 60)",
    )
    p.set_defaults(run=run_demo)
