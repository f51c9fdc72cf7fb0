"""Kept only for stack.py's import: the one `list_dead_letters` is ld_audiences_cli.redrive's.
Remove once stack.py imports it from there."""

from ld_audiences_cli.redrive import list_dead_letters

__all__ = ["list_dead_letters"]
