"""What every benchmark shares: run settings, figures with targets, summaries, the machine description."""

from __future__ import annotations

import io
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

Better = Literal["higher", "lower", "equal"]


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions for one invocation of `python -m bench`."""

    quick: bool = False
    runs: int = 7  # at least 5 for every reported median
    long: bool = False  # the full sizes (make bench-long), for the sections that have them

    @property
    def cold_runs(self) -> int:
        return 1 if self.quick else max(self.runs, 9)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Figure:
    """One measured quantity: its samples (one per run), unit, target and how to read the target."""

    name: str
    unit: str
    samples: list[float]
    target: float | None = None
    better: Better = "higher"
    note: str = ""
    digits: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if self.better == "higher":
            return self.median >= self.target
        if self.better == "lower":
            return self.median <= self.target
        return all(s == self.target for s in self.samples)

    @property
    def verdict(self) -> str:
        return {None: "—", True: "PASS", False: "FAIL"}[self.passed]

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        op = {"higher": "≥", "lower": "≤", "equal": "="}[self.better]
        return f"{op} {fmt(self.target, self.digits)} {self.unit}".rstrip()


@dataclass
class Section:
    """One benchmark's part of the report: headline figures plus free-form markdown details."""

    key: str
    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0
    load: str = ""  # load average before → after, to judge the noise
    headline: str = ""  # one line for the summary
    skipped: str | None = None
    outcomes: list[tuple[str, Any]] = field(default_factory=list)  # simulated runs, by label (docs/DEPLOY.md's sizing)


class Discard(io.TextIOBase):
    """A text stream that drops everything. Handlers' log lines and EMF metrics still get formatted and
    written (their cost is real), without a file that could be closed under a logger that lives on."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


def fmt(value: float, digits: int = 1) -> str:
    if digits == 0 or (float(value).is_integer() and abs(value) >= 100):
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was actually observed."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def repeat(runs: int, fn: Callable[[], float]) -> list[float]:
    return [fn() for _ in range(runs)]


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} ({platform.system()} {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _versions() -> str:
    names = ("boto3", "botocore", "pydantic", "aws-lambda-powertools", "requests", "moto")
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"


def machine() -> dict[str, str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU": _cpu_model(),
        "Cores": f"{os.cpu_count()} logical ({affinity} usable by this process)",
        "Memory": _memory(),
        "Python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "OS": _os_name(),
        "Libraries": _versions(),
        "Revision": _git_revision(),
    }
