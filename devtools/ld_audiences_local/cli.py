"""`ld-audiences`: the developer and operator CLI (local stack, demo, replay, emulator, credential check,
redrive; status, resync and audit of a deployment).

A thin layer: every command parses its options and calls the module that does the work.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from ld_audiences.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from ld_audiences_local import defaults
from ld_audiences_local.terminal import printable

if TYPE_CHECKING:
    from ld_audiences.audiences import AudienceReader
    from ld_audiences_local.deployment import Deployment
    from ld_audiences_local.emulator import RouteRateLimit
    from ld_audiences_local.stack import LocalStack

EMULATOR_PORT = 8765
EPILOG_ENV = "Options on the command line are visible to other users in `ps`: prefer the environment for secrets."
# `audit`'s exit statuses, for the scripts and schedulers that run it (README, its --help); 2 is a usage error,
# as for every command.
AUDIT_NO_DRIFT, AUDIT_DRIFT, AUDIT_CANNOT_TELL = 0, 1, 3
AUDIT_EXIT_STATUSES = (
    f"exit status: {AUDIT_NO_DRIFT} no drift; {AUDIT_DRIFT} drift found; 2 usage error (an option "
    f"missing or wrong);\n             {AUDIT_CANNOT_TELL} cannot tell: AWS or LaunchDarkly failed, or the segment "
    "was not found, or not for sure"
)
POLICIES = (
    "user_id_only",
    "user_id_then_email",
    "user_id_then_anonymousId",
    "user_id_then_email_then_anonymousId",
    "email_only",
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks. Defaults are spelled out in the help texts, never taken
    from the environment: a token in LD_API_TOKEN must not show up in --help."""


N = TypeVar("N", int, float)


