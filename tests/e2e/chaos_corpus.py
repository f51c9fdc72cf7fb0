"""A deterministic corpus of Engage audience traffic for the chaos test, and its ground truth.

Everything here is independent of the product's code: the events are built as Engage sends them
(docs/DESIGN.md, "What Engage sends") and the expected segments are computed from the
events exactly as they are posted, with a timestamp parser and membership rules of this module's own.

The corpus is built so that no two events of one (audience, user) share an instant with different
membership values: the latest event time alone decides, and the ground truth needs no tie-break rule.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.segment_events import engage_event

KSUID_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
NS = 1_000_000_000
# Offsets Engage timestamps can carry besides "Z" (as sent by sources in other time zones).
OFFSETS = ("+00:00", "+02:00", "-05:00", "+05:30", "-09:30", "+14:00", "-12:00")


@dataclass(frozen=True)
class Audience:
    audience_id: str  # context.personas.computation_id
    key: str  # context.personas.computation_key
    computation_class: str  # "audience" or "journey_step"


AUDIENCES = (
    Audience("aud_2fK9chaosPowerUsers", "power_users", "audience"),
    Audience("aud_2fK9chaosChurnRisk", "churn_risk", "audience"),
    Audience("aud_2fK9chaosTrialExpiring", "trial_expiring_soon", "audience"),
    Audience("aud_2fK9chaosVipSpenders", "vip_spenders", "audience"),
    Audience("jny_2fK9chaosOnboardingStep2", "onboarding_journey_step_2", "journey_step"),
)

# ---------------------------------------------------------------------------------------- ground truth

_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant_ns(value: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp (all nine fractional digits kept)."""
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise ValueError(f"not a corpus timestamp: {value!r}")
    *fields_, fraction, zone = match.groups()
    moment = datetime(*map(int, fields_), tzinfo=UTC)  # type: ignore[misc]
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * NS + int((fraction or "").ljust(9, "0"))


def membership(event: dict[str, Any]) -> tuple[str, str, bool] | None:
    """(audience id, user id, included) of an audience event; None for an event that is not one."""
    personas = (event.get("context") or {}).get("personas") or {}
    klass = personas.get("computation_class")
    if klass not in ("audience", "journey_step"):
        return None
    key = personas["computation_key"]
    source = event.get("traits") if event.get("type") == "identify" else event.get("properties")
    value = (source or {}).get(key)
    if value is None and klass == "journey_step":
        value = True  # a journey step event without the flag: the profile entered the step
    if isinstance(value, str):
        value = {"true": True, "false": False}[value.lower()]
    if not isinstance(value, bool):
        raise ValueError(f"the corpus holds only valid membership values: {event['messageId']}")
    return personas["computation_id"], event["userId"], value


