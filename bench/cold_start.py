"""Cold init: import each handler module in a fresh interpreter, with the environment Lambda gives it.

Each run starts `bench/_cold_child.py`, which times `importlib` loading `functions/<name>/app.py` by path
(what the runtime does with `app.lambda_handler`): the settings are read from the environment and the
boto3 clients, Logger, Metrics, Tracer and the resolver are created, exactly as at a Lambda cold start.

Two bytecode situations are measured:
* with bytecode: `.pyc` files next to the sources, as the layer built by `layers/shared/Makefile` ships;
* without bytecode: our code and every third-party package compiled from source on each start, as with a
  plain `sam build` layer on Lambda's read-only filesystem (docs/DESIGN.md, "Cold start"); the standard library
  keeps its bytecode, as the runtime image has it. Done with `-B -X pycache_prefix=DIR` where DIR holds
  the standard library's `.pyc` files only.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import statistics
import subprocess
import sysconfig
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPO_ROOT, Figure, Section, Settings, fmt, table

CHILD = Path(__file__).with_name("_cold_child.py")
TARGET_MS = {"ingest": 450.0, "sync": 550.0}

FUNCTION_ENV = {
    "ingest": {
        "POWERTOOLS_SERVICE_NAME": "ld-audiences-ingest",
        "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ld-audiences-changes",
        "WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ld-audiences/webhook-secret",
        "CONTEXT_KEY_POLICY": "user_id_only",
        "DEFAULT_CONTEXT_KIND": "user",
        "ALLOWED_CONTEXT_KINDS": "",
        "MAX_BODY_BYTES": "5242880",
        "MAX_EVENTS_PER_REQUEST": "4000",
    },
    "sync": {
        "POWERTOOLS_SERVICE_NAME": "ld-audiences-sync",
        "LD_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ld-audiences/launchdarkly-token",
        "LD_WRITER": "segment-audiences",
        "LD_CLIENT_SIDE_ID": "0123456789abcdef01234567",
        "LD_PROJECT_KEY": "",
        "LD_ENVIRONMENT_KEY": "",
        "LD_BASE_URL": "https://app.launchdarkly.com",
        "LD_CHUNK_SIZE": "1000",
        "STATE_TABLE_NAME": "ld-audiences-state",
        "DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ld-audiences-changes-dlq",
        "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/ld-audiences-changes",
        "LATE_APPLY_RECHECK_SECONDS": "30,900",
        "SYNC_BATCH_SIZE": "1000",
    },
}


def lambda_environment(function: str, home: Path, code_root: Path) -> dict[str, str]:
    """What the Lambda runtime sets (python3.13, Tracing: Active) plus template.yaml's variables.

    `LAMBDA_TASK_ROOT` matters: without it Tracer stays off and the X-Ray SDK builds a centralized
    sampler with two botocore clients at import, which Lambda never does.
    """
    name = f"ld-audiences-{function}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "HOME": str(home),  # no developer ~/.aws/config
        "AWS_CONFIG_FILE": str(home / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE00",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key",
        "AWS_SESSION_TOKEN": "bench-session-token",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/23/[$LATEST]bench",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "_HANDLER": "app.lambda_handler",
        # template.yaml Globals
        "POWERTOOLS_METRICS_NAMESPACE": "LdAudiences",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
        "SECRETS_MAX_AGE": "300",
        "POWERTOOLS_LOGGER_SAMPLE_RATE": "0",
        "AWS_ENDPOINT_URL": "",  # declared for `sam local`, empty on AWS
        # The layer's /opt/python: the core package is found on the path, not through the editable install.
        "PYTHONPATH": str(code_root / "layers" / "shared"),
    }
    env.update(FUNCTION_ENV[function])
    return env


WHAT_WAS_DONE = """**What the time is made of, and what was done about it.**

* Bytecode is the cut that matters. Without `.pyc` files every start compiles our code and its
  dependencies from source, which multiplies the import time (ratio in the table above), and Lambda's
  read-only filesystem means every cold start would pay it again. The shared layer is built by
  `layers/shared/Makefile` (`BuildMethod: makefile`) with bytecode precompiled by Python 3.13 in
  unchecked-hash mode; that build is what keeps both functions under target. A plain `sam build` layer
  would not be.
