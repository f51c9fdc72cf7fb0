"""`ld-audiences retire`: empty the segment of an audience deleted or disconnected in Engage (retire.py)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ld_audiences_cli.console import Report
from ld_audiences_cli.exit_status import CANNOT_TELL, FINDINGS, OK, UsageError, error
from ld_audiences_cli.options import (
    add_audience_options,
    add_command,
    add_deployment_options,
    add_output_options,
    add_segment_location_options,
)
from ld_audiences_cli.targets import audience, find_deployment, launchdarkly_settings, token

if TYPE_CHECKING:
    from ld_audiences.pending_log import PendingLog
    from ld_audiences.writers import Target
    from ld_audiences_cli.deployment import Deployment


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "retire",
        help="empty the segment of an audience deleted or disconnected in Engage, and skip its changes",
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
    add_deployment_options(p)
    add_audience_options(p)
    p.add_argument("--undo", action="store_true", help="end the retirement: the audience's changes are written again")
    p.add_argument(
        "--delete-segment",
        action="store_true",
        help="rest writer only: delete the big segment ld-audiences made for the audience instead of emptying it "
        "(only if it is that writer's own: key, tag, marker, context kind)",
    )
    ld = p.add_argument_group("LaunchDarkly (with --delete-segment)")
    ld.add_argument("--token", metavar="T", help="API access token that may delete segments (env LD_API_TOKEN)")
    add_segment_location_options(ld)
    add_output_options(p)
    p.set_defaults(run=run)


def _when(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch is not None else None


def _document(target: Target, retired_at: float | None, removals_queued: int = 0, segment: str | None = None) -> Any:
    """`retire --output json` (docs/CLI.md)."""
    return {
        "audience_id": target.audience_id,
        "audience_key": target.audience_key,
        "context_kind": target.context_kind,
        "retired": retired_at is not None,
        "retired_at": _when(retired_at),
        "removals_queued": removals_queued,
        "segment": segment,
    }


def run(args: argparse.Namespace) -> int:
    import time

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.pending_log import PendingLog
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences.writers import Target
    from ld_audiences_cli.resync import resync

    report = Report.of(args)
    where = find_deployment(args, "table") if args.undo else find_deployment(args, "table", "queue_url")
    dynamodb = where.client("dynamodb")
    reader = AudienceReader(dynamodb, str(where.table))
    kind, key = audience(reader, args, need_key=True)
    log = PendingLog(dynamodb, str(where.table))
    target = Target(args.audience, key, kind)
    if args.undo:
        log.unretire(args.audience, kind)
        report.document(_document(target, None))
        report.lines(
            f"audience {args.audience} ({key}, {kind}) is no longer retired: its changes are written again. "
            f"To write back the members it had when it was retired, run: ld-audiences resync --audience "
            f"{args.audience} --context-kind {kind} (changes Engage sent while it was retired were skipped)"
        )
        return OK
    if args.delete_segment:
        return _retire_deleting_the_segment(args, report, where, log, target)
    retired_at = log.retire(target, time.time())
    # One reassert per known context: under a retired audience, the sync writes each member's removal.
    queue = SqsChangeQueue(where.client("sqs"), str(where.queue_url))
    result = resync(reader, queue, args.audience, key, kind)
    report.document(_document(target, retired_at, removals_queued=result.queued))
    if result.unsent:
        error(f"SQS did not accept {result.unsent} message(s): run it again (it is idempotent)")
        return CANNOT_TELL
    report.lines(
        f"audience {args.audience} ({key}, {kind}) retired as of {_when(retired_at)}: {result.members} member(s) "
        f"will be removed from its segment by the sync; its later changes are skipped (reason: retired). "
        f"To bring it back: ld-audiences retire --audience {args.audience} --context-kind {kind} --undo"
    )
    return OK


def _retire_deleting_the_segment(
    args: argparse.Namespace, report: Report, where: Deployment, log: PendingLog, target: Target
) -> int:
    import time

    from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError
    from ld_audiences_cli.retire import NotOurs, delete_own_segment

    writer, project, environment, base_url = launchdarkly_settings(args, where)
    if writer != "rest":
        raise UsageError(
            "--delete-segment is for the rest writer: synced segments belong to LaunchDarkly's integration"
        )
    api_token = token(args, "one that may delete segments")
    retired_at = log.retire(target, time.time())  # first: no write can create the segment again behind the deletion
    try:
        done = delete_own_segment(LaunchDarklyClient(base_url, api_token), project, environment, target)
    except NotOurs as exc:
        error(f"audience {target.audience_id} retired, its segment not deleted: {exc}")
        return FINDINGS
    except WriteError as exc:
        error(f"audience {target.audience_id} retired, its segment not deleted: {exc}; run it again")
        return CANNOT_TELL
    report.document(_document(target, retired_at, segment=done))
    report.lines(
        f"audience {target.audience_id} ({target.audience_key}, {target.context_kind}) retired; {done}. "
        f"To bring it back: ld-audiences retire --audience {target.audience_id} --context-kind "
        f"{target.context_kind} --undo, then ld-audiences resync (it creates the segment again)"
    )
    return OK
