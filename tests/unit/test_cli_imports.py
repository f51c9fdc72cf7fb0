"""An operator's `ld-audiences` loads nothing of the local stack: not moto, not the emulator's validator, not
ld_audiences_local, not selenium; the local stack's commands say how to install them when they are missing.

Each case runs in a fresh interpreter: this test session itself has imported all of those."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ld_audiences_cli.main import LOCAL_EXTRA

LOCAL_ONLY = ("moto", "ld_audiences_local", "selenium", "openapi_schema_validator", "yaml", "flask")
OPERATOR_COMMANDS = ("status", "resync", "retire", "audit", "redrive", "check", "replay")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (this interpreter)
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def loaded_after(*argvs: list[str]) -> list[str]:
    """The local-only modules loaded once `main` ran with each of `argvs`."""
    code = f"""
import sys
from ld_audiences_cli.main import main
for argv in {list(argvs)!r}:
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(m for m in sys.modules if m.split(".")[0] in {LOCAL_ONLY!r}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return list(eval(result.stdout.strip().splitlines()[-1]))  # noqa: S307 (our own printed list)


def test_the_operator_commands_load_nothing_of_the_local_stack() -> None:
    helps = [[command, "--help"] for command in OPERATOR_COMMANDS]
    # Past parsing too: each of these fails for want of an option, after its run has started.
    runs = [["status"], ["resync", "--audience", "a"], ["redrive"], ["check"], ["replay", "x", "--endpoint", "e"]]
    assert loaded_after(["--help"], ["--version"], *helps, *runs) == []


def test_a_local_command_is_loaded_when_it_is_run() -> None:
    assert "ld_audiences_local.emulator_command" in loaded_after(["emulator", "--help"])


@pytest.mark.parametrize("argv", [["local", "--port", "0"], ["demo"], ["emulator", "--port", "0"]])
def test_a_local_command_without_the_local_extra_says_how_to_install_it(argv: list[str]) -> None:
    # sys.modules[name] = None makes `import name` fail as if it were not installed.
    code = f"""
import sys
sys.modules["moto"] = sys.modules["openapi_schema_validator"] = None
from ld_audiences_cli.main import main
raise SystemExit(main({argv!r}))
"""
    result = run_python(code)
    assert result.returncode == 2, result.stdout + result.stderr
    assert LOCAL_EXTRA in result.stderr and "is missing" in result.stderr
    assert "Traceback" not in result.stderr
