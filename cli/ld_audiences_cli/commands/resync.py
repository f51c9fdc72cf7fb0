"""`ld-audiences resync`: write an audience's desired state to LaunchDarkly again, through the queue (resync.py)."""

from __future__ import annotations

import argparse
from typing import Any

from ld_audiences_cli.console import Report
from ld_audiences_cli.exit_status import CANNOT_TELL, INTERRUPTED, OK, error
from ld_audiences_cli.options import (
    add_audience_options,
    add_command,
    add_deployment_options,
    add_output_options,
    bounded,
)
from ld_audiences_cli.targets import audience, find_deployment


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "resync",
        help="write an audience's desired state to LaunchDarkly again, through the queue",
        description=(
            "Queue one reassert per context the state table knows for the audience (members, and\n"
            "contexts that left: those are removed again): the sync function then writes each context's\n"
            "newest desired state as it is when the message is handled, through the normal path\n"
            "(ordering, leases, LaunchDarkly's rate limit, the DLQ). A resync racing live Engage traffic\n"
            "never lets an older state win. For a segment deleted or edited in LaunchDarkly, a new\n"
            "environment, or changes lost in the DLQ. Progress on stderr every --progress-every contexts,\n"
            "with a cursor to continue from; safe to interrupt and run again (reasserts are idempotent).\n"
            "Needs dynamodb:Query on the table and sqs:SendMessage on the main queue."
        ),
        epilog="example: ld-audiences resync --stack-name ld-audiences-prod --audience aud_2f8Yx --dry-run",
    )
    add_deployment_options(p)
    add_audience_options(p)
    p.add_argument("--dry-run", action="store_true", help="read and count only; queue nothing")
    p.add_argument("--resume", metavar="CURSOR", help="continue from a cursor a progress line printed")
    p.add_argument(
        "--progress-every",
        type=bounded(int, 1),
        default=10_000,
        metavar="N",
        help="a progress line every N contexts (default 10000)",
    )
    add_output_options(p, progress=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences.state_table import SHARDS
    from ld_audiences_cli.resync import Progress, resync

    report = Report.of(args)
    where = find_deployment(args, "table") if args.dry_run else find_deployment(args, "table", "queue_url")
    reader = AudienceReader(where.client("dynamodb"), str(where.table))
    kind, key = audience(reader, args, need_key=True)
    verb = "would queue" if args.dry_run else "queued"
    report.lines(
        f"resync of audience {args.audience} ({key}, context kind {kind}): a reassert for every known context, "
        f"members and contexts that left, {'not sent (dry run)' if args.dry_run else f'on {where.queue_url}'}"
    )
    progress = Progress(cursor=args.resume)
    reported = [0]

    def on_page(progress: Progress) -> None:
        if progress.queued - reported[0] >= args.progress_every and progress.cursor is not None:
            reported[0] = progress.queued
            report.progress(
                f"{verb} {progress.queued} ({progress.members} members), {progress.shards_done} of {SHARDS} shards "
                f"read; to continue from here: --resume {progress.cursor}"
            )

    with ThreadPoolExecutor(8) as pool:
        queue = None if args.dry_run else SqsChangeQueue(where.client("sqs", threads=8), str(where.queue_url), pool)
        try:
            result = resync(reader, queue, args.audience, key, kind, progress=progress, on_page=on_page)
        except KeyboardInterrupt:
            resume = f" with --resume {progress.cursor}" if progress.cursor else ""
            error(f"interrupted after {progress.queued} {verb}; run it again{resume} (reasserts are idempotent)")
            return INTERRUPTED
    report.document(
        {
            "audience_id": args.audience,
            "audience_key": key,
            "context_kind": kind,
            "dry_run": args.dry_run,
            "queue_url": where.queue_url,
            "queued": result.queued,
            "members": result.members,
            "left": result.queued - result.members,
            "unsent": result.unsent,
            "resume": result.cursor if result.unsent else None,
        }
    )
    if result.unsent:
        resume = f" with --resume {result.cursor}" if result.cursor else ""
        error(f"SQS did not accept {result.unsent} message(s) after {result.queued} queued: run it again{resume}")
        return CANNOT_TELL
    report.lines(
        f"{verb} {result.queued} reasserts ({result.members} members, {result.queued - result.members} that left); "
        "the sync writes each context's newest desired state"
    )
    return OK