* With bytecode, what is left is third-party and needed on every invocation: boto3 and botocore (boto3's
  own import drags in s3transfer through `boto3.compat`, and Powertools Parameters imports boto3 at import
  time anyway), the first boto3 client (botocore loads `endpoints.json`, 1.2 MB, and the service model:
  the "module body" row), pydantic's machinery with our models, the Powertools `event_handler` package
  (its `__init__` imports every resolver, AppSync's asyncio included), and for sync the X-Ray SDK (wrapt,
  asyncio) and requests. The self time of our own package (the `ld_audiences` row) is mostly pydantic
  building our models as their classes are defined.
* Evaluated and not applied, so the handlers are unchanged by this work: lazy imports or lazy boto3 clients
  move the same cost into the first request of every new instance (the first invocation always follows
  init, and init is billed too), so a cold start costs no less; replacing Powertools'
  `APIGatewayRestResolver` with hand-written routing would save the `event_handler` import shown above
  but change the 404/405 behaviour and response shape the tests and the local stack rely on;
  `Tracer(patch_modules=("botocore", "requests"))` saves a few milliseconds of patching but changes what the
  traces contain; pydantic's `defer_build` only moves model building to the first event.
* Measure in a Lambda-like environment. Without `LAMBDA_TASK_ROOT` the X-Ray SDK builds a centralized
  sampler with two botocore clients at import (about 150-200 ms more for sync when this was written), so a
  plain `python -c "import app"`, the tests and the local stack all overstate sync's cold start.
"""


@dataclass
class Tree:
    """A copy of the code to measure: the working tree, or the revision before the cuts."""

    label: str
    root: Path

    def app(self, function: str) -> Path:
        return self.root / "functions" / function / "app.py"


@dataclass
class Runs:
    import_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    process_ms: list[float] = field(default_factory=list)
    modules: int = 0


def run_child(
    tree: Tree, function: str, home: Path, extra_args: tuple[str, ...] = ()
) -> tuple[dict[str, Any], float, str]:
    env = lambda_environment(function, home, tree.root)
    started = time.perf_counter()
    out = subprocess.run(
        [PYTHON, *extra_args, str(CHILD), f"app_{function}", str(tree.app(function))],
        env=env,
        cwd=str(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = (time.perf_counter() - started) * 1000
    if out.returncode != 0:
        raise RuntimeError(f"cold-init child failed for {function}: {out.stderr[-2000:]}")
    import json

    data = json.loads(out.stdout.strip().splitlines()[-1])
    expected = str(tree.root / "layers" / "shared")
    if not data["core"].startswith(expected) or not data["handler"]:
        raise RuntimeError(f"the child loaded ld_audiences from {data['core']!r}, expected it under {expected}")
    return data, wall, out.stderr


# ----------------------------------------------------------------------------------------- bytecode


def warm_bytecode(tree: Tree, home: Path) -> None:
    """Write the .pyc files next to the sources (what a layer with precompiled bytecode has)."""
    for function in TARGET_MS:
        run_child(tree, function, home)


def stdlib_only_prefix(trees: list[Tree], home: Path, prefix: Path) -> Path:
    """A pycache prefix holding the standard library's bytecode and nothing else."""
    for tree in trees:
        for function in TARGET_MS:
            run_child(tree, function, home, ("-X", f"pycache_prefix={prefix}"))
            run_child(tree, function, home, ("-X", f"pycache_prefix={prefix}", "-X", "importtime"))
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    site_dirs = {Path(p).resolve() for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]}
    for pyc in list(prefix.rglob("*.pyc")):
        source_dir = Path("/") / pyc.parent.relative_to(prefix)
        in_stdlib = source_dir == stdlib or stdlib in source_dir.parents
        in_site = any(source_dir == s or s in source_dir.parents for s in site_dirs)
        if not in_stdlib or in_site:
            pyc.unlink()
    return prefix


# ----------------------------------------------------------------------------------------- -X importtime

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


