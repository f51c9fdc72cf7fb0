"""`ld-audiences redrive`: list the dead-letter queue and move its messages back (redrive.py)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ld_audiences_cli.console import Report, Ticker
from ld_audiences_cli.exit_status import CANNOT_TELL, OK, error
from ld_audiences_cli.options import add_command, add_deployment_options, add_output_options, non_negative_int
from ld_audiences_cli.targets import find_deployment

if TYPE_CHECKING:
    from ld_audiences_cli.redrive import DeadLetter


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "redrive",
        help="list the dead-letter queue and move messages back",
        description=(
            "List the dead-letter queue with each message's failure_reason and failure_detail (set by\n"
            "the sync function when LaunchDarkly refused a write; messages moved by the redrive policy\n"
            "after too many receives show `max_receive_count_exceeded`), then, unless --dry-run, move\n"
            "them back to the main queue (sent without the failure attributes, then deleted from the\n"
            "DLQ). Fix the cause first. Replaying is safe: changes older than what LaunchDarkly already\n"
            "has are skipped as stale. Progress on stderr."
        ),
        epilog="example: ld-audiences redrive --stack-name ld-audiences-prod --dry-run",
    )
    add_deployment_options(p, table=False)
    p.add_argument("--dry-run", action="store_true", help="only list what would move")
    p.add_argument("--max", type=non_negative_int, metavar="N", help="move at most N messages")
    p.add_argument("--reason", metavar="R", help="only messages with this failure_reason")
    add_output_options(p, progress=True)
    p.set_defaults(run=run)


def _letter(letter: DeadLetter, **extra: str) -> dict[str, Any]:
    """One message of `redrive --output json` (docs/CLI.md)."""
    return {
        "message_id": letter.message_id,
        "reason": letter.reason,
        "detail": letter.detail,
        "receive_count": letter.receive_count,
        "sent_timestamp": letter.sent_timestamp,
        "summary": letter.summary,
        "body": letter.body,
        **extra,
    }


def run(args: argparse.Namespace) -> int:
    from ld_audiences_cli.redrive import redrive

    report = Report.of(args)
    where = find_deployment(args, "queue_url", "dlq_url")
    read = Ticker(report.progress, "read", "dead letters", every=100)
    moved = Ticker(report.progress, "moved", "messages", every=100)
    result = redrive(
        where.client("sqs"),
        str(where.queue_url),
        str(where.dlq_url),
        dry_run=args.dry_run,
        limit=args.max,
        reason=args.reason,
        on_read=read.tick,
        on_moved=moved.tick,
    )
    report.document(
        {
            "dry_run": args.dry_run,
            "queue_url": where.queue_url,
            "moved": [_letter(letter) for letter in result.moved],
            "failed": [_letter(letter, error=problem) for letter, problem in result.failed],
            "kept": [_letter(letter) for letter in result.kept],
        }
    )
    verb = "would move" if args.dry_run else "moved"
    for letter in result.moved:
        detail = f'  detail "{letter.detail}"' if letter.detail else ""
        report.lines(
            f"{verb}  {letter.message_id}  reason {letter.reason}{detail}  receives {letter.receive_count}  "
            f"{letter.summary}"
        )
    for letter, problem in result.failed:
        report.lines(f"FAILED  {letter.message_id}  reason {letter.reason}  {problem}")
    for letter in result.kept:
        report.lines(f"kept  {letter.message_id}  reason {letter.reason}  (does not match --reason)")
    if args.dry_run:
        report.lines(
            f"dry run: {len(result.moved)} message(s) would be moved back to {where.queue_url}; nothing changed"
        )
    else:
        report.lines(f"{len(result.moved)} message(s) moved back to {where.queue_url}")
    if result.kept:
        report.lines(f"{len(result.kept)} message(s) with another reason left in the DLQ")
    if result.failed:
        error(f"{len(result.failed)} message(s) could not be moved (SQS failed): run it again")
        return CANNOT_TELL
    return OK
