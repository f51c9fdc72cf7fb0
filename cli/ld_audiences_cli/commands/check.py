"""`ld-audiences check`: verify LaunchDarkly settings before deploying (check.py, readiness.py)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ld_audiences.config import DEFAULT_LD_BASE_URL
from ld_audiences_cli.check import DEFAULT_CLIENTSDK_URL
from ld_audiences_cli.console import Report
from ld_audiences_cli.exit_status import CANNOT_TELL, FINDINGS, HELP, OK, UsageError
from ld_audiences_cli.options import EPILOG_ENV, WRITERS, add_command, add_output_options


def register(commands: Any) -> None:
    p = add_command(
        commands,
        "check",
        help="verify LaunchDarkly settings: access token, client-side ID, project and environment",
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
        epilog=(
            "EU instance: --base-url https://app.eu.launchdarkly.com; federal: https://app.launchdarkly.us\n"
            f"{HELP}\n{EPILOG_ENV}"
        ),
    )
    p.add_argument(
        "--base-url",
        default=DEFAULT_LD_BASE_URL,
        metavar="URL",
        help=f"LaunchDarkly API base (default {DEFAULT_LD_BASE_URL})",
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
        choices=WRITERS,
        help="the writer to check for (default: segment-audiences with a client-side ID, else rest with a project)",
    )
    p.add_argument(
        "--clientsdk-url",
        default=DEFAULT_CLIENTSDK_URL,
        metavar="URL",
        help=f"client SDK base URL (default {DEFAULT_CLIENTSDK_URL})",
    )
    add_output_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ld_audiences_cli.check import check

    report = Report.of(args)
    token = args.token or os.environ.get("LD_API_TOKEN", "")
    if not token:
        raise UsageError("no access token: pass --token or set LD_API_TOKEN")
    client_side_id = args.client_side_id or os.environ.get("LD_CLIENT_SIDE_ID") or None
    project_key = args.project_key or os.environ.get("LD_PROJECT_KEY") or None
    environment_key = args.environment_key or os.environ.get("LD_ENVIRONMENT_KEY") or None
    if bool(project_key) != bool(environment_key):
        raise UsageError("give both --project-key and --environment-key (the rest writer needs both), or neither")
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
    skipped = []
    if not client_side_id:
        skipped.append(("client-side ID", "not given (--client-side-id or LD_CLIENT_SIDE_ID)"))
    if not project_key:
        skipped.append(("project and environment", "not given (--project-key and --environment-key, for rest)"))
        skipped.append(("write access and big segment store", "they need the project and environment"))
    bad = [v for v in verdicts if v.status == "fail"]
    unknown = [v for v in verdicts if v.status == "unknown"]
    unsure = sum(v.status == "warn" for v in verdicts)
    report.document(
        {
            "writer": writer,
            "verdicts": [{"subject": v.subject, "status": v.status, "message": v.message} for v in verdicts]
            + [{"subject": subject, "status": "skip", "message": why} for subject, why in skipped],
        }
    )
    report.lines(*(v.line() for v in verdicts), *(f"SKIP  {subject}: {why}" for subject, why in skipped))
    problems = len(bad) + len(unknown)
    report.lines(
        f"verdict: {'all good' if not problems else f'{problems} problem(s)'}"
        + (f", {unsure} to check" if unsure else "")
    )
    # A known problem outranks an unanswered question: fix it first.
    return FINDINGS if bad else CANNOT_TELL if unknown else OK