@dataclass
class ImportTree:
    total_ms: float
    direct: list[tuple[str, float]]  # the handler module's own imports (cumulative)
    by_package: list[tuple[str, float, int]]  # top-level package: self time, modules
    top_cumulative: list[tuple[str, float]]


def parse_importtime(stderr: str, total_ms: float) -> ImportTree:
    lines = stderr.split("#bench-import-start", 1)[-1].split("#bench-import-end", 1)[0].splitlines()
    rows = []
    for line in lines:
        match = _LINE.match(line)
        if match:
            rows.append((int(match[1]) / 1000, int(match[2]) / 1000, len(match[3]) // 2, match[4]))
    direct = [(name, cumulative) for _, cumulative, level, name in rows if level == 0]
    packages: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for self_ms, _, _, name in rows:
        top = name.split(".")[0]
        packages[top] += self_ms
        counts[top] += 1
    by_package = [(name, ms, counts[name]) for name, ms in packages.most_common()]
    top = sorted(((name, cumulative) for _, cumulative, _, name in rows), key=lambda r: -r[1])
    return ImportTree(total_ms, direct, by_package, top)


def median_tree(trees: list[ImportTree]) -> ImportTree:
    """Per-entry medians over several `-X importtime` runs (one run on this machine is too noisy)."""

    def med(rows: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
        values: dict[str, list[float]] = {}
        for run in rows:
            for name, ms in run:
                values.setdefault(name, []).append(ms)
        return sorted(((n, statistics.median(v)) for n, v in values.items()), key=lambda r: -r[1])

    counts = {name: count for t in trees for name, _, count in t.by_package}
    packages = med([[(name, ms) for name, ms, _ in t.by_package] for t in trees])
    return ImportTree(
        total_ms=statistics.median(t.total_ms for t in trees),
        direct=med([t.direct for t in trees]),
        by_package=[(name, ms, counts[name]) for name, ms in packages],
        top_cumulative=med([t.top_cumulative for t in trees]),
    )


def importtime_details(function: str, tree: ImportTree, runs: int) -> str:
    imported = sum(ms for _, ms in tree.direct)
    body = max(0.0, tree.total_ms - imported)
    direct = sorted(tree.direct, key=lambda r: -r[1])
    shown = direct[:10]
    rest = sum(ms for _, ms in direct[10:])
    rows = [[f"`{name}`", fmt(ms)] for name, ms in shown]
    if rest:
        rows.append([f"{len(direct) - 10} more imports", fmt(rest)])
    rows.append(["module body: settings, boto3 clients, Logger, Metrics, resolver/Tracer", fmt(body)])
    rows.append(["**total (under -X importtime, which inflates it)**", f"**{fmt(tree.total_ms)}**"])
    packages = [[f"`{name}`", fmt(ms), count] for name, ms, count in tree.by_package[:12]]
    others = tree.by_package[12:]
    packages.append([f"{len(others)} other packages", fmt(sum(ms for _, ms, _ in others)), sum(c for *_, c in others)])
    top = [[f"`{name}`", fmt(ms)] for name, ms in tree.top_cumulative[:15]]
    return (
        f"**{function}**, `-X importtime`, bytecode present, medians of {runs} runs. The handler module's own "
        "import lines, cumulative (a package is charged to the first line that imports it):\n\n"
        + table(["import line", "ms"], rows)
        + "\n\nSelf time by top-level package (where the time really goes, whoever imports it):\n\n"
        + table(["package", "self ms", "modules"], packages)
        + "\n\nLargest cumulative imports (nested ones included):\n\n"
        + table(["module", "cumulative ms"], top)
    )


# ----------------------------------------------------------------------------------------- run


def run(settings: Settings) -> Section:
    section = Section("cold", "Cold init", ".venv/bin/python -m bench --only cold")
    tree = Tree("working tree", REPO_ROOT)
    importtime_runs = 1 if settings.quick else 5
    work = Path(tempfile.mkdtemp(prefix="ld-audiences-bench-"))
    try:
        home = work / "home"
        home.mkdir()
        warm_bytecode(tree, home)
        modes: list[tuple[str, tuple[str, ...]]] = [("bytecode", ())]
        if not settings.quick:
            prefix = stdlib_only_prefix([tree], home, work / "pycache-stdlib")
            modes.append(("no bytecode", ("-B", "-X", f"pycache_prefix={prefix}")))

        results: dict[tuple[str, str], Runs] = {}
        for _ in range(settings.cold_runs):
            # Interleaved, so drift in the machine's load hits every variant alike.
            for function in TARGET_MS:
                for mode, args in modes:
                    data, wall, _ = run_child(tree, function, home, args)
                    runs = results.setdefault((function, mode), Runs())
                    runs.import_ms.append(data["import_ms"])
                    runs.cpu_ms.append(data["cpu_ms"])
                    runs.process_ms.append(wall)
                    runs.modules = data["modules"]

        breakdowns = {}
        for function in TARGET_MS:
            parsed = []
            for _ in range(importtime_runs):
                data, _, stderr = run_child(tree, function, home, ("-X", "importtime"))
                parsed.append(parse_importtime(stderr, data["import_ms"]))
            breakdowns[function] = median_tree(parsed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for function, target in TARGET_MS.items():
        warm = results[(function, "bytecode")]
        section.figures.append(
            Figure(f"{function}: import handler module, bytecode present", "ms", warm.import_ms, target, "lower")
        )
        section.figures.append(
            Figure(
                f"{function}: same, CPU time of the import (what an unshared core takes)",
                "ms",
                warm.cpu_ms,
                target,
                "lower",
            )
        )
        cold = results.get((function, "no bytecode"))
        if cold is not None:
            section.figures.append(
                Figure(f"  {function}: same, no bytecode for our code and its dependencies", "ms", cold.import_ms)
            )
        section.figures.append(
            Figure(f"  {function}: whole process (interpreter start + import + exit)", "ms", warm.process_ms)
        )
        for mode, _ in modes:
            runs = results[(function, mode)]
            ratio = statistics.median(runs.import_ms) / statistics.median(warm.import_ms)
            rows.append(
                [
                    function,
                    mode,
                    fmt(statistics.median(runs.import_ms)),
                    fmt(min(runs.import_ms)),
                    fmt(max(runs.import_ms)),
                    fmt(statistics.median(runs.cpu_ms)),
                    f"{ratio:.2f}x",
                    runs.modules,
                ]
            )

    section.details.append(
        "Each run is a fresh `python bench/_cold_child.py` with Lambda's environment (`LAMBDA_TASK_ROOT`, "
        "`AWS_LAMBDA_FUNCTION_NAME`, X-Ray daemon address, region, credentials) and template.yaml's variables; "
        "the core package comes from `PYTHONPATH=layers/shared` as from the layer's `/opt/python`. The figure is "
        "the time to import `functions/<name>/app.py` (which reads the settings and creates the boto3 clients, "
        "Logger, Metrics and the resolver or Tracer); the interpreter's own start comes before it and is in the "
        'whole-process figure. Variants are interleaved run by run. "No bytecode" compiles our code and every '
        "third-party package from source at each start (stdlib bytecode kept, as in the runtime image): what a "
        "layer without `.pyc` costs on Lambda's read-only filesystem. This machine runs CPython 3.11 on x86-64; "
        "Lambda runs 3.13 on arm64 (template.yaml), so absolute numbers differ there.\n\n"
        + table(
            ["function", "bytecode", "median ms", "min", "max", "median CPU ms", "÷ with bytecode", "modules loaded"],
            rows,
        )
    )
    for function in TARGET_MS:
        section.details.append(importtime_details(function, breakdowns[function], importtime_runs))
    section.details.append(WHAT_WAS_DONE)
    parts = []
    for function in TARGET_MS:
        warm_ms = statistics.median(results[(function, "bytecode")].import_ms)
        cold_runs = results.get((function, "no bytecode"))
        ratio = f", {statistics.median(cold_runs.import_ms) / warm_ms:.1f}x that without bytecode" if cold_runs else ""
        parts.append(f"{function} {fmt(warm_ms, 0)} ms{ratio}")
    section.headline = (
        "; ".join(parts) + ". Precompiled bytecode in the layer is the cut that matters; the rest is boto3, "
        "botocore's first client, pydantic and Powertools, all needed (details below)."
    )
    return section
