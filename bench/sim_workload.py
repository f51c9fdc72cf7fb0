"""What arrives in a simulated sync (bench/first_sync.py): which change comes n-th, for how many audiences.

`audiences` audiences share `changes` new members. `interleaved`: member i of every audience, then member
i + 1 of every one (what a daily recompute of many audiences looks like to the queue: no batch holds much
of one audience); `sequential`: one audience's members, then the next audience's (a first sync of one
big audience is the case of one). Every change adds its member; the final state is known without the
product: audience a holds user-0 … user-(m_a - 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

INTERLEAVED, SEQUENTIAL = "interleaved", "sequential"
AUDIENCE_ID = "aud_first_sync"  # the audience of a one-audience run (and of the resync)
AUDIENCE_KEY = "first_sync"


def audience_id(audience: int) -> str:
    return AUDIENCE_ID if audience == 0 else f"aud_{audience:05d}"


def place(index: int, changes: int, audiences: int, pattern: str) -> tuple[int, int]:
    """(audience, member) of the index-th change."""
    if pattern == INTERLEAVED:
        return index % audiences, index // audiences
    per = math.ceil(changes / audiences)
    return index // per, index % per


def members_of(audience: int, changes: int, audiences: int, pattern: str) -> int:
    if pattern == INTERLEAVED:
        return max(0, math.ceil((changes - audience) / audiences))
    per = math.ceil(changes / audiences)
    return max(0, min(per, changes - audience * per))


def body(index: int, changes: int = 1, audiences: int = 1, pattern: str = INTERLEAVED) -> str:
    """The message ingest queues for the index-th change (MembershipChange.to_message), made without the model."""
    audience, member = place(index, changes, audiences, pattern)
    micros = f"{index % 1_000_000:06d}"
    return (
        f'{{"v":1,"audience_id":"{audience_id(audience)}","audience_key":"{AUDIENCE_KEY}","context_kind":"user",'
        f'"context_key":"user-{member:08d}","included":true,'
        f'"event_time":"2026-11-20T10:{index // 60_000_000 % 60:02d}:{index // 1_000_000 % 60:02d}.{micros}000Z",'
        f'"message_id":"personas_{index:010d}"}}'
    )


def exact(segments: Mapping[str, set[str]], changes: int, audiences: int, pattern: str) -> bool:
    """Whether LaunchDarkly's segments hold exactly the members the changes add."""
    for audience in range(audiences):
        count = members_of(audience, changes, audiences, pattern)
        members = segments.get(audience_id(audience), set())
        if len(members) != count or any(f"user-{i:08d}" not in members for i in range(count)):
            return False
    return set(segments) <= {audience_id(a) for a in range(audiences)}


def optimum_requests(changes: int, audiences: int, pattern: str, chunk_size: int) -> int:
    """One request per chunk of each audience's members: what no sync can go below."""
    return sum(math.ceil(members_of(a, changes, audiences, pattern) / chunk_size) for a in range(audiences))
