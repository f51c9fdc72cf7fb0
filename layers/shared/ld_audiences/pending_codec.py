"""How pending changes are stored: a JSON list of rows, zlib-compressed, in a log item's ENTRIES or a work
item's inline attribute (`pending_log.py`). An audience's target is the item's key, so rows leave it out."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence

from ld_audiences.change import MembershipChange
from ld_audiences.writers import Target

# Changes per log item: a batch's changes of one audience, split further while the compressed entries exceed
# ITEM_BYTES, so that an item stays below DynamoDB's 400 KB whatever the keys (1,000 keys of 1,024 random
# characters do not compress below it).
ITEM_CHANGES = 1000
ITEM_BYTES = 300_000


def encode(changes: Sequence[MembershipChange]) -> bytes:
    rows = [
        [c.context_key, int(c.included), c.event_time, c.message_id, int(c.reassert), c.received_at] for c in changes
    ]
    return zlib.compress(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def decode(blob: bytes, target: Target) -> list[MembershipChange]:
    rows = json.loads(zlib.decompress(blob).decode("utf-8", "surrogatepass"))
    return [
        MembershipChange.model_construct(
            audience_id=target.audience_id,
            audience_key=target.audience_key,
            context_kind=target.context_kind,
            context_key=key,
            included=bool(included),
            event_time=event_time,
            message_id=message_id,
            reassert=bool(reassert),
            received_at=received_at,
        )
        for key, included, event_time, message_id, reassert, received_at in rows
    ]


def parts(changes: Sequence[MembershipChange]) -> Iterator[tuple[Sequence[MembershipChange], bytes]]:
    """The changes in log items' worth, each with its encoding."""
    for start in range(0, len(changes), ITEM_CHANGES):
        pending = [changes[start : start + ITEM_CHANGES]]
        while pending:
            part = pending.pop()
            blob = encode(part)
            if len(blob) > ITEM_BYTES and len(part) > 1:
                middle = len(part) // 2
                pending += [part[middle:], part[:middle]]
                continue
            yield part, blob