def _bounded(kind: Callable[[str], N], low: N, high: N | None = None) -> Callable[[str], N]:
    """An argparse type: a number of `kind` from `low` to `high` (inclusive)."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be from {low} to {high}" if high is not None else f"must be at least {low}"
            )
        return value

    return parse


_rate = _bounded(float, 0.0, 1.0)  # a probability
_non_negative_int = _bounded(int, 0)
_seconds = _bounded(float, 0.0)
_port = _bounded(int, 0, 65535)
# The bounds Lambda, SQS and the functions' configuration put on the `local` options.
_batch_size = _bounded(int, 1, 10000)
_batching_window = _bounded(float, 0.0, 300.0)
_chunk_size = _bounded(int, 1, MAX_CHUNK_SIZE)
_function_timeout = _bounded(float, 1.0, 900.0)
_visibility_timeout = _bounded(int, 0, 43200)
_max_receive_count = _bounded(int, 1, 1000)
_sync_concurrency = _bounded(int, 1, 64)
_rate_limit_window = _bounded(float, 0.1, 3600.0)


# Every line the commands print passes here: ids, keys, reasons and error text come from events, dead
# letters, LaunchDarkly and AWS, and are escaped of what a terminal would act on (terminal.py).
def _print(*lines: str) -> None:
    for line in lines:
        print(printable(line), flush=True)


def _error(message: str) -> None:
    print(f"ld-audiences: error: {printable(message)}", file=sys.stderr, flush=True)


def _progress(message: str) -> None:
    """On stderr: stdout stays the report a script reads."""
    print(printable(message), file=sys.stderr, flush=True)


def _stop_event_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM (main thread only)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


# ----------------------------------------------------------------------------------------- emulator


def _rate_limit(args: argparse.Namespace) -> RouteRateLimit | None:
    from ld_audiences_local.emulator import RouteRateLimit

    if not args.rate_limit:
        return None
    return RouteRateLimit(args.rate_limit, args.rate_limit_window, publish_remaining=not args.rate_limit_hide_remaining)


def cmd_emulator(args: argparse.Namespace) -> int:
    from ld_audiences_local.emulator import DEFAULT_ENVIRONMENTS, Faults, serve

    faults = Faults(
        rate_429=args.rate_429,
        reset_ms=args.reset_ms,
        rate_5xx=args.rate_5xx,
        rate_slow=args.rate_slow,
        slow_seconds=args.slow_seconds,
        rate_drop=args.rate_drop,
        rate_late=args.rate_late,
        late_seconds=args.late_seconds,
        seed=args.seed,
    )

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        serve(
            args.port,
            host=args.host,
            tokens=args.token or [defaults.DEFAULT_LD_TOKEN],
            client_side_ids=args.client_side_id or [defaults.DEFAULT_CLIENT_SIDE_ID],
            faults=faults,
            reject_cohorts=args.reject_cohort,
            access_log=args.access_log,
            environments=args.environment or DEFAULT_ENVIRONMENTS,
            reader_tokens=args.reader_token or (),
            rate_limit=_rate_limit(args),
        )
    except ValueError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        _error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    return 0


# ----------------------------------------------------------------------------------------- local


def _stack_from_args(args: argparse.Namespace, **overrides: Any) -> LocalStack:
    from ld_audiences_local.local_banner import launchdarkly_token
    from ld_audiences_local.stack import LocalStack

    options: dict[str, Any] = {
        "port": args.port,
        "aws_port": args.aws_port,
        "launchdarkly_port": args.launchdarkly_port,
        "launchdarkly_url": args.launchdarkly_url,
        "launchdarkly_rate_limit": _rate_limit(args),
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


def cmd_local(args: argparse.Namespace) -> int:
    from ld_audiences_local.local_banner import ready_to_paste
    from ld_audiences_local.stack import PortUnavailable

    try:
        local = _stack_from_args(args)
    except ValueError as exc:
        _error(str(exc))
        return 2
    stop = _stop_event_on_signals()
    try:
        local.start()
    except PortUnavailable as exc:
        _error(f"cannot start the local stack: port {exc.port} (--{exc.option.replace('_', '-')}) is {exc.strerror}")
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


# ----------------------------------------------------------------------------------------- replay


def _secret(args: argparse.Namespace) -> str | None:
    return args.secret or os.environ.get("LD_AUDIENCES_WEBHOOK_SECRET") or None


def cmd_replay(args: argparse.Namespace) -> int:
    from ld_audiences_local.replay import iter_replay

    secret = _secret(args)
    if not secret:
        _error("no webhook secret: pass --secret or set LD_AUDIENCES_WEBHOOK_SECRET")
        return 2
    failures = files = 0
    try:
        for result in iter_replay(args.paths, args.endpoint, secret, basic=args.basic, gzip=args.gzip):
            files += 1
            failures += not result.ok
            _print(result.line())
    except FileNotFoundError as exc:
        _error(str(exc))
        return 2
    if files == 0:
        _error("no *.json fixture found")
        return 2
    _print(f"{files} file(s), {files - failures} answered 200, {failures} not")
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------- demo


def _default_events_dir() -> Path:
    relative = Path("events/segment")
    if relative.is_dir():
        return relative
    from ld_audiences_local.handlers import REPO_ROOT

    return REPO_ROOT / "events" / "segment"


def cmd_demo(args: argparse.Namespace) -> int:
    from ld_audiences_local.replay import find_fixtures, iter_replay

    events = Path(args.events) if args.events else _default_events_dir()
    try:
        files = find_fixtures([events])
    except FileNotFoundError as exc:
        _error(str(exc))
        return 2
    if not files:
        _error(f"no *.json fixture under {events}")
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


# ----------------------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    from ld_audiences_local.check import check

    token = args.token or os.environ.get("LD_API_TOKEN", "")
    if not token:
        _error("no access token: pass --token or set LD_API_TOKEN")
        return 2
    client_side_id = args.client_side_id or os.environ.get("LD_CLIENT_SIDE_ID") or None
    project_key = args.project_key or os.environ.get("LD_PROJECT_KEY") or None
    environment_key = args.environment_key or os.environ.get("LD_ENVIRONMENT_KEY") or None
    if bool(project_key) != bool(environment_key):
        _error("give both the project key and the environment key (the rest writer needs both), or neither")
        return 2
    # Which writer the settings are for: the one whose setting was given, when not named.
    writer = args.segment_writer or ("segment-audiences" if client_side_id or not project_key else "rest")
    verdicts = check(
        token=token,
        client_side_id=client_side_id,
        base_url=args.base_url,
        clientsdk_url=args.clientsdk_url,
        project_key=project_key,
        environment_key=environment_key,
        writer=writer,
    )
    _print(*(v.line() for v in verdicts))
    if not client_side_id:
        _print("SKIP  client-side ID: not given (--client-side-id or LD_CLIENT_SIDE_ID)")
    if not project_key:
        _print("SKIP  project and environment: not given (--project-key and --environment-key, for the rest writer)")
    if not project_key:
        _print("SKIP  write access and big segment store: they need the project and environment")
    bad = [v for v in verdicts if not v.ok]
    unsure = sum(v.warn for v in verdicts)
    _print(
        f"verdict: {'all good' if not bad else f'{len(bad)} problem(s)'}" + (f", {unsure} to check" if unsure else "")
    )
    return 1 if bad else 0


# ----------------------------------------------------------------------------------------- redrive


def cmd_redrive(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from ld_audiences_local import deployment
    from ld_audiences_local.redrive import redrive

    # moto builds a queue URL from the address it was reached at, so the local stack's loopback queue URLs
    # name moto's endpoint themselves: no state file to go stale, no flag to copy.
    where = deployment.find(
        queue_url=args.queue_url, dlq_url=args.dlq_url, endpoint_url=args.endpoint_url, region=args.region
    )
    sqs = where.client("sqs")
    try:
        result = redrive(sqs, args.queue_url, args.dlq_url, dry_run=args.dry_run, limit=args.max, reason=args.reason)
    except (BotoCoreError, ClientError) as exc:
        _error(f"SQS call failed: {exc}")
        return 1
    verb = "would move" if args.dry_run else "moved"
    for letter in result.moved:
        detail = f'  detail "{letter.detail}"' if letter.detail else ""
        _print(
            f"{verb}  {letter.message_id}  reason {letter.reason}{detail}  receives {letter.receive_count}  "
            f"{letter.summary}"
        )
    for letter, error in result.failed:
        _print(f"FAILED  {letter.message_id}  reason {letter.reason}  {error}")
    for letter in result.kept:
        _print(f"kept  {letter.message_id}  reason {letter.reason}  (does not match --reason)")
    if args.dry_run:
        _print(f"dry run: {len(result.moved)} message(s) would be moved back to {args.queue_url}; nothing changed")
    else:
        _print(f"{len(result.moved)} message(s) moved back to {args.queue_url}")
    if result.kept:
        _print(f"{len(result.kept)} message(s) with another reason left in the DLQ")
    return 1 if result.failed else 0


# ----------------------------------------------------------------------------------------- status, resync, audit


class _Refused(Exception):
    """What the command needs is missing or wrong: the message says which option gives it."""


def _deployment(args: argparse.Namespace, *needed: str) -> Deployment:
    from ld_audiences_local import deployment

    try:
        found = deployment.find(
            stack_name=args.stack_name,
            table=args.table,
            queue_url=args.queue_url,
            dlq_url=args.dlq_url,
            endpoint_url=args.endpoint_url,
            region=args.region,
            profile=args.profile,
        )
        found.need(*needed)
    except deployment.DeploymentError as exc:
        raise _Refused(str(exc)) from None
    return found


def _audience(reader: AudienceReader, args: argparse.Namespace, *, need_key: bool) -> tuple[str, str]:
    """The audience's context kind and key: as given, else from its summary item in the state table."""
    known = [a for a in reader.audiences() if a.audience_id == args.audience]
    kind = args.context_kind
    if kind is None:
        kinds = sorted({a.context_kind for a in known})
        if len(kinds) != 1:
            found = f"has context kinds {', '.join(kinds)}" if kinds else "has no summary in the state table"
            raise _Refused(f"audience {args.audience} {found}: give --context-kind")
        kind = kinds[0]
    summary = next((a for a in known if a.context_kind == kind), None)
    key = args.audience_key or (summary.audience_key if summary else "")
    if need_key and not key:
        raise _Refused(f"audience {args.audience} ({kind}) has no summary in the state table: give --audience-key")
    return kind, key


