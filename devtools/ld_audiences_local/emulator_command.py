"""`ld-audiences emulator`: the LaunchDarkly emulator on its own, and the rate-limit options `local` shares.

Registered by ld_audiences_cli.main only when it is the command run (it needs the `local` extra).
"""

from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

from ld_audiences_cli.exit_status import USAGE, error
from ld_audiences_cli.options import Formatter, bounded, non_negative_int
from ld_audiences_local import defaults

if TYPE_CHECKING:
    from ld_audiences_local.emulator import RouteRateLimit

EMULATOR_PORT = 8765
_rate = bounded(float, 0.0, 1.0)  # a probability
_seconds = bounded(float, 0.0)
_port = bounded(int, 0, 65535)
_rate_limit_window = bounded(float, 0.1, 3600.0)


def rate_limit_from(args: argparse.Namespace) -> RouteRateLimit | None:
    from ld_audiences_local.emulator import RouteRateLimit

    if not args.rate_limit:
        return None
    return RouteRateLimit(args.rate_limit, args.rate_limit_window, publish_remaining=not args.rate_limit_hide_remaining)


def run(args: argparse.Namespace) -> int:
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
            rate_limit=rate_limit_from(args),
        )
    except ValueError as exc:
        error(str(exc))
        return USAGE
    except OSError as exc:
        error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    return 0


def add_rate_limit_options(group: argparse._ActionsContainer, prefix: str = "") -> None:
    group.add_argument(
        "--rate-limit",
        type=non_negative_int,
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


def register(commands: Any) -> None:
    p = commands.add_parser(
        "emulator",
        help="run the LaunchDarkly emulator",
        formatter_class=Formatter,
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
        type=non_negative_int,
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
    add_rate_limit_options(p.add_argument_group("rate limit"))
    p.set_defaults(run=run)