def ground_truth(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Members per audience id: for each (audience, user) the value of its latest event time.

    Raises if two events of one (audience, user) share an instant but not a value (the corpus is
    built so that this never happens: no tie-break rule is needed here)."""
    latest: dict[tuple[str, str], tuple[int, bool]] = {}
    at: dict[tuple[str, str, int], bool] = {}
    for event in events:
        found = membership(event)
        if found is None:
            continue
        audience, user, included = found
        moment = instant_ns(event["timestamp"])
        if at.setdefault((audience, user, moment), included) != included:
            raise ValueError(f"conflicting values at one instant for {(audience, user)}")
        seen = latest.get((audience, user))
        if seen is None or moment > seen[0]:
            latest[(audience, user)] = (moment, included)
    members: dict[str, set[str]] = {a.audience_id: set() for a in AUDIENCES}
    for (audience, user), (_moment, included) in latest.items():
        if included:
            members[audience].add(user)
    return members


# ---------------------------------------------------------------------------------------- the corpus


@dataclass
class Request:
    """One HTTP request as Segment would send it, and what the ingest endpoint must answer."""

    path: str  # "/events" or "/v1/batch"
    body: bytes  # as sent (gzip-compressed when `gzip`)
    gzip: bool
    basic_auth: bool
    events: int
    accepted: int  # audience events in it
    skipped: int  # events that are not audience events
    shape: str  # "single", "array" or "batch"
    retry: bool = False  # a repeat of an earlier request (a Segment retry)


@dataclass
class Corpus:
    events: list[dict[str, Any]]  # shuffled: membership events, Engage duplicates, re-deliveries, others
    expected: dict[str, set[str]]  # audience id → members, from the posted events
    users: int
    membership_events: int  # distinct membership events, before duplication
    engage_duplicates: int  # same user and instant, another messageId and anonymousId
    redeliveries: int  # exact copies (same messageId)
    other_events: int  # computed traits and plain tracks: acknowledged and skipped
    requests: list[Request] = field(default_factory=list)

    @property
    def audience_events(self) -> int:
        return self.membership_events + self.engage_duplicates + self.redeliveries


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def ksuid(self, prefix: str = "personas_") -> str:
        while True:
            value = prefix + "".join(self._rng.choice(KSUID_ALPHABET) for _ in range(27))
            if value not in self._seen:
                self._seen.add(value)
                return value

    def uuid(self) -> str:
        return "%08x-%04x-4%03x-%04x-%012x" % (  # noqa: UP031 (fixed-width hex fields)
            self._rng.getrandbits(32),
            self._rng.getrandbits(16),
            self._rng.getrandbits(12),
            0x8000 | self._rng.getrandbits(14),
            self._rng.getrandbits(48),
        )


def format_instant(ns: int, offset: str) -> str:
    """An instant (ns since the epoch) as RFC 3339 with nine fractional digits, in `offset`'s zone."""
    seconds, fraction = divmod(ns, NS)
    if offset == "Z":
        local, suffix = datetime.fromtimestamp(seconds, UTC), "Z"
    else:
        sign = 1 if offset[0] == "+" else -1
        delta = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        local, suffix = datetime.fromtimestamp(seconds, UTC) + delta, offset
    return f"{local:%Y-%m-%dT%H:%M:%S}.{fraction:09d}{suffix}"


def _zone(rng: random.Random) -> str:
    return "Z" if rng.random() < 0.7 else rng.choice(OFFSETS)


def _user_ids(rng: random.Random, count: int, ids: _Ids) -> list[str]:
    users: list[str] = []
    for i in range(count):
        style = i % 3
        if style == 0:
            users.append(f"user-{i:05d}")
        elif style == 1:
            users.append(ids.uuid())
        else:
            users.append(f"member.{i}+tag@example.com")
    rng.shuffle(users)
    return users


def _membership_value(audience: Audience, included: bool, rng: random.Random) -> Any:
    if audience.computation_class != "journey_step":
        return included
    if included and rng.random() < 0.1:
        return ...  # no flag at all: entered the step
    text = "true" if included else "false"
    return rng.choice((text, text, text, text.upper(), text.capitalize()))


def _audience_event(
    audience: Audience,
    user: str,
    included: bool,
    ns: int,
    rng: random.Random,
    ids: _Ids,
) -> dict[str, Any]:
    event = engage_event(
        type_=rng.choice(("identify", "track")),
        audience_key=audience.key,
        audience_id=audience.audience_id,
        computation_class=audience.computation_class,
        value=_membership_value(audience, included, rng),
        user_id=user,
        anonymous_id=ids.uuid(),
        email=f"{user.split('@')[0]}@mail.example.org" if rng.random() < 0.5 else None,
        timestamp=format_instant(ns, _zone(rng)),
        message_id=ids.ksuid(),
    )
    if event["type"] == "track":
        event["event"] = "Audience Entered" if included else "Audience Exited"
    event["context"]["personas"]["space_id"] = "spa_2fK9chaos"
    if rng.random() < 0.3:
        # Engage's own fields; `timestamp` is the event time, `receivedAt` only when it travelled.
        event["originalTimestamp"] = event["timestamp"]
        event["receivedAt"] = format_instant(ns + rng.randint(1, 90) * NS, "Z")
    return event


def _other_event(user: str, ns: int, rng: random.Random, ids: _Ids) -> dict[str, Any]:
    if rng.random() < 0.5:
        # A computed trait: Engage sends it the same way, but it is not an audience.
        event = engage_event(
            type_="identify",
            audience_key="lifetime_value",
            audience_id="ctr_2fK9chaosLifetimeValue",
            computation_class="trait",
            value=rng.randint(0, 5000),
            user_id=user,
            timestamp=format_instant(ns, "Z"),
            message_id=ids.ksuid(),
        )
        event["context"]["personas"]["space_id"] = "spa_2fK9chaos"
        return event
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": ids.ksuid("ajs-next-"),
        "userId": user,
        "timestamp": format_instant(ns, "Z"),
        "sentAt": None,
        "properties": {"total": rng.randint(1, 300), "currency": "EUR"},
        "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"}},
    }


