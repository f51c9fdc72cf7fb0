"""BENCHMARKS.md: machine, date, commands, figures against targets, and each benchmark's details."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bench.common import Section, Settings, fmt, table

INTRO = (
    "Written by `make bench` (`.venv/bin/python -m bench`); do not edit by hand, rerun it. Each figure is the "
    "median over the runs listed, with the minimum and maximum; a figure with a target says PASS or FAIL against "
    "it (targets from issue 5). The machine is shared with other work (2 cores): wall-clock figures carry that "
    "noise, which is why CPU-time figures stand beside them and why the load average is recorded per section. "
    "Reproduce one section with the command under its title; `python -m bench --quick` is a smoke run on tiny "
    "sizes (used by `tests/unit/test_bench_smoke.py`) whose numbers mean nothing."
)


def render(
    sections: Sequence[Section],
    machine: dict[str, str],
    settings: Settings,
    started: datetime,
    seconds: float,
    command: str,
    notes: Sequence[str] = (),
) -> str:
    lines = ["# Benchmarks", "", INTRO, ""]
    lines += ["## Machine and run", ""]
    rows = [[k, v] for k, v in machine.items()]
    rows.append(["Date", f"{started.astimezone(UTC):%Y-%m-%d %H:%M} UTC"])
    rows.append(["Command", f"`{command}`" + (" (quick: tiny sizes, numbers meaningless)" if settings.quick else "")])
    rows.append(["Runs per figure", f"{settings.runs} (cold init: {settings.cold_runs} fresh processes per variant)"])
    rows.append(["Total time", f"{seconds / 60:.1f} min"])
    lines += [table(["", ""], rows), ""]

    lines += ["## Summary", ""]
    summary = []
    for section in sections:
        if section.skipped:
            summary.append([section.title, f"skipped: {section.skipped}", "", "", "", "", ""])
            continue
        for figure in section.figures:
            if figure.target is None and figure.name.startswith("  "):
                continue
            summary.append(_row(section.title, figure))
    lines += [table(["benchmark", "figure", "median", "min", "max", "target", "result"], summary), ""]
    headlines = [f"* **{s.title}**: {s.headline}" for s in sections if s.headline and not s.skipped]
    if headlines:
        lines += [*headlines, ""]
    lines += list(notes)

    for section in sections:
        lines += [
            f"## {section.title}",
            "",
            f"`{section.command}` — {section.seconds:.0f} s"
            + (f", load average {section.load}" if section.load else ""),
            "",
        ]
        if section.skipped:
            lines += [f"Skipped: {section.skipped}.", ""]
            continue
        rows = [_row(None, f) for f in section.figures]
        lines += [table(["figure", "median", "min", "max", "target", "result"], rows), ""]
        for detail in section.details:
            lines += [detail, ""]
    return "\n".join(lines).rstrip() + "\n"


def _row(title: str | None, figure: object) -> list[str]:
    from bench.common import Figure

    assert isinstance(figure, Figure)
    unit = f" {figure.unit}" if figure.unit else ""
    cells = [
        figure.name.strip()
        if title
        else figure.name.replace("  ", "  ↳ ", 1)
        if figure.name.startswith("  ")
        else figure.name,
        f"{fmt(figure.median, figure.digits)}{unit}",
        fmt(figure.low, figure.digits),
        fmt(figure.high, figure.digits),
        figure.target_text,
        f"**{figure.verdict}**" if figure.passed is False else figure.verdict,
    ]
    return [title, *cells] if title else cells
