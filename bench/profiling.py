"""CPU profile of every thread of this process, attributed to the parts of the local stack.

`ThreadProfiler` installs, through `threading.setprofile`, a per-thread `cProfile.Profile` timed with
`time.thread_time` (CPU time of that thread) in every thread started while it is active: moto's server
threads, the ingest HTTP server, the SQS poller running the sync handler, the LaunchDarkly emulator.
`attribute()` charges each function's own CPU time to a part by the file it lives in; time in generic
code (the standard library, C builtins, json, locks) goes up the call graph, pro rata, to the nearest
caller that has a part of its own. Each thread also gets a role (who it works for), recognized by the
functions it ran.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

Func = tuple[str, int, str]

MOTO = "moto (AWS emulation)"
HTTP_SERVER = "HTTP servers (werkzeug, http.server, socketserver)"
HTTP_CLIENT = "HTTP clients (urllib3, requests, http.client)"
SOCKETS = "sockets"
SDK = "boto3/botocore (AWS SDK, client side)"
OURS = "our code (ld_audiences, handlers)"
PYDANTIC = "pydantic (our validation)"
POWERTOOLS = "Powertools"
EMULATOR = "LaunchDarkly emulator"
HARNESS = "local stack harness (poller, API Gateway wrapper)"
GENERIC = "generic (stdlib, builtins) not traced to a caller"

# Checked in order: the first matching fragment of a function's file names its part.
FILE_PARTS: tuple[tuple[str, str], ...] = (
    ("/moto/", MOTO),
    ("/responses/", MOTO),
    ("/xmltodict", MOTO),
    ("/jinja2/", MOTO),
    ("/werkzeug/", HTTP_SERVER),
    ("/flask", HTTP_SERVER),
    ("/http/server.py", HTTP_SERVER),
    ("/socketserver.py", HTTP_SERVER),
    ("/ld_audiences/", OURS),
    ("/functions/ingest/", OURS),
    ("/functions/sync/", OURS),
    ("/pydantic", PYDANTIC),
    ("/aws_lambda_powertools/", POWERTOOLS),
    ("/ld_audiences_local/emulator", EMULATOR),  # emulator.py and its emulator_*.py parts
    ("/ld_audiences_local/", HARNESS),
    ("/botocore/", SDK),
    ("/boto3/", SDK),
    ("/s3transfer/", SDK),
    ("/requests/", HTTP_CLIENT),
    ("/urllib3/", HTTP_CLIENT),
    ("/http/client.py", HTTP_CLIENT),
    ("/socket.py", SOCKETS),
    ("/ssl.py", SOCKETS),
    ("/selectors.py", SOCKETS),
)

# The parts the conclusion is about.
GROUPS = {
    MOTO: "moto server",
    HTTP_SERVER: "HTTP (servers, clients, sockets)",
    HTTP_CLIENT: "HTTP (servers, clients, sockets)",
    SOCKETS: "HTTP (servers, clients, sockets)",
    SDK: "boto3/botocore client side",
    OURS: "our code (ld_audiences, handlers, pydantic, Powertools)",
    PYDANTIC: "our code (ld_audiences, handlers, pydantic, Powertools)",
    POWERTOOLS: "our code (ld_audiences, handlers, pydantic, Powertools)",
    EMULATOR: "local stack harness and LaunchDarkly emulator",
    HARNESS: "local stack harness and LaunchDarkly emulator",
    GENERIC: "generic (stdlib, builtins) not traced to a caller",
}

MOTO_ROLE = "moto server threads"


def part_of(filename: str) -> str | None:
    """The part a file belongs to, or None for generic code (stdlib, C builtins)."""
    name = filename.replace("\\", "/")
    for fragment, part in FILE_PARTS:
        if fragment in name:
            return part
    return None


@dataclass
class ThreadProfile:
    name: str
    profile: cProfile.Profile


@dataclass
class Attribution:
    total: float = 0.0
    by_group: Counter[str] = field(default_factory=Counter)
    by_role: Counter[str] = field(default_factory=Counter)
    by_role_part: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    top: list[tuple[str, float]] = field(default_factory=list)
    threads: Counter[str] = field(default_factory=Counter)


class ThreadProfiler:
    """Profile every thread started between `start()` and `stop()` (not the calling thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.threads: list[ThreadProfile] = []

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.threads.append(ThreadProfile(threading.current_thread().name, profile))
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._hook)  # type: ignore[arg-type]

    def stop(self) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]

    def attribute(self) -> Attribution:
        result = Attribution()
        functions: Counter[str] = Counter()
        with self._lock:
            threads = list(self.threads)
        for thread in threads:
            try:
                stats: dict[Func, Any] = pstats.Stats(thread.profile).stats  # type: ignore[attr-defined]
            except (TypeError, ValueError):  # a thread that never made a profiled call
                continue
            role = _role(thread.name, stats)
            result.threads[role] += 1
            memo: dict[Func, Counter[str]] = {}
            for func, (_, _, tottime, _, _) in stats.items():
                if tottime <= 0:
                    continue
                functions[_label(func)] += tottime
                for part, share in _distribution(func, stats, memo, frozenset()).items():
                    if role == MOTO_ROLE and part == HARNESS:
                        part = MOTO  # the stack's speed-ups of moto's internals run as moto
                    amount = tottime * share
                    result.total += amount
                    result.by_role[role] += amount
                    result.by_role_part[role][part] += amount
                    result.by_group[GROUPS[part]] += amount
        result.top = functions.most_common(15)
        return result


def _distribution(
    func: Func, stats: dict[Func, Any], memo: dict[Func, Counter[str]], seen: frozenset[Func]
) -> Counter[str]:
    """Shares of `func`'s own time per part: its own part, or (generic code) its callers' parts,
    weighted by the time spent in `func` under each caller."""
    part = part_of(func[0])
    if part is not None:
        return Counter({part: 1.0})
    if func in memo:
        return memo[func]
    callers = stats.get(func, (0, 0, 0.0, 0.0, {}))[4]
    weights = {c: (e[3] if isinstance(e, tuple) else 0.0) for c, e in callers.items() if c not in seen}
    total = sum(weights.values())
    result: Counter[str] = Counter()
    if total <= 0 or len(seen) > 40:
        result[GENERIC] = 1.0
    else:
        for caller, weight in weights.items():
            if weight <= 0:
                continue
            for p, share in _distribution(caller, stats, memo, seen | {func}).items():
                result[p] += share * weight / total
    memo[func] = result  # approximate under recursion (cycles are cut by `seen`), exact otherwise
    return result


def _role(thread_name: str, stats: dict[Func, Any]) -> str:
    """Who a thread works for, recognized by functions that run only in that kind of thread."""

    def has(path: str, name: str | None = None) -> bool:
        return any(path in f.replace("\\", "/") and (name is None or n == name) for f, _, n in stats)

    # The handlers' thread pools (the state table's DynamoDB calls, SqsChangeQueue's sends) work for them.
    if (
        thread_name == "ld-audiences-sqs-poller"
        or has("ld_audiences_local/stack.py", "_invoke")
        or has("ld_audiences/dynamodb_batch.py")
    ):
        return "SQS poller + sync handler"
    if has("ld_audiences_local/stack.py", "invoke_ingest") or has("ld_audiences/sqs_queue.py"):
        return "ingest (HTTP server + handler)"
    if has("ld_audiences_local/emulator"):
        return "LaunchDarkly emulator"
    if has("/werkzeug/serving.py") or has("/moto/"):
        return MOTO_ROLE
    return "other threads (server loops, monitors)"


def _label(func: Func) -> str:
    filename, line, name = func
    if filename.startswith("~"):
        return name
    short = filename.replace("\\", "/")
    for marker in ("site-packages/", "layers/shared/", "devtools/", "/lib/python3.11/", "/lib/python3"):
        if marker in short:
            short = short.split(marker, 1)[1]
            break
    return f"{short}:{line}({name})"
