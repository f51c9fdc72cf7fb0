"""The options several commands share, and argparse types for bounded numbers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from ld_audiences_cli.console import JSON, TABLE

EPILOG_ENV = "Options on the command line are visible to other users in `ps`: prefer the environment for secrets."
WRITERS = ("segment-audiences", "rest")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks. Defaults are spelled out in the help texts, never taken
    from the environment: a token in LD_API_TOKEN must not show up in --help."""


N = TypeVar("N", int, float)


def bounded(kind: Callable[[str], N], low: N, high: N | None = None) -> Callable[[str], N]:
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


non_negative_int = bounded(int, 0)


def add_command(commands: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, formatter_class=Formatter, **kwargs)
    return parser


def add_output_options(parser: argparse.ArgumentParser, *, progress: bool = False) -> None:
    output = parser.add_argument_group("output")
    output.add_argument(
        "--output",
        choices=(TABLE, JSON),
        default=TABLE,
        help="table: lines for people (default); json: one JSON document on stdout (keys in docs/CLI.md)",
    )
    if progress:
        output.add_argument(
            "--quiet", action="store_true", help="no progress on stderr (it is shown only when stderr is a terminal)"
        )


def add_aws_options(group: Any) -> None:
    group.add_argument(
        "--endpoint-url", metavar="URL", help="AWS endpoint for every call (default: AWS's own, for the region)"
    )
    group.add_argument("--region", help="AWS region (default: from the queue URL, then your AWS configuration)")
    group.add_argument(
        "--profile", metavar="P", help="a named profile of your AWS configuration (default: AWS_PROFILE)"
    )


def add_deployment_options(parser: argparse.ArgumentParser, *, table: bool = True) -> None:
    where = parser.add_argument_group(
        "where the deployment is",
        "a stack by name (its outputs StateTableName, QueueUrl, DeadLetterQueueUrl), or each resource",
    )
    where.add_argument("--stack-name", metavar="S", help="the deployed CloudFormation stack (DescribeStacks)")
    if table:
        where.add_argument("--table", metavar="T", help="state table name (overrides the stack's output)")
    where.add_argument("--queue-url", metavar="Q", help="main queue URL (overrides the stack's output)")
    where.add_argument("--dlq-url", metavar="D", help="dead-letter queue URL (overrides the stack's output)")
    add_aws_options(where)


def add_audience_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audience", required=True, metavar="ID", help="the Engage audience id (computation_id)")
    parser.add_argument(
        "--context-kind", metavar="KIND", help="its context kind (default: the only one the state table has for it)"
    )
    parser.add_argument(
        "--audience-key",
        metavar="KEY",
        help="its Engage audience key (default: from the state table's audience summary)",
    )


def add_segment_location_options(ld: Any) -> None:
    """Where an audience's segment is in LaunchDarkly (targets.launchdarkly_settings reads these)."""
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
        choices=WRITERS,
        help="how the deployment writes segments, which decides how its segment is found (default: the stack's "
        "LaunchDarklyWriter, else segment-audiences)",
    )
