"""`ld-audiences replay`: post Segment payload fixtures to an ingest endpoint (replay.py)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ld_audiences_cli.console import Report, Ticker
from ld_audiences_cli.exit_status import CANNOT_TELL, FINDINGS, HELP, OK, UsageError, error
from ld_audiences_cli.options import EPILOG_ENV, add_command, add_output_options


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "replay",
        help="post Segment payload fixtures to an endpoint",
        description=(
            "Post raw Segment payloads (files, or every *.json under directories, in name order) as\n"
            "Segment does, and print one line per file: HTTP status, accepted / skipped / rejected\n"
            "and the reasons of rejected events. Exit status 1 if any file was not answered 200; 3, at\n"
            "once, when the endpoint cannot be reached or does not answer in time.\n\n"
            '--endpoint is a base URL (http://127.0.0.1:3000: {"batch": ...} files go to /v1/batch,\n'
            "others to /events) or a full endpoint ending in /events or /v1/batch, such as the\n"
            "deployed API's URL from the stack outputs."
        ),
        epilog=(
            "example: ld-audiences replay events/segment --endpoint http://127.0.0.1:3000 \\\n"
            "           --secret local-webhook-secret\n"
            f"{HELP}\n{EPILOG_ENV}"
        ),
    )
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="fixture files or directories")
    p.add_argument("--endpoint", required=True, metavar="URL", help="base URL or full /events or /v1/batch URL")
    p.add_argument("--secret", metavar="S", help="webhook shared secret (env LD_AUDIENCES_WEBHOOK_SECRET)")
    p.add_argument(
        "--basic", action="store_true", help='authenticate like Segment\'s libraries: Basic base64("<secret>:")'
    )
    p.add_argument("--gzip", action="store_true", help="gzip the bodies (Content-Encoding: gzip)")
    add_output_options(p, progress=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ld_audiences_cli.replay import FileResult, find_fixtures, iter_replay, to_document

    report = Report.of(args)
    secret = args.secret or os.environ.get("LD_AUDIENCES_WEBHOOK_SECRET")
    if not secret:
        raise UsageError("no webhook secret: pass --secret or set LD_AUDIENCES_WEBHOOK_SECRET")
    try:
        files = find_fixtures(args.paths)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if not files:
        raise UsageError("no *.json fixture found: give fixture files, or directories that hold some")
    replayed = Ticker(report.progress, "replayed", "files", every=100)
    results: list[FileResult] = []
    for result in iter_replay(files, args.endpoint, secret, basic=args.basic, gzip=args.gzip):
        if result.unreachable:
            # Every later file would fail the same way: one line, not one per file.
            error(
                f"{result.url} did not answer ({result.message}) after {len(results)} file(s) sent: "
                "check --endpoint, and that the endpoint is up (for the local stack: `ld-audiences local`)"
            )
            return CANNOT_TELL
        results.append(result)
        report.lines(result.line())
        replayed.tick(len(results), len(files))
    failures = sum(not result.ok for result in results)
    report.document(
        {
            "endpoint": args.endpoint,
            "files": [to_document(result) for result in results],
            "answered_200": len(results) - failures,
            "not_200": failures,
        }
    )
    report.lines(f"{len(results)} file(s), {len(results) - failures} answered 200, {failures} not")
    return FINDINGS if failures else OK
