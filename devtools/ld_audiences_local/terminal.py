"""Kept only for emulator.py's import: the one `printable` is ld_audiences_cli.terminal's.
Remove once emulator.py imports it from there (issue 19's emulator split)."""

from ld_audiences_cli.terminal import printable

__all__ = ["printable"]
