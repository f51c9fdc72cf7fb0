"""`python -m bench`: run every benchmark and rewrite BENCHMARKS.md.

.venv/bin/python -m bench                  # everything (make bench)
.venv/bin/python -m bench --only sync      # one or more sections: cold, ingest, sync, first_sync, e2e
.venv/bin/python -m bench --quick          # smoke run on tiny sizes; prints, writes nothing
.venv/bin/python -m bench --long           # make bench-long: the long scenarios at the issue's sizes

`make bench` (about 30 minutes on 2 cores) runs every section, the simulated ones at smaller sizes, and
rewrites BENCHMARKS.md, keeping the long block `make bench-long` wrote there (between LONG_BEGIN and
LONG_END); `make bench-long` rewrites only that block. Each section names the command that made it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.common import REPO_ROOT, Section, Settings, machine
from bench.report import render

SECTIONS: dict[str, tuple[str, str]] = {
    # key: (module, title)
    "cold": ("bench.cold_start", "Cold init"),
    "ingest": ("bench.ingest", "Ingest throughput"),
    "sync": ("bench.sync", "Sync efficiency"),
    "first_sync": ("bench.first_sync_section", "First sync of a large audience (simulated)"),
    "keep_up": ("bench.keep_up", "Keeping up with many audiences (simulated)"),
    "e2e": ("bench.e2e", "End to end on the local stack"),
}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return ""


def run_sections(keys: Sequence[str], settings: Settings, log: Callable[[str], None] = lambda _: None) -> list[Section]:
    import importlib

    sections = []
    for key in keys:
        module_name, title = SECTIONS[key]
        log(f"bench: {title} …")
        before, started = _load(), time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            section: Section = module.run(settings)
        except Exception as exc:
            if settings.quick:
                raise
            traceback.print_exc()
            section = Section(key, title, f".venv/bin/python -m bench --only {key}")
            section.skipped = f"failed: {type(exc).__name__}: {exc}"
        section.seconds = time.perf_counter() - started
        section.load = f"{before} → {_load()}" if before else ""
        log(f"bench: {title} done in {section.seconds:.0f} s")
        sections.append(section)
    return sections


LONG_SECTIONS = ["first_sync", "keep_up"]
LONG_BEGIN, LONG_END = "<!-- make bench-long: begin -->", "<!-- make bench-long: end -->"


def splice(before: str, report: str, long: bool) -> str:
    """BENCHMARKS.md from a new report: a long run's report becomes the long block of what was there; a
    full run's report keeps the long block that was there."""
    start, end = before.find(LONG_BEGIN), before.find(LONG_END)
    kept = before[start : end + len(LONG_END)] if 0 <= start < end else ""
    if long:
        block = f"{LONG_BEGIN}\n\n# Long scenarios (make bench-long)\n\n{report.partition(chr(10))[2]}\n{LONG_END}"
        return before.replace(kept, block) if kept else f"{before.rstrip()}\n\n{block}\n"
    return f"{report.rstrip()}\n\n{kept}\n" if kept else report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run each: checks the code works")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--long", action="store_true", help="the long scenarios only, at full size (make bench-long)")
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (at least 5; default 7)")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the report (default: BENCHMARKS.md for a full run; --quick and --only print it)",
    )
    args = parser.parse_args(argv)
    if args.runs < 5 and not args.quick:
        parser.error("--runs must be at least 5 (medians of at least 5 runs)")
    settings = Settings(quick=args.quick, runs=2 if args.quick else args.runs, long=args.long)
    keys = args.only or (LONG_SECTIONS if args.long else list(SECTIONS))

    started_at, started = datetime.now(UTC), time.perf_counter()
    sections = run_sections(keys, settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    given = list(sys.argv[1:] if argv is None else argv)
    command = "make bench" if not given else ".venv/bin/python -m bench " + " ".join(given)
    report = render(sections, machine(), settings, started_at, time.perf_counter() - started, command.strip())

    output = args.output
    if output is None and not args.quick and not args.only:
        output = REPO_ROOT / "BENCHMARKS.md"
    if output is None:
        print(report)
    else:
        before = output.read_text(encoding="utf-8") if output.exists() else ""
        output.write_text(splice(before, report, args.long), encoding="utf-8")
        print(f"bench: wrote {output}", file=sys.stderr)
        by_key = {s.key: s.outcomes for s in sections}
        if not args.long and by_key.get("first_sync") and by_key.get("keep_up"):
            from bench import sizing

            sizing.update_deploy_doc(sizing.render(by_key["first_sync"], by_key["keep_up"], command.strip()))
            print("bench: rewrote docs/DEPLOY.md's sizing section", file=sys.stderr)
    failed = [f"{s.title}: {f.name.strip()}" for s in sections for f in s.figures if f.passed is False]
    broken = [s.title for s in sections if s.skipped and s.skipped.startswith("failed")]
    # A smoke run's tiny sizes make the figures mean nothing: it fails only when a section breaks.
    for line in failed:
        print(f"bench: {'missed (not judged in a smoke run)' if args.quick else 'FAIL'} {line}", file=sys.stderr)
    for title in broken:
        print(f"bench: {title} did not complete", file=sys.stderr)
    return 1 if broken or (failed and not args.quick) else 0


if __name__ == "__main__":
    raise SystemExit(main())