Command = Callable[[argparse.Namespace], int]


def _operation(failed: int) -> Callable[[Command], Command]:
    """A status, resync or audit command: what it lacks (2) and AWS or LaunchDarkly failures (`failed`) are one
    error line, not a traceback."""

    def wrap(command: Command) -> Command:
        def run(args: argparse.Namespace) -> int:
            from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

            from ld_audiences_local.audit import AuditError

            try:
                return command(args)
            except _Refused as exc:
                _error(str(exc))
                return 2
            except NoRegionError:
                _error("no AWS region: give --region (or set AWS_REGION, or a region in the --profile)")
                return 2
            except (BotoCoreError, ClientError) as exc:
                _error(f"AWS call failed: {exc}")
                return failed
            except AuditError as exc:
                _error(str(exc))
                return failed

        return run

    return wrap


@_operation(failed=1)
def cmd_status(args: argparse.Namespace) -> int:
    from ld_audiences.audiences import AudienceReader
    from ld_audiences_local import status

    where = _deployment(args, "table")
    reader = AudienceReader(where.client("dynamodb", threads=4), str(where.table))
    sqs = where.client("sqs") if where.queue_url or where.dlq_url else None
    report = status.collect(
        reader, sqs, where.queue_url, where.dlq_url, audience_id=args.audience, dead_letter_limit=args.dlq_max
    )
    if args.audience is not None and not report.audiences:
        raise _Refused(f"audience {args.audience} is not in the state table, nor in the dead-letter queue")
    _print(*(status.to_json(report).splitlines() if args.json else status.lines(report)))
    return 0


