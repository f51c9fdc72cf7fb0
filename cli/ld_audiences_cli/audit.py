"""`ld-audiences audit`: compare an audience's desired membership (the state table) with LaunchDarkly's.

Every known context of a small audience, a uniform random sample of a large one
(`AudienceReader.sample`), each checked with LaunchDarkly's big-segment membership read,
`GET /api/v2/segments/{project}/{environment}/{segment}/contexts/{context key}` (docs/LAUNCHDARKLY.md):
`included: true` is a member; `included: false` or 404 is not. Which segment is read is found first
(`segment_lookup`): a segment that cannot be found, or found for sure, is reported as that, and no context is
asked about.

A mismatch is *drift* when the context's newest change is recorded as written to LaunchDarkly: the
segment was changed behind the sync's back (deleted, edited) or a write got lost. A mismatch whose
newest change is not written yet (queued, being written, retried or dead-lettered) is the pipeline's
to finish; it is reported apart, not counted as drift, and `--repair` reasserts it too.

For a sample, the drift rate comes with its Wilson score interval, with the finite-population
correction (a sample of the whole audience has no uncertainty left). The reads share LaunchDarkly's
account-wide rate limit with the sync's writes: they are paced by its headers and leave a reserve
of every window to the sync.

Extra members the state table does not know (added by hand in LaunchDarkly, never through Engage) are
not found: LaunchDarkly lists a big segment's members only through an asynchronous export.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any
from urllib.parse import quote

import requests

from ld_audiences.audiences import AudienceReader, ContextState
from ld_audiences.launchdarkly import LaunchDarklyClient, WriteError, json_object
from ld_audiences.rate_limit import LocalRateLimit, Window
from ld_audiences_cli.exit_status import CannotTell

REQUEST_SECONDS = 60.0  # how long one read may take, retries and rate-limit waits included
RATE_LIMIT_ROUNDS = 10  # longer rate-limit waits than the client's own, before the audit gives up


class AuditError(CannotTell):
    """LaunchDarkly cannot be read as the audit needs (token, project, segment kind)."""


class ReservedRateLimit(LocalRateLimit):
    """Paces by LaunchDarkly's headers like the sync, but stops `reserve` requests short of each window's
    end: the audit's reads spend the same account-wide budget as the sync's writes."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self._reserve = reserve

    def learn(self, window: Window) -> None:
        if window.remaining is not None:
            window = replace(window, remaining=max(window.remaining - self._reserve, 0))
        # Without a count (LaunchDarkly names only the reset) the reserve still holds: a window's size is
        # learned from the counts above, already short of the reserve.
        super().learn(window)


def get(client: LaunchDarklyClient, path: str, where: str, context_key: str | None = None) -> requests.Response | None:
    """The 200 answer, or None for 404; LaunchDarkly's rate limit waited out `RATE_LIMIT_ROUNDS` times at most."""
    keys = [context_key] if context_key else []
    for _ in range(RATE_LIMIT_ROUNDS):
        try:
            response = client.request(
                "GET", path, None, deadline=time.time() + REQUEST_SECONDS, expected={404}, context_keys=keys
            )
        except WriteError as exc:
            if exc.retry_after is not None and not exc.permanent:
                time.sleep(exc.retry_after)
                continue
            raise AuditError(f"LaunchDarkly answered {exc} reading {where}") from None
        return None if response.status_code == 404 else response
    raise AuditError(f"LaunchDarkly's rate limit kept {where} from being read")


def segments_path(project_key: str, environment_key: str, *rest: str) -> str:
    return "/api/v2/segments/" + "/".join(quote(part, safe="") for part in (project_key, environment_key, *rest))


class SegmentMembership:
    """Big-segment membership reads of one segment, through the LaunchDarkly client (retries, pacing)."""

    def __init__(self, client: LaunchDarklyClient, project_key: str, environment_key: str, key: str) -> None:
        self._client = client
        self.where = f"segment {key} in {project_key}/{environment_key}"
        self._path = segments_path(project_key, environment_key, key)

    def included(self, context_key: str) -> bool:
        path = f"{self._path}/contexts/{quote(context_key, safe='')}"
        response = get(self._client, path, self.where, context_key)
        return response is not None and json_object(response).get("included") is True


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float


