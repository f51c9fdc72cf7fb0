"""`ld-audiences status`: per audience, what the state table says and what is still on its way (status.py)."""

from __future__ import annotations

import argparse
from typing import Any

from ld_audiences_cli.console import JSON, Report
from ld_audiences_cli.exit_status import OK, UsageError
from ld_audiences_cli.options import add_command, add_deployment_options, add_output_options, non_negative_int
from ld_audiences_cli.targets import find_deployment


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "status",
        help="per audience: desired members, last change written, changes waiting, dead letters",
        description=(
            "One line per audience (id, key, context kind): its exact number of desired members (the\n"
            "state table, one Query per shard), the last change written to LaunchDarkly and when, the\n"
            "changes waiting (the main queue's depth: SQS cannot count one audience's changes without\n"
            "receiving them, so it is the whole queue's) and its dead-lettered changes by reason (the DLQ's\n"
            "messages are received and made visible again at once, like `redrive --dry-run`).\n"
            "Reads only: dynamodb:Query on the table, sqs:GetQueueAttributes on both queues,\n"
            "sqs:ReceiveMessage and sqs:ChangeMessageVisibility on the DLQ, cloudformation:DescribeStacks."
        ),
        epilog="example: ld-audiences status --stack-name ld-audiences-prod --output json",
    )
    add_deployment_options(p)
    p.add_argument("--audience", metavar="ID", help="only this audience id")
    p.add_argument(
        "--dlq-max",
        type=non_negative_int,
        default=10_000,
        metavar="N",
        help="read at most N dead letters to count them by audience (default 10000; 0: only the total)",
    )
    add_output_options(p)
    p.add_argument("--json", dest="output", action="store_const", const=JSON, help="the same as --output json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ld_audiences.audiences import AudienceReader
    from ld_audiences_cli import status

    report = Report.of(args)
    where = find_deployment(args, "table")
    reader = AudienceReader(where.client("dynamodb", threads=4), str(where.table))
    sqs = where.client("sqs") if where.queue_url or where.dlq_url else None
    found = status.collect(
        reader, sqs, where.queue_url, where.dlq_url, audience_id=args.audience, dead_letter_limit=args.dlq_max
    )
    if args.audience is not None and not found.audiences:
        raise UsageError(f"audience {args.audience} is not in the state table, nor in the dead-letter queue")
    report.document(status.to_document(found))
    report.lines(*status.lines(found))
    return OK