def build_corpus(
    seed: int,
    *,
    users: int = 300,
    min_events: int = 5000,
    duplicate_rate: float = 0.08,
    redelivery_rate: float = 0.04,
    other_rate: float = 0.03,
) -> Corpus:
    rng = random.Random(seed)
    ids = _Ids(rng)
    start = instant_ns("2026-11-01T00:00:00Z")
    user_ids = _user_ids(rng, users, ids)

    base: list[dict[str, Any]] = []
    final: dict[tuple[str, str], bool] = {}
    last_ns: dict[tuple[str, str], int] = {}  # the next free instant of each (audience, user)
    # Round the users (a second round only for the first few, if one round falls short), stop at the minimum.
    for user in itertools.cycle(user_ids):
        if len(base) >= min_events:
            break
        for audience in rng.sample(AUDIENCES, rng.randint(2, 4)):
            pair = (audience.audience_id, user)
            ns = start + rng.randint(0, 20 * 24 * 3600) * NS + rng.randint(0, NS - 1)
            ns = max(ns, last_ns.get(pair, ns))
            included = final.get(pair, rng.random() < 0.5)
            for _flip in range(rng.randint(3, 8)):
                # Usually a flip; sometimes a recomputation that repeats the current value.
                included = (not included) if rng.random() < 0.85 else included
                base.append(_audience_event(audience, user, included, ns, rng, ids))
                final[pair] = included
                # Strictly later: hours apart, or only nanoseconds (ordering must keep all nine digits).
                ns += rng.choice((rng.randint(1, 999), rng.randint(1, 10**6), rng.randint(NS, 6 * 3600 * NS)))
            last_ns[pair] = ns

    events = list(base)
    duplicates = 0
    for event in base:
        if rng.random() < duplicate_rate:
            # Engage sends one event per identifier of the profile: same user and time, another id.
            twin = copy.deepcopy(event)
            twin["messageId"] = ids.ksuid()
            twin["anonymousId"] = ids.uuid()
            if rng.random() < 0.3:
                # The same instant written in another zone.
                twin["timestamp"] = format_instant(instant_ns(event["timestamp"]), rng.choice(OFFSETS))
            events.append(twin)
            duplicates += 1
    others = [_other_event(rng.choice(user_ids), start, rng, ids) for _ in range(int(len(base) * other_rate))]
    redelivered = [copy.deepcopy(e) for e in events if rng.random() < redelivery_rate]
    events.extend(redelivered)
    events.extend(others)
    rng.shuffle(events)

    expected = ground_truth(events)
    # Cross-check the two independent views: the generator's final values and the posted events.
    for (audience_id, user), included in final.items():
        assert (user in expected[audience_id]) == included, (audience_id, user)

    corpus = Corpus(
        events=events,
        expected=expected,
        users=users,
        membership_events=len(base),
        engage_duplicates=duplicates,
        redeliveries=len(redelivered),
        other_events=len(others),
    )
    corpus.requests = _requests(events, rng)
    return corpus


# ---------------------------------------------------------------------------------------- requests


def _sizes(rng: random.Random, total: int) -> Iterator[tuple[str, int]]:
    """Request shapes and sizes: single events, Webhooks (Actions) arrays, Tracking API batches."""
    left = total
    while left > 0:
        roll = rng.random()
        if roll < 0.4:
            shape, size = "single", 1
        elif roll < 0.75:
            shape = "array"
            size = int(rng.choices((rng.uniform(2, 20), rng.uniform(20, 150), rng.uniform(150, 900)), (10, 7, 3))[0])
        else:
            shape, size = "batch", int(rng.choice((rng.uniform(2, 20), rng.uniform(20, 250))))
        size = min(size, left)
        left -= size
        yield shape, size


def _encode(shape: str, events: list[dict[str, Any]], rng: random.Random) -> tuple[str, Any]:
    if shape == "single":
        return rng.choice(("/events", "/events", "/v1/batch")), events[0]
    if shape == "array":
        return "/events", events
    # The HTTP Tracking API's shape, as segment-analytics-python sends it.
    return "/v1/batch", {"batch": events, "sentAt": None, "writeKey": "<redacted>"}


def _requests(events: list[dict[str, Any]], rng: random.Random) -> list[Request]:
    requests: list[Request] = []
    position = 0
    for shape, size in _sizes(rng, len(events)):
        chunk = events[position : position + size]
        position += size
        path, payload = _encode(shape, chunk, rng)
        raw = json.dumps(payload, separators=(",", ":") if rng.random() < 0.5 else None).encode()
        compressed = rng.random() < 0.3
        accepted = sum(1 for e in chunk if membership(e) is not None)
        requests.append(
            Request(
                path=path,
                body=gzip.compress(raw, mtime=0) if compressed else raw,
                gzip=compressed,
                basic_auth=rng.random() < 0.5,
                events=len(chunk),
                accepted=accepted,
                skipped=len(chunk) - accepted,
                shape=shape,
            )
        )
    # Segment retries whole requests (a timeout or a 5xx on its side): the same bytes, some time later.
    retried = sorted(rng.sample(range(len(requests)), k=max(1, len(requests) // 12)))
    after: dict[int, list[int]] = {}
    for index in retried:
        after.setdefault(rng.randint(index, len(requests) - 1), []).append(index)
    ordered: list[Request] = []
    for position, request in enumerate(requests):
        ordered.append(request)
        ordered.extend(replace(requests[index], retry=True) for index in after.get(position, []))
    return ordered
