"""`ld-audiences audit`: compare an audience's desired membership with its LaunchDarkly segment (audit.py)."""

from __future__ import annotations

import argparse
from typing import Any

from ld_audiences_cli.console import Report, Ticker
from ld_audiences_cli.exit_status import CANNOT_TELL, FINDINGS, HELP, OK, error
from ld_audiences_cli.options import (
    EPILOG_ENV,
    add_audience_options,
    add_command,
    add_deployment_options,
    add_output_options,
    add_segment_location_options,
    bounded,
    non_negative_int,
)
from ld_audiences_cli.targets import audience, find_deployment, launchdarkly_settings, token


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "audit",
        help="compare an audience's desired membership with its LaunchDarkly segment",
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
            "example: ld-audiences audit --stack-name ld-audiences-prod --audience aud_2f8Yx \\\n"
            "           --project-key default --environment-key production --sample 1000\n"
            f"{HELP}\n{EPILOG_ENV}"
        ),
    )
    add_deployment_options(p)
    add_audience_options(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--sample",
        type=bounded(int, 1),
        default=1000,
        metavar="N",
        help="check every context of an audience with at most N, else a uniform random sample of N (default 1000)",
    )
    how.add_argument("--all", action="store_true", help="check every context, however many")
    p.add_argument("--repair", action="store_true", help="queue a reassert for each difference found")
    p.add_argument("--show", type=non_negative_int, default=10, metavar="N", help="context keys listed per kind")
    p.add_argument("--seed", type=int, help="random seed of the sample, to draw the same one again")
    p.add_argument(
        "--confidence",
        type=bounded(float, 0.5, 0.999),
        default=0.95,
        metavar="C",
        help="confidence level of the drift rate's interval (default 0.95)",
    )
    ld = p.add_argument_group("LaunchDarkly")
    ld.add_argument("--token", metavar="T", help="API access token, read-only is enough (env LD_API_TOKEN)")
    add_segment_location_options(ld)
    ld.add_argument(
        "--segment-key",
        metavar="KEY",
        help="the segment's key: read as given, instead of found (rest: the writer's key, tag and marker; "
        "segment-audiences: the synced segment named after the audience)",
    )
    ld.add_argument(
        "--reserve",
        type=non_negative_int,
        default=10,
        metavar="N",
        help="requests of each rate-limit window left to the sync function (default 10)",
    )
    ld.add_argument(
        "--threads", type=bounded(int, 1, 16), default=4, metavar="N", help="reads at once, 1 to 16 (default 4)"
    )
    add_output_options(p, progress=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import random
    from concurrent.futures import ThreadPoolExecutor

    from ld_audiences.audiences import AudienceReader
    from ld_audiences.launchdarkly import LaunchDarklyClient
    from ld_audiences.sqs_queue import SqsChangeQueue
    from ld_audiences.writers import Target
    from ld_audiences_cli import audit, segment_lookup
    from ld_audiences_cli.resync import queue_reasserts

    report = Report.of(args)
    api_token = token(args, "a read-only token is enough")
    where = find_deployment(args, "table", "queue_url") if args.repair else find_deployment(args, "table")
    writer, project, environment, base_url = launchdarkly_settings(args, where)
    reader = AudienceReader(where.client("dynamodb", threads=4), str(where.table))
    # The audience key names the segment (rest key, synced segment's name) and the repairs.
    kind, key = audience(reader, args, need_key=not args.segment_key or args.repair)
    client = LaunchDarklyClient(base_url, api_token, rate_limit=audit.ReservedRateLimit(args.reserve))
    listed = Ticker(report.progress, "listed", "segments", every=500)
    lookup = segment_lookup.find_segment(
        client,
        writer,
        Target(args.audience, key, kind),
        project,
        environment,
        segment_key=args.segment_key,
        on_page=listed.tick,
    )
    doc: dict[str, Any] = {"segment": segment_lookup.to_document(lookup)}
    report.lines(*segment_lookup.lines(lookup))
    if lookup.key is None:
        # Reading members of the wrong segment (or none) would report every member missing: nothing to repair.
        report.document(doc)
        error(f"cannot tell: {lookup.problem}; {lookup.remedy}" + ("; --repair queued nothing" if args.repair else ""))
        return CANNOT_TELL
    membership = audit.SegmentMembership(client, project, environment, lookup.key)
    checked = Ticker(report.progress, "audited", "contexts")
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
    doc.update(audit.to_document(result), repairs_queued=0)
    report.lines(*audit.lines(result, show=args.show))
    unsent = 0
    if args.repair and result.to_repair:
        with ThreadPoolExecutor(8) as pool:
            queue = SqsChangeQueue(where.client("sqs", threads=8), str(where.queue_url), pool)
            unsent = queue_reasserts(queue, result.to_repair, args.audience, key, kind)
        doc["repairs_queued"] = len(result.to_repair) - unsent
        report.lines(f"repair: queued {doc['repairs_queued']} reasserts on {where.queue_url}")
    report.document(doc)
    if unsent:
        error(f"SQS did not accept {unsent} reassert(s): run the audit with --repair again")
        return CANNOT_TELL
    return FINDINGS if result.drift else OK
