"""`ld-audiences`: builds the parser from the commands' own modules and runs the one asked for.

The operator commands (ld_audiences_cli.commands) need only the base install. The local stack's commands live
in ld_audiences_local and need the `local` extra (moto, the emulator's OpenAPI validator): each is imported
only when it is the command run, so that nothing an operator runs loads them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ld_audiences_cli import exit_status
from ld_audiences_cli.commands import audit, check, redrive, replay, resync, retire, status
from ld_audiences_cli.options import Formatter

OPERATOR_COMMANDS: tuple[ModuleType, ...] = (status, resync, retire, audit, redrive, check, replay)
# name: (module, the help shown in `ld-audiences --help` without importing it)
LOCAL_COMMANDS = {
    "local": ("ld_audiences_local.local_command", "run the whole pipeline locally (moto, emulator; `local` extra)"),
    "demo": ("ld_audiences_local.local_command", "start the local stack, replay the bundled fixtures, show segments"),
    "emulator": ("ld_audiences_local.emulator_command", "run the LaunchDarkly emulator (`local` extra)"),
}
LOCAL_EXTRA = "pip install 'ld-audiences[local]'"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ld-audiences")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; of the local stack's, only `command`'s is imported (the others are listed)."""
    parser = argparse.ArgumentParser(
        prog="ld-audiences",
        formatter_class=Formatter,
        description=(
            "Operate an ld-audiences deployment (Segment Engage audiences → LaunchDarkly segments): its\n"
            "status, resync, retire, audit and dead-letter redrive; LaunchDarkly credential checks and\n"
            "fixture replay. With the `local` extra, a local stack without Docker (moto for AWS, the real\n"
            f"Lambda handlers, a LaunchDarkly emulator): {LOCAL_EXTRA}."
        ),
        epilog=f"Run `ld-audiences COMMAND --help` for the options of a command.\n{exit_status.HELP}",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in OPERATOR_COMMANDS:
        module.register(commands)
    chosen = LOCAL_COMMANDS.get(command or "")
    if chosen is not None:
        importlib.import_module(chosen[0]).register(commands)
    for name, (module_name, help_text) in LOCAL_COMMANDS.items():
        if chosen is None or module_name != chosen[0]:
            listed = commands.add_parser(name, help=help_text, add_help=False)
            listed.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command's name: the first argument that is not an option (the top level takes no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        return exit_status.run(args.run, args)
    except ModuleNotFoundError as exc:
        if command not in LOCAL_COMMANDS:
            raise
        exit_status.error(f"`ld-audiences {command}` needs the local extra ({exc.name} is missing): {LOCAL_EXTRA}")
        return exit_status.USAGE


if __name__ == "__main__":
    raise SystemExit(main())