def wilson_interval(successes: int, n: int, population: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval of a proportion seen in a sample of `n` drawn without replacement from
    `population`: the finite-population correction shrinks the variance by (N - n) / (N - 1), which is
    the Wilson formula with the effective sample size n (N - 1) / (N - n). A census is exact."""
    if n == 0:
        return Interval(0.0, 1.0, confidence)
    share = successes / n
    if n >= population:
        return Interval(share, share, confidence)
    effective = n * (population - 1) / (population - n)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    denominator = 1 + z * z / effective
    center = (share + z * z / (2 * effective)) / denominator
    half = z * math.sqrt(share * (1 - share) / effective + z * z / (4 * effective * effective)) / denominator
    return Interval(max(0.0, center - half), min(1.0, center + half), confidence)


@dataclass
class AuditResult:
    audience_id: str
    context_kind: str
    where: str  # the segment, in words
    population: int  # contexts the state table knows for the audience
    desired_members: int
    checked: int
    sampled: bool
    missing: list[ContextState] = field(default_factory=list)  # desired member, not in LaunchDarkly
    extra: list[ContextState] = field(default_factory=list)  # desired non-member, in LaunchDarkly
    pending: list[ContextState] = field(default_factory=list)  # differ, but their newest change is not written yet
    interval: Interval | None = None
    read_units: float = 0.0

    @property
    def drift(self) -> int:
        return len(self.missing) + len(self.extra)

    @property
    def to_repair(self) -> list[ContextState]:
        return [*self.missing, *self.extra, *self.pending]


def audit(
    reader: AudienceReader,
    membership: SegmentMembership,
    audience_id: str,
    context_kind: str,
    *,
    sample: int | None,
    rng: random.Random,
    confidence: float = 0.95,
    threads: int = 4,
    on_checked: Callable[[int, int], None] = lambda checked, total: None,
) -> AuditResult:
    """Check every context when the audience has at most `sample` of them (or `sample` is None), else a uniform
    random sample of `sample`; `on_checked` after each read, with the count so far and the number to check
    (console.Ticker thins it out)."""
    read_before = reader.usage.read_units
    counts = reader.counts(audience_id, context_kind)
    if sample is not None and counts.contexts > sample:
        sampled, contexts = True, reader.sample(audience_id, context_kind, sample, counts, rng)
    else:
        sampled, contexts = False, list(reader.contexts(audience_id, context_kind))
    with ThreadPoolExecutor(threads) as pool:
        in_launchdarkly = []
        for included in pool.map(membership.included, (c.context_key for c in contexts)):
            in_launchdarkly.append(included)
            on_checked(len(in_launchdarkly), len(contexts))
    result = AuditResult(
        audience_id=audience_id,
        context_kind=context_kind,
        where=membership.where,
        population=counts.contexts,
        desired_members=counts.members,
        checked=len(contexts),
        sampled=sampled,
    )
    for context, included in zip(contexts, in_launchdarkly, strict=True):
        if context.included == included:
            continue
        if not context.applied:
            result.pending.append(context)
        else:
            (result.missing if context.included else result.extra).append(context)
    result.interval = wilson_interval(result.drift, result.checked, result.population, confidence)
    result.read_units = reader.usage.read_units - read_before
    return result


def to_document(result: AuditResult) -> dict[str, Any]:
    """`audit --output json` (docs/CLI.md), without the segment lookup."""
    r, i = result, result.interval
    return {
        "audience_id": r.audience_id,
        "context_kind": r.context_kind,
        "population": r.population,
        "desired_members": r.desired_members,
        "checked": r.checked,
        "sampled": r.sampled,
        "missing": [c.context_key for c in r.missing],
        "extra": [c.context_key for c in r.extra],
        "not_written_yet": [c.context_key for c in r.pending],
        "drift": r.drift,
        "drift_rate": {"low": i.low, "high": i.high, "confidence": i.confidence} if r.sampled and i else None,
        "read_units": r.read_units,
    }


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def lines(result: AuditResult, *, show: int = 10) -> list[str]:
    r = result
    out = [f"audience {r.audience_id} (context kind {r.context_kind}) against LaunchDarkly {r.where}"]
    how = f"a uniform random sample of {r.checked}" if r.sampled else f"all {r.checked}"
    out.append(f"known contexts: {r.population} ({r.desired_members} desired members); checked: {how}")
    for name, found, meaning in (
        ("missing members", r.missing, "desired members LaunchDarkly does not have"),
        ("extra members", r.extra, "contexts that left the audience and LaunchDarkly still has"),
    ):
        out.append(f"{name}: {len(found)} ({meaning})")
        out += [f"  {c.context_key}" for c in found[:show]]
        if len(found) > show:
            out.append(f"  … and {len(found) - show} more")
    if r.pending:
        out.append(
            f"not written yet: {len(r.pending)} differ because their newest change is still queued, being written,"
            " retried or dead-lettered (not drift; `status` shows the queues, --repair reasserts them too)"
        )
    share = r.drift / r.checked if r.checked else 0.0
    out.append(f"drift: {r.drift} of {r.checked} checked ({_percent(share)})")
    if r.sampled and r.interval is not None:
        i = r.interval
        out.append(
            f"drift rate: {_percent(i.low)} to {_percent(i.high)} at {100 * i.confidence:g} % confidence "
            f"(Wilson score interval, finite-population corrected, sample of {r.checked} of {r.population}): "
            f"about {math.floor(i.low * r.population)} to {math.ceil(i.high * r.population)} contexts"
        )
    out.append(f"DynamoDB read units consumed: {r.read_units:g}")
    return out
