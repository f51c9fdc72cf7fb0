"""The layout of the DynamoDB state table, in one place: keys, attribute names, and the table definition
the SAM template, the local stack and the tests create.

One item per (audience, context kind, context key), grouped so that one audience is read with a Query:

    pk  ["<audience id>","<context kind>",<shard>]   JSON: unambiguous whatever the id holds; shard 0-31
    sk  <32 hex digits of SHA-256 of the context key>  fixed width, so any valid context key fits

DynamoDB caps a partition key value at 1,000 write units a second. A first sync of a large audience
writes well above that (claim and confirm are transactional writes, 2 units an item each), so an
audience's contexts are spread over SHARDS partition keys by the hash; a Query per shard reads them
all. The hash order is a random permutation of the contexts, which is what makes `audit --sample` a
uniform sample: any run of consecutive sort keys is one.

A context item holds the state LaunchDarkly has (written after LaunchDarkly acknowledged it). What is
still to be written lives in the audience's *pending log*, and the audience's *work item* says that it has
some and since when (`pending_log.py` has the protocol):

    pk ["<audience id>","<context kind>","pending",<p>]  sk "<received, 17 chars>#<unique>"
        one item per audience per recorded batch (p 0-3 spreads a first sync's log over four keys):
        its changes, zlib-compressed JSON
    pk ["<audience id>","<context kind>","work"]         sk "work"
        pending_seq, pending_since, pending_queue (only while changes are pending: the sparse index
        PENDING_INDEX lists the audiences with pending changes, oldest first), pending_wide (the log spans
        more than shard 0), retired_at, the audience's lease

Three more kinds of item share the table (their partition keys are not JSON arrays, so never collide):
    pk "audiences", sk ["<audience id>","<context kind>"]   what `status` lists: key, last write
    pk "launchdarkly", sk "rate-limit"                      the rate-limit window shared by invocations
    pk "launchdarkly", sk "tick"                            when the next reconcile-only invocation is due
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

PK, SK = "pk", "sk"
# 32: a first sync writes one unit a context, so an audience's shards take 32,000 contexts a second before
# DynamoDB throttles one, far above what LaunchDarkly's rate limit lets a sync reach (bench/first_sync.py
# measures the peak per partition). Changing it moves every context to another key: a new table.
SHARDS = 32
# The pending log of one audience spreads over this many partition keys when a batch brings it more than one
# log item (a first sync): about 50 bytes a change, recorded and deleted, so 4 keys take 4 x 1,000 / 0.1 =
# 40,000 changes a second. A batch's first item goes to shard 0, where a small audience's log stays.
PENDING_SHARDS = 4

# Context item attributes. The item is written once LaunchDarkly has the change, so desired and applied are
# the same change; both names stay, so that items written before the pending log read the same.
CONTEXT_KEY = "context_key"
DESIRED_ORDER = "desired_order"  # the context's newest change (MembershipChange.order)
DESIRED_INCLUDED = "desired_included"
APPLIED_ORDER = "applied_order"  # the newest change known to be in LaunchDarkly
EXPIRES_AT = "expires_at"  # DynamoDB TTL: set only while the context is not a member

# Pending log items.
ENTRIES = "entries"  # zlib-compressed JSON list of changes (`pending_log.encode`)
COUNT = "count"
AUDIENCE_KEY = "audience_key"

# Work item attributes.
PENDING_SEQ = "pending_seq"  # bumped by every recorded batch: tells a reconcile that more arrived meanwhile
PENDING_SINCE = "pending_since"  # epoch seconds: no change older than this is pending
PENDING_NEWEST = "pending_newest"  # epoch seconds the newest pending change was recorded (`debounce.py`)
PENDING_QUEUE = "pending_queue"  # the index's partition key, PENDING_QUEUE_VALUE while changes are pending
PENDING_QUEUE_VALUE = "pending"
PENDING_WIDE = "pending_wide"  # a batch recorded more than one log item: the log spans every shard
PENDING_INDEX = "pending-audiences"
RETIRED_AT = "retired_at"  # epoch seconds the audience was retired (`ld-audiences retire`): its segment is emptied
LEASE_OWNER = "lease_owner"  # the reconcile that may write this audience to LaunchDarkly, until LEASE_UNTIL
LEASE_UNTIL = "lease_until"
# A batch's few changes of an audience are held in its work item itself, one attribute each (`pending_log.py`):
# INLINE_PREFIX + when recorded + a unique suffix, the value as a log item's ENTRIES; INLINE_BYTES sums them.
INLINE_PREFIX = "i_"
INLINE_BYTES = "inline_bytes"

AUDIENCES_PK = "audiences"
RATE_LIMIT_KEY = {PK: {"S": "launchdarkly"}, SK: {"S": "rate-limit"}}
TICK_KEY = {PK: {"S": "launchdarkly"}, SK: {"S": "tick"}}


def context_hash(context_key: str) -> str:
    return hashlib.sha256(context_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# Every context item of an audience names one of its SHARDS partitions: a reconcile builds thousands a second.
@lru_cache(maxsize=4096)
def partition(audience_id: str, context_kind: str, shard: int) -> str:
    # ensure_ascii=False: an id of 255 code points stays under DynamoDB's 2,048-byte partition key.
    return json.dumps([audience_id, context_kind, shard], ensure_ascii=False, separators=(",", ":"))


def context_item_key(audience_id: str, context_kind: str, context_key: str) -> dict[str, Any]:
    return hashed_context_item_key(audience_id, context_kind, context_hash(context_key))


def hashed_context_item_key(audience_id: str, context_kind: str, digest: str) -> dict[str, Any]:
    """The key of the context item whose context key hashes to `digest` (`context_hash`)."""
    shard = int(digest[:8], 16) % SHARDS
    return {PK: {"S": partition(audience_id, context_kind, shard)}, SK: {"S": digest}}


def pending_partition(audience_id: str, context_kind: str, shard: int) -> str:
    return json.dumps([audience_id, context_kind, "pending", shard], ensure_ascii=False, separators=(",", ":"))


def work_item_key(audience_id: str, context_kind: str) -> dict[str, Any]:
    pk = json.dumps([audience_id, context_kind, "work"], ensure_ascii=False, separators=(",", ":"))
    return {PK: {"S": pk}, SK: {"S": "work"}}


def audience_of_work_item(key: dict[str, Any]) -> tuple[str, str]:
    """(audience id, context kind) of a work item's key, as the pending index returns it."""
    audience_id, context_kind, _ = json.loads(key[PK]["S"])
    return str(audience_id), str(context_kind)


def audience_partitions(audience_id: str, context_kind: str) -> list[str]:
    return [partition(audience_id, context_kind, shard) for shard in range(SHARDS)]


def audience_item_key(audience_id: str, context_kind: str) -> dict[str, Any]:
    sk = json.dumps([audience_id, context_kind], ensure_ascii=False, separators=(",", ":"))
    return {PK: {"S": AUDIENCES_PK}, SK: {"S": sk}}


def table_definition(table_name: str) -> dict[str, Any]:
    """CreateTable arguments (template.yaml's StateTable says the same; a test compares them)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": PK, "AttributeType": "S"},
            {"AttributeName": SK, "AttributeType": "S"},
            {"AttributeName": PENDING_QUEUE, "AttributeType": "S"},
            {"AttributeName": PENDING_SINCE, "AttributeType": "N"},
        ],
        "KeySchema": [{"AttributeName": PK, "KeyType": "HASH"}, {"AttributeName": SK, "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": PENDING_INDEX,
                "KeySchema": [
                    {"AttributeName": PENDING_QUEUE, "KeyType": "HASH"},
                    {"AttributeName": PENDING_SINCE, "KeyType": "RANGE"},
                ],
                # Keys only: the work item's key names the audience; everything else is read under its lease.
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }
