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

Two more kinds of item share the table (their partition keys are not JSON arrays, so never collide):
    pk "audiences", sk ["<audience id>","<context kind>"]   what `status` lists: key, last write
    pk "launchdarkly", sk "rate-limit"                      the rate-limit window shared by invocations
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PK, SK = "pk", "sk"
# 32: a first sync writes about 4 units a change (a transactional claim and confirm, 2 units an item each),
# so an audience's shards take 1,000 x 32 / 4 = 8,000 changes a second before DynamoDB throttles one,
# above what LaunchDarkly's rate limit lets a sync reach (bench/first_sync.py measures the peak per shard).
# Changing it moves every context to another key: a new table.
SHARDS = 32

# Context item attributes.
CONTEXT_KEY = "context_key"
DESIRED_ORDER = "desired_order"  # the newest change claimed (MembershipChange.order)
DESIRED_INCLUDED = "desired_included"
APPLIED_ORDER = "applied_order"  # the newest change known to be in LaunchDarkly
LEASE_OWNER = "lease_owner"
LEASE_UNTIL = "lease_until"
EXPIRES_AT = "expires_at"  # DynamoDB TTL: set only while the context is not a member

AUDIENCES_PK = "audiences"
RATE_LIMIT_KEY = {PK: {"S": "launchdarkly"}, SK: {"S": "rate-limit"}}


def context_hash(context_key: str) -> str:
    return hashlib.sha256(context_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def partition(audience_id: str, context_kind: str, shard: int) -> str:
    # ensure_ascii=False: an id of 255 code points stays under DynamoDB's 2,048-byte partition key.
    return json.dumps([audience_id, context_kind, shard], ensure_ascii=False, separators=(",", ":"))


def context_item_key(audience_id: str, context_kind: str, context_key: str) -> dict[str, Any]:
    digest = context_hash(context_key)
    shard = int(digest[:8], 16) % SHARDS
    return {PK: {"S": partition(audience_id, context_kind, shard)}, SK: {"S": digest}}


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
        ],
        "KeySchema": [{"AttributeName": PK, "KeyType": "HASH"}, {"AttributeName": SK, "KeyType": "RANGE"}],
    }