@_operation(failed=1)
def cmd_resync(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences.state_table import SHARDS
    from ld_audiences_local.resync import Progress, resync

    where = _deployment(args, "table") if args.dry_run else _deployment(args, "table", "queue_url")
    reader = AudienceReader(where.client("dynamodb"), str(where.table))
    kind, key = _audience(reader, args, need_key=True)
    verb = "would queue" if args.dry_run else "queued"
    _print(
        f"resync of audience {args.audience} ({key}, context kind {kind}): a reassert for every known context, "
        f"members and contexts that left, {'not sent (dry run)' if args.dry_run else f'on {where.queue_url}'}"
    )
    progress = Progress(cursor=args.resume)
    reported = [0]

    def on_page(progress: Progress) -> None:
        if progress.queued - reported[0] >= args.progress_every and progress.cursor is not None:
            reported[0] = progress.queued
            _print(
                f"{verb} {progress.queued} ({progress.members} members), {progress.shards_done} of {SHARDS} shards "
                f"read; to continue from here: --resume {progress.cursor}"
            )

    with ThreadPoolExecutor(8) as pool:
        queue = None if args.dry_run else SqsChangeQueue(where.client("sqs", threads=8), str(where.queue_url), pool)
        try:
            result = resync(reader, queue, args.audience, key, kind, progress=progress, on_page=on_page)
        except KeyboardInterrupt:
            resume = f" with --resume {progress.cursor}" if progress.cursor else ""
            _print(f"interrupted after {progress.queued} {verb}; run it again{resume} (reasserts are idempotent)")
            return 130
    if result.unsent:
        resume = f" with --resume {result.cursor}" if result.cursor else ""
        _error(f"SQS did not accept {result.unsent} message(s) after {result.queued} queued: run it again{resume}")
        return 1
    _print(
        f"{verb} {result.queued} reasserts ({result.members} members, {result.queued - result.members} that left); "
        "the sync writes each context's newest desired state"
    )
    return 0


def _launchdarkly_settings(args: argparse.Namespace, where: Deployment) -> tuple[str, str, str, str]:
    """Writer, project key, environment key and base URL: the options, the environment, the stack's parameters."""
    stack = where.parameters
    writer = args.segment_writer or stack.get("LaunchDarklyWriter") or "segment-audiences"
    project = args.project_key or os.environ.get("LD_PROJECT_KEY") or stack.get("LaunchDarklyProjectKey")
    environment = (
        args.environment_key or os.environ.get("LD_ENVIRONMENT_KEY") or stack.get("LaunchDarklyEnvironmentKey")
    )
    if not (project and environment):
        raise _Refused(
            "give --project-key and --environment-key: where the segment is (for the segment-audiences writer, "
            "the project and environment of the client-side ID)"
        )
    base_url = args.base_url or stack.get("LaunchDarklyBaseUrl") or "https://app.launchdarkly.com"
    return writer, project, environment, base_url


@_operation(failed=1)
def cmd_retire(args: argparse.Namespace) -> int:
    import time
    from datetime import UTC, datetime

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.pending_log import PendingLog
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences.writers import Target
    from ld_audiences_local.resync import resync

    where = _deployment(args, "table") if args.undo else _deployment(args, "table", "queue_url")
    dynamodb = where.client("dynamodb")
    reader = AudienceReader(dynamodb, str(where.table))
    kind, key = _audience(reader, args, need_key=True)
    log = PendingLog(dynamodb, str(where.table))
    if args.undo:
        log.unretire(args.audience, kind)
        _print(
            f"audience {args.audience} ({key}, {kind}) is no longer retired: its changes are written again. "
            f"To write back the members it had when it was retired, run: ld-audiences resync --audience "
            f"{args.audience} --context-kind {kind} (changes Engage sent while it was retired were skipped)"
        )
        return 0
    target = Target(args.audience, key, kind)
    if args.delete_segment:
        return _retire_deleting_the_segment(args, where, log, target)
    retired_at = log.retire(target, time.time())
    # One reassert per known context: under a retired audience, the sync writes each member's removal.
    queue = SqsChangeQueue(where.client("sqs"), str(where.queue_url))
    result = resync(reader, queue, args.audience, key, kind)
    if result.unsent:
        _error(f"SQS did not accept {result.unsent} message(s): run it again (it is idempotent)")
        return 1
    when = datetime.fromtimestamp(retired_at, UTC).isoformat(timespec="seconds")
    _print(
        f"audience {args.audience} ({key}, {kind}) retired as of {when}: {result.members} member(s) "
        f"will be removed from its segment by the sync; its later changes are skipped (reason: retired). "
        f"To bring it back: ld-audiences retire --audience {args.audience} --context-kind {kind} --undo"
    )
    return 0


def _retire_deleting_the_segment(args: argparse.Namespace, where: Deployment, log: Any, target: Any) -> int:
    import time

    from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError
    from ld_audiences_local.retire import NotOurs, delete_own_segment

    writer, project, environment, base_url = _launchdarkly_settings(args, where)
    if writer != "rest":
        raise _Refused("--delete-segment is for the rest writer: synced segments belong to LaunchDarkly's integration")
    token = args.token or os.environ.get("LD_API_TOKEN", "")
    if not token:
        raise _Refused("no access token: pass --token or set LD_API_TOKEN (one that may delete segments)")
    log.retire(target, time.time())  # first: no write can create the segment again behind the deletion
    try:
        done = delete_own_segment(LaunchDarklyClient(base_url, token), project, environment, target)
    except (NotOurs, WriteError) as exc:
        _error(f"audience {target.audience_id} retired, its segment not deleted: {exc}")
        return 1
    _print(
        f"audience {target.audience_id} ({target.audience_key}, {target.context_kind}) retired; {done}. "
        f"To bring it back: ld-audiences retire --audience {target.audience_id} --context-kind "
        f"{target.context_kind} --undo, then ld-audiences resync (it creates the segment again)"
    )
    return 0


@_operation(failed=AUDIT_CANNOT_TELL)
def cmd_audit(args: argparse.Namespace) -> int:
    import random
    from concurrent.futures import ThreadPoolExecutor

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.launchdarkly import LaunchDarklyClient
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences.writers import Target
    from ld_audiences_local import audit, segment_lookup
    from ld_audiences_local.resync import queue_reasserts

    token = args.token or os.environ.get("LD_API_TOKEN", "")
    if not token:
        raise _Refused("no access token: pass --token or set LD_API_TOKEN (a read-only token is enough)")
    where = _deployment(args, "table", "queue_url") if args.repair else _deployment(args, "table")
    writer, project, environment, base_url = _launchdarkly_settings(args, where)
    reader = AudienceReader(where.client("dynamodb", threads=4), str(where.table))
    # The audience key names the segment (rest key, synced segment's name) and the repairs.
    kind, key = _audience(reader, args, need_key=not args.segment_key or args.repair)
    client = LaunchDarklyClient(base_url, token, rate_limit=audit.ReservedRateLimit(args.reserve))
    listed = audit.Ticker(lambda n: _progress(f"listed {n} segments…"), every=500)
    lookup = segment_lookup.find_segment(
        client,
        writer,
        Target(args.audience, key, kind),
        project,
        environment,
        segment_key=args.segment_key,
        on_page=lambda n, total: listed.tick(n),
    )
    _print(*segment_lookup.lines(lookup))
    if lookup.key is None:
        # Reading members of the wrong segment (or none) would report every member missing: nothing to repair.
        _error(f"cannot tell: {lookup.problem}; {lookup.remedy}" + ("; --repair queued nothing" if args.repair else ""))
        return AUDIT_CANNOT_TELL
    membership = audit.SegmentMembership(client, project, environment, lookup.key)
    checked = audit.Ticker(lambda n: _progress(f"checked {n} contexts…"))
    result = audit.audit(
        reader,
        membership,
        args.audience,
        kind,
        sample=None if args.all else args.sample,
        rng=random.Random(args.seed),
        confidence=args.confidence,
        threads=args.threads,
        on_checked=checked.tick,
    )
    _print(*audit.lines(result, show=args.show))
    if args.repair and result.to_repair:
        with ThreadPoolExecutor(8) as pool:
            queue = SqsChangeQueue(where.client("sqs", threads=8), str(where.queue_url), pool)
            unsent = queue_reasserts(queue, result.to_repair, args.audience, key, kind)
        _print(f"repair: queued {len(result.to_repair) - unsent} reasserts on {where.queue_url}")
        if unsent:
            _error(f"SQS did not accept {unsent} reassert(s): run the audit with --repair again")
    return AUDIT_DRIFT if result.drift else AUDIT_NO_DRIFT


# ----------------------------------------------------------------------------------------- parser


def _add_rate_limit_options(group: argparse._ActionsContainer, prefix: str = "") -> None:
    group.add_argument(
        "--rate-limit",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help=f"{prefix}requests per window per token and API route (URL pattern + method), then 429 "
        "rate_limited until the window ends; every answer carries X-Ratelimit-Route-Remaining and "
        "X-Ratelimit-Reset (default 0: no limit)",
    )
    group.add_argument(
        "--rate-limit-window",
        type=_rate_limit_window,
        default=10.0,
        metavar="S",
        help="seconds of a rate-limit window, from its first request (default 10, as LaunchDarkly's)",
    )
    group.add_argument(
        "--rate-limit-hide-remaining",
        action="store_true",
        help="a route that publishes no counts: no rate-limit headers on answers, only X-Ratelimit-Reset on 429s",
    )


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
        choices=("segment-audiences", "rest"),
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
    _add_rate_limit_options(ld, "the in-process emulator's (not with --launchdarkly-url): ")
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ld-audiences")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ld-audiences",
        formatter_class=_Formatter,
        description=(
            "Developer tools for ld-audiences (Segment Engage audiences → LaunchDarkly segments):\n"
            "a local stack without Docker (moto for AWS, the real Lambda handlers, a LaunchDarkly\n"
            "emulator), fixture replay, credential checks and dead-letter redrive."
        ),
        epilog="Run `ld-audiences COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "emulator",
        help="run the LaunchDarkly emulator",
        formatter_class=_Formatter,
        description=(
            "Serve a stateful LaunchDarkly stand-in on loopback: segment-audiences, the segments REST API\n"
            "(create, get, delete, big-segment members and membership reads, for synced segments too),\n"
            "projects and environments (404 for unknown ones), GET /api/v2/versions and HEAD\n"
            "/sdk/goals/{id}, with LaunchDarkly's field names, validation and error bodies (see\n"
            "docs/LAUNCHDARKLY.md). Inspect it with GET /emulator/segments and GET /emulator/stats;\n"
            "change faults with POST /emulator/faults; forget everything with POST /emulator/reset.\n"
            "Fault rates are probabilities per write request. Runs until Ctrl-C or SIGTERM."
        ),
        epilog="example: ld-audiences emulator --port 8765 --rate-429 0.1 --rate-5xx 0.05 --seed 7",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_port,
        metavar="P",
        default=EMULATOR_PORT,
        help=f"port to listen on; 0 picks a free one (default {EMULATOR_PORT})",
    )
    p.add_argument(
        "--token",
        action="append",
        metavar="T",
        help=f"an accepted API access token (repeatable; default {defaults.DEFAULT_LD_TOKEN})",
    )
    p.add_argument(
        "--reader-token",
        action="append",
        metavar="T",
        help="an API access token that may only read, like LaunchDarkly's Reader role (repeatable)",
    )
    p.add_argument(
        "--environment",
        action="append",
        metavar="PROJECT/ENV",
        help="an environment that exists (repeatable; default default/production and default/test, what a "
        "new LaunchDarkly account has); others answer 404",
    )
    p.add_argument(
        "--client-side-id",
        action="append",
        metavar="ID",
        help="the client-side ID of the first, second, … --environment (repeatable; default "
        f"{defaults.DEFAULT_CLIENT_SIDE_ID} for the first)",
    )
    p.add_argument("--rate-429", type=_rate, default=0.0, metavar="R", help="share of writes answered 429 (default 0)")
    p.add_argument(
        "--reset-ms",
        type=_non_negative_int,
        default=200,
        metavar="MS",
        help="rate-limit reset delay of a 429 (default 200)",
    )
    p.add_argument(
        "--rate-5xx", type=_rate, default=0.0, metavar="R", help="share of writes answered 500/502/503 (default 0)"
    )
    p.add_argument(
        "--rate-slow", type=_rate, default=0.0, metavar="R", help="share of writes answered late (default 0)"
    )
    p.add_argument("--slow-seconds", type=_seconds, default=2.0, metavar="S", help="delay of a slow answer (default 2)")
    p.add_argument(
        "--rate-drop",
        type=_rate,
        default=0.0,
        metavar="R",
        help="share of writes whose connection is dropped (default 0)",
    )
    p.add_argument(
        "--rate-late",
        type=_rate,
        default=0.0,
        metavar="R",
        help="share of writes whose connection is dropped and that are applied --late-seconds later (default 0)",
    )
    p.add_argument(
        "--late-seconds", type=_seconds, default=14.0, metavar="S", help="delay of a late write (default 14)"
    )
    p.add_argument("--seed", type=int, help="random seed, for a reproducible fault sequence")
    p.add_argument(
        "--reject-cohort",
        action="append",
        default=[],
        metavar="ID",
        help="cohort id (or segment key) whose writes get a permanent 400 (repeatable)",
    )
    p.add_argument("--access-log", action="store_true", help="log each request line on stderr")
    _add_rate_limit_options(p.add_argument_group("rate limit"))
    p.set_defaults(func=cmd_emulator)

    p = commands.add_parser(
        "local",
        help="run the whole pipeline locally",
        formatter_class=_Formatter,
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
    p.set_defaults(func=cmd_local)

    p = commands.add_parser(
        "replay",
        help="post Segment payload fixtures to an endpoint",
        formatter_class=_Formatter,
        description=(
            "Post raw Segment payloads (files, or every *.json under directories, in name order) as\n"
            "Segment does, and print one line per file: HTTP status, accepted / skipped / rejected\n"
            "and the reasons of rejected events. Exit status 1 if any file was not answered 200.\n\n"
            '--endpoint is a base URL (http://127.0.0.1:3000: {"batch": ...} files go to /v1/batch,\n'
            "others to /events) or a full endpoint ending in /events or /v1/batch, such as the\n"
            "deployed API's URL from the stack outputs."
        ),
        epilog=(
            "example: ld-audiences replay events/segment --endpoint http://127.0.0.1:3000 \\\n"
            "           --secret local-webhook-secret\n" + EPILOG_ENV
        ),
    )
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="fixture files or directories")
    p.add_argument("--endpoint", required=True, metavar="URL", help="base URL or full /events or /v1/batch URL")
    p.add_argument("--secret", metavar="S", help="webhook shared secret (env LD_AUDIENCES_WEBHOOK_SECRET)")
    p.add_argument(
        "--basic", action="store_true", help='authenticate like Segment\'s libraries: Basic base64("<secret>:")'
    )
    p.add_argument("--gzip", action="store_true", help="gzip the bodies (Content-Encoding: gzip)")
    p.set_defaults(func=cmd_replay)

    p = commands.add_parser(
        "demo",
        help="start the local stack, replay the bundled fixtures, show the segments",
        formatter_class=_Formatter,
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
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser(
        "check",
        help="verify LaunchDarkly settings: access token, client-side ID, project and environment",
        formatter_class=_Formatter,
        description=(
            "Verify LaunchDarkly settings: GET {base}/api/v2/versions with the token (200 valid,\n"
            "401/403 rejected); HEAD {clientsdk}/sdk/goals/{client-side ID} (200 valid, 404 unknown), for\n"
            "the segment-audiences writer; GET {base}/api/v2/projects/{project}/environments/{environment}\n"
            "with the token (200: both exist and the token can read them; 403: its role cannot; 404: which\n"
            "one is unknown), for the rest writer. Prints one verdict line per check; exit status 0 only if\n"
            "every check passed (a WARN is what the API does not show: check it by hand). The token is\n"
            "never printed. Then, for the writer: whether the instance offers its segments (no synced\n"
            "segments on the EU and federal instances); with the project and environment, whether the\n"
            "token may write segments there (GET /api/v2/caller-identity, /api/v2/tokens/{id}, its custom\n"
            "roles' policies: our reading of them) and whether a big segment store integration serves the\n"
            "environment to server-side SDKs (GET /api/v2/integration-capabilities/big-segment-store; a\n"
            "Relay Proxy is not visible there)."
        ),
        epilog="EU instance: --base-url https://app.eu.launchdarkly.com; federal: https://app.launchdarkly.us",
    )
    p.add_argument(
        "--base-url",
        default="https://app.launchdarkly.com",
        metavar="URL",
        help="LaunchDarkly API base (default https://app.launchdarkly.com)",
    )
    p.add_argument("--token", metavar="T", help="API access token (env LD_API_TOKEN)")
    p.add_argument("--client-side-id", metavar="ID", help="environment client-side ID (env LD_CLIENT_SIDE_ID)")
    p.add_argument("--project-key", metavar="KEY", help="project key, for the rest writer (env LD_PROJECT_KEY)")
    p.add_argument(
        "--environment-key", metavar="KEY", help="environment key, for the rest writer (env LD_ENVIRONMENT_KEY)"
    )
    p.add_argument(
        "--writer",
        dest="segment_writer",
        choices=("segment-audiences", "rest"),
        help="the writer to check for (default: segment-audiences with a client-side ID, else rest with a project)",
    )
    p.add_argument(
        "--clientsdk-url",
        default="https://clientsdk.launchdarkly.com",
        metavar="URL",
        help="client SDK base URL (default https://clientsdk.launchdarkly.com)",
    )
    p.set_defaults(func=cmd_check)

    p = commands.add_parser(
        "redrive",
        help="list the dead-letter queue and move messages back",
        formatter_class=_Formatter,
        description=(
            "List the dead-letter queue with each message's failure_reason and failure_detail (set by\n"
            "the sync function when LaunchDarkly refused a write; messages moved by the redrive policy\n"
            f"after too many receives show `{'max_receive_count_exceeded'}`), then, unless --dry-run, move\n"
            "them back to the main queue (sent without the failure attributes, then deleted from the\n"
            "DLQ). Fix the cause first. Replaying is safe: changes older than what LaunchDarkly already\n"
            "has are skipped as stale."
        ),
        epilog=(
            "example: ld-audiences redrive --queue-url $QUEUE_URL --dlq-url $DLQ_URL --dry-run\n"
            "local:   the queue URLs `ld-audiences local` prints are loopback URLs naming its moto server, which\n"
            "         is used (with moto's dummy credentials) without --endpoint-url"
        ),
    )
    p.add_argument("--queue-url", required=True, metavar="Q", help="main queue URL (stack output)")
    p.add_argument("--dlq-url", required=True, metavar="D", help="dead-letter queue URL (stack output)")
    p.add_argument(
        "--endpoint-url", metavar="URL", help="SQS endpoint (default: the one a loopback --dlq-url names, else AWS's)"
    )
    p.add_argument("--region", help="AWS region (default: from the queue URL, then AWS_DEFAULT_REGION)")
    p.add_argument("--dry-run", action="store_true", help="only list what would move")
    p.add_argument("--max", type=_non_negative_int, metavar="N", help="move at most N messages")
    p.add_argument("--reason", metavar="R", help="only messages with this failure_reason")
    p.set_defaults(func=cmd_redrive)
    _add_operation_commands(commands)
    return parser


def _add_deployment_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group(
        "where the deployment is",
        "a stack by name (its outputs StateTableName, QueueUrl, DeadLetterQueueUrl), or each resource; the local "
        "stack's loopback queue URLs name its moto server, used with moto's dummy credentials, and its table "
        f"is {defaults.TABLE_NAME}",
    )
    where.add_argument("--stack-name", metavar="S", help="the deployed CloudFormation stack (DescribeStacks)")
    where.add_argument("--table", metavar="T", help="state table name (overrides the stack's output)")
    where.add_argument("--queue-url", metavar="Q", help="main queue URL (overrides the stack's output)")
    where.add_argument("--dlq-url", metavar="D", help="dead-letter queue URL (overrides the stack's output)")
    where.add_argument(
        "--endpoint-url", metavar="URL", help="AWS endpoint (default: the one a loopback queue URL names, else AWS's)"
    )
    where.add_argument("--region", help="AWS region (default: from the queue URL, then your AWS configuration)")
    where.add_argument(
        "--profile", metavar="P", help="a named profile of your AWS configuration (default: AWS_PROFILE)"
    )


def _add_segment_location_options(ld: Any) -> None:
    """Where an audience's segment is in LaunchDarkly (`_launchdarkly_settings` reads these)."""
    ld.add_argument(
        "--base-url",
        metavar="URL",
        help="LaunchDarkly API base (default: the stack's LaunchDarklyBaseUrl, else https://app.launchdarkly.com)",
    )
    ld.add_argument(
        "--project-key", metavar="KEY", help="the segment's project (env LD_PROJECT_KEY; default: the stack's)"
    )
    ld.add_argument(
        "--environment-key",
        metavar="KEY",
        help="the segment's environment (env LD_ENVIRONMENT_KEY; default: the stack's)",
    )
    ld.add_argument(
        "--writer",
        dest="segment_writer",
        choices=("segment-audiences", "rest"),
        help="how the deployment writes segments, which decides how its segment is found (default: the stack's "
        "LaunchDarklyWriter, else segment-audiences)",
    )


def _add_audience_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audience", required=True, metavar="ID", help="the Engage audience id (computation_id)")
    parser.add_argument(
        "--context-kind", metavar="KIND", help="its context kind (default: the only one the state table has for it)"
    )
    parser.add_argument(
        "--audience-key",
        metavar="KEY",
        help="its Engage audience key (default: from the state table's audience summary)",
    )


def _add_operation_commands(commands: Any) -> None:
    p = commands.add_parser(
        "status",
        help="per audience: desired members, last change written, changes waiting, dead letters",
        formatter_class=_Formatter,
        description=(
            "One line per audience (id, key, context kind): its exact number of desired members (the\n"
            "state table, one Query per shard), the last change written to LaunchDarkly and when, the\n"
            "changes waiting (the main queue's depth: SQS cannot count one audience's changes without\n"
            "receiving them, so it is the whole queue's) and its dead-lettered changes by reason (the DLQ's\n"
            "messages are received and made visible again at once, like `redrive --dry-run`).\n"
            "Reads only: dynamodb:Query on the table, sqs:GetQueueAttributes on both queues,\n"
            "sqs:ReceiveMessage and sqs:ChangeMessageVisibility on the DLQ, cloudformation:DescribeStacks."
        ),
        epilog=(
            "example: ld-audiences status --stack-name ld-audiences\n"
            "local:   ld-audiences status --queue-url <queue URL> --dlq-url <DLQ URL>  (as `ld-audiences local` prints)"
        ),
    )
    _add_deployment_options(p)
    p.add_argument("--audience", metavar="ID", help="only this audience id")
    p.add_argument("--json", action="store_true", help="one JSON document, for machines")
    p.add_argument(
        "--dlq-max",
        type=_non_negative_int,
        default=10_000,
        metavar="N",
        help="read at most N dead letters to count them by audience (default 10000; 0: only the total)",
    )
    p.set_defaults(func=cmd_status)

    p = commands.add_parser(
        "resync",
        help="write an audience's desired state to LaunchDarkly again, through the queue",
        formatter_class=_Formatter,
        description=(
            "Queue one reassert per context the state table knows for the audience (members, and\n"
            "contexts that left: those are removed again): the sync function then writes each context's\n"
            "newest desired state as it is when the message is handled, through the normal path\n"
            "(ordering, leases, LaunchDarkly's rate limit, the DLQ). A resync racing live Engage traffic\n"
            "never lets an older state win. For a segment deleted or edited in LaunchDarkly, a new\n"
            "environment, or changes lost in the DLQ. Prints progress every --progress-every contexts\n"
            "with a cursor to continue from; safe to interrupt and run again (reasserts are idempotent).\n"
            "Needs dynamodb:Query on the table and sqs:SendMessage on the main queue."
        ),
        epilog="example: ld-audiences resync --stack-name ld-audiences --audience aud_2f8Yx --dry-run",
    )
    _add_deployment_options(p)
    _add_audience_options(p)
    p.add_argument("--dry-run", action="store_true", help="read and count only; queue nothing")
    p.add_argument("--resume", metavar="CURSOR", help="continue from a cursor a progress line printed")
    p.add_argument(
        "--progress-every",
        type=_bounded(int, 1),
        default=10_000,
        metavar="N",
        help="print a progress line every N contexts (default 10000)",
    )
    p.set_defaults(func=cmd_resync)

    p = commands.add_parser(
        "retire",
        help="empty the segment of an audience deleted or disconnected in Engage, and skip its changes",
        formatter_class=_Formatter,
        description=(
            "Mark the audience retired in the state table, then queue one reassert per context it knows:\n"
            "the sync removes every member from the audience's segment, through the normal path (ordering,\n"
            "leases, LaunchDarkly's rate limit, the DLQ), and skips every later change of the audience\n"
            "(reason: retired). The table keeps the members Engage sent: `--undo` ends the retirement, and\n"
            "`resync` then writes them back. `status` shows retired audiences. The segment itself stays\n"
            "in LaunchDarkly, empty. Needs dynamodb:Query and dynamodb:UpdateItem on the table and\n"
            "sqs:SendMessage on the main queue."
        ),
        epilog="example: ld-audiences retire --stack-name ld-audiences-prod --audience aud_2f8Yx",
    )
    _add_deployment_options(p)
    _add_audience_options(p)
    p.add_argument("--undo", action="store_true", help="end the retirement: the audience's changes are written again")
    p.add_argument(
        "--delete-segment",
        action="store_true",
        help="rest writer only: delete the big segment ld-audiences made for the audience instead of emptying it "
        "(only if it is that writer's own: key, tag, marker, context kind)",
    )
    ld = p.add_argument_group("LaunchDarkly (with --delete-segment)")
    ld.add_argument("--token", metavar="T", help="API access token that may delete segments (env LD_API_TOKEN)")
    _add_segment_location_options(ld)
    p.set_defaults(func=cmd_retire)

    p = commands.add_parser(
        "audit",
        help="compare an audience's desired membership with its LaunchDarkly segment",
        formatter_class=_Formatter,
        description=(
            "Read each known context's membership in the audience's LaunchDarkly segment (GET\n"
            ".../segments/{project}/{environment}/{segment}/contexts/{key}, one request per context) and\n"
            "compare it with the desired state: every context of an audience with at most --sample of\n"
            "them, a uniform random sample of --sample otherwise, with the Wilson score interval of the\n"
            "drift rate. Prints missing and extra members (a few of each); differences whose newest\n"
            "change is not written yet are reported apart. --repair queues a reassert for each\n"
            "difference, like resync. The reads share LaunchDarkly's rate limit with the sync: they are\n"
            "paced by its headers and leave --reserve requests of each window to it. A read-only token\n"
            "is enough (role Reader, or viewProject on the project). The segment is found first: rest,\n"
            "the writer's key with its tag and marker (GET .../segments/{p}/{e}/{key}); segment-audiences,\n"
            "the one synced segment from Segment named after the audience among the environment's big\n"
            "segments (GET .../segments/{p}/{e}?filter=unbounded equals true, paged); or --segment-key. One\n"
            "not found, or not for sure, is said so (exit 3) and --repair queues nothing. Progress on stderr."
        ),
        epilog=(
            "example: ld-audiences audit --stack-name ld-audiences --audience aud_2f8Yx \\\n"
            "           --project-key default --environment-key production --sample 1000\n"
            f"{AUDIT_EXIT_STATUSES}\n{EPILOG_ENV}"
        ),
    )
    _add_deployment_options(p)
    _add_audience_options(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--sample",
        type=_bounded(int, 1),
        default=1000,
        metavar="N",
        help="check every context of an audience with at most N, else a uniform random sample of N (default 1000)",
    )
    how.add_argument("--all", action="store_true", help="check every context, however many")
    p.add_argument("--repair", action="store_true", help="queue a reassert for each difference found")
    p.add_argument("--show", type=_non_negative_int, default=10, metavar="N", help="context keys listed per kind")
    p.add_argument("--seed", type=int, help="random seed of the sample, to draw the same one again")
    p.add_argument(
        "--confidence",
        type=_bounded(float, 0.5, 0.999),
        default=0.95,
        metavar="C",
        help="confidence level of the drift rate's interval (default 0.95)",
    )
    ld = p.add_argument_group("LaunchDarkly")
    ld.add_argument("--token", metavar="T", help="API access token, read-only is enough (env LD_API_TOKEN)")
    _add_segment_location_options(ld)
    ld.add_argument(
        "--segment-key",
        metavar="KEY",
        help="the segment's key: read as given, instead of found (rest: the writer's key, tag and marker; "
        "segment-audiences: the synced segment named after the audience)",
    )
    ld.add_argument(
        "--reserve",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="requests of each rate-limit window left to the sync function (default 10)",
    )
    ld.add_argument(
        "--threads", type=_bounded(int, 1, 16), default=4, metavar="N", help="reads at once, 1 to 16 (default 4)"
    )
    p.set_defaults(func=cmd_audit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "writer", None) == "rest" and not (args.project_key and args.environment_key):
        parser.error("--writer rest needs --project-key and --environment-key")
    visibility, sync_timeout = getattr(args, "visibility_timeout", None), getattr(args, "sync_timeout", 0)
    if visibility is not None and visibility < sync_timeout:
        parser.error(f"--visibility-timeout must be at least --sync-timeout ({sync_timeout:g} s): Lambda refuses less")
    if getattr(args, "launchdarkly_url", None) and getattr(args, "rate_limit", 0):
        parser.error("--rate-limit limits the in-process emulator: not with --launchdarkly-url")
    if getattr(args, "launchdarkly_url", None) and getattr(args, "launchdarkly_port", 0):
        parser.error("--launchdarkly-port is the in-process emulator's: not with --launchdarkly-url")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
