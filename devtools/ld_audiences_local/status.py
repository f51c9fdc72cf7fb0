"""Kept only for local_aws.py's import: the one `queue_depth` is ld_audiences_cli.status's.
Remove once local_aws.py imports it from there."""

from ld_audiences_cli.status import queue_depth

__all__ = ["queue_depth"]
