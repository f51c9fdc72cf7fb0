"""What a command prints: lines for people (`--output table`) or one JSON document (`--output json`) on
stdout, and progress on stderr, so that stdout stays the report a script reads.

Every line passes through terminal.printable: ids, keys, reasons and error text come from events, dead
letters, LaunchDarkly and AWS, and are escaped of what a terminal would act on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ld_audiences_cli.terminal import printable

TABLE, JSON = "table", "json"


def stderr_is_a_terminal() -> bool:
    return sys.stderr.isatty()


class Report:
    def __init__(self, output: str = TABLE, *, progress: bool = False) -> None:
        self.json = output == JSON
        self._progress = progress

    @classmethod
    def of(cls, args: argparse.Namespace) -> Report:
        """Progress only for a person watching: stderr a terminal and no --quiet."""
        watched = stderr_is_a_terminal() and not getattr(args, "quiet", False)
        return cls(getattr(args, "output", TABLE), progress=watched)

    def lines(self, *lines: str) -> None:
        """Lines of the human report (nothing with --output json)."""
        if not self.json:
            for line in lines:
                print(printable(line), flush=True)

    def document(self, doc: Any) -> None:
        """The JSON report (nothing with --output table). ASCII: every control or bidirectional character of
        an id or reason is a \\u escape, not a character."""
        if self.json:
            print(json.dumps(doc, indent=2, ensure_ascii=True), flush=True)

    def progress(self, message: str) -> None:
        if self._progress:
            print(printable(message), file=sys.stderr, flush=True)


class Ticker:
    """Progress of a long operation ("audited 40/300 contexts"), emitted every `every` counts or `seconds`
    seconds, whichever comes first: a long run shows it is alive without flooding a short one."""

    def __init__(
        self, emit: Callable[[str], None], verb: str, noun: str, *, every: int = 1000, seconds: float = 5.0
    ) -> None:
        self._emit, self._verb, self._noun, self._every, self._seconds = emit, verb, noun, every, seconds
        self._last_count, self._last_time = 0, time.monotonic()

    def tick(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if done - self._last_count >= self._every or now - self._last_time >= self._seconds:
            self._last_count, self._last_time = done, now
            self._emit(f"{self._verb} {done}{'' if total is None else f'/{total}'} {self._noun}…")
