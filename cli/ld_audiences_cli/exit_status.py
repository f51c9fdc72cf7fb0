"""The exit statuses every command keeps, for the scripts and schedulers that run them (docs/CLI.md), and the
one place where a failure becomes one of them: one error line that names the fix, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ld_audiences_cli.terminal import printable

OK = 0  # done; nothing found
FINDINGS = 1  # done, and something is wrong: audit drift, a failed check, a file not answered 200
USAGE = 2  # an option missing or wrong (argparse's own status for its errors), or a command not installed
CANNOT_TELL = 3  # AWS or LaunchDarkly failed or did not answer: nothing can be said
INTERRUPTED = 130  # Ctrl-C, as a shell reports it

HELP = (
    f"exit status: {OK} success; {FINDINGS} findings (drift, failed checks, refused files); {USAGE} usage error\n"
    f"             (an option missing or wrong); {CANNOT_TELL} cannot tell: AWS or LaunchDarkly failed or did not "
    "answer"
)


class UsageError(Exception):
    """What the command needs is missing or wrong: the message says which option gives it."""


class CannotTell(Exception):
    """AWS or LaunchDarkly did not answer as needed: the message says what failed and what to do."""


def error(message: str) -> None:
    print(f"ld-audiences: error: {printable(message)}", file=sys.stderr, flush=True)


Command = Callable[[argparse.Namespace], int]


def run(command: Command, args: argparse.Namespace) -> int:
    """`command(args)`, with each failure turned into one error line and its exit status."""
    # botocore is imported here, not at the top: `--help` and the commands that never call AWS stay fast.
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ProfileNotFound,
    )
    from requests import RequestException

    from ld_audiences.launchdarkly import WriteError

    try:
        return command(args)
    except UsageError as exc:
        error(str(exc))
        return USAGE
    except NoRegionError:
        error("no AWS region: give --region (or set AWS_REGION, or a region in the --profile)")
        return USAGE
    except NoCredentialsError:
        error("no AWS credentials: give --profile (or set AWS_PROFILE, or run `aws configure`)")
        return USAGE
    except ProfileNotFound as exc:
        error(f"{exc}: give a profile `aws configure list-profiles` shows")
        return USAGE
    except EndpointConnectionError as exc:
        error(f"cannot reach AWS: {exc}; check --region and --endpoint-url")
        return CANNOT_TELL
    except (BotoCoreError, ClientError) as exc:
        error(f"AWS call failed: {exc}")
        return CANNOT_TELL
    except (CannotTell, WriteError, RequestException) as exc:
        error(str(exc))
        return CANNOT_TELL
    except KeyboardInterrupt:
        error("interrupted")
        return INTERRUPTED
