"""The limits ingest enforces fit what comes after it: the largest change it can accept, or could accept
before a limit was lowered, fits an SQS batch and the state table's partition key, whatever characters it
holds."""

from __future__ import annotations

import json

from ld_audiences import limits
from ld_audiences.change import MembershipChange

# Escaped as two \uXXXX sequences on the queue (12 bytes); 4 bytes of UTF-8 in the state table.
ASTRAL = "\U0010fffd"
# Escaped as \" in JSON: 2 bytes.
QUOTE = '"'


def largest_change(char: str) -> MembershipChange:
    return MembershipChange(
        audience_id=char * limits.MAX_QUEUED_AUDIENCE_ID,
        audience_key=char * limits.MAX_AUDIENCE_KEY,
        context_kind="k" * limits.MAX_CONTEXT_KIND,
        context_key=char * limits.MAX_CONTEXT_KEY,
        included=False,
        event_time="9999-12-31T23:59:59.999999999Z",
        message_id=char * limits.MAX_MESSAGE_ID,
    )


def test_ten_of_the_largest_changes_fit_one_send_message_batch() -> None:
    for char in (ASTRAL, QUOTE, "\uffff"):
        body = largest_change(char).to_message().encode()
        assert len(body) * limits.SQS_BATCH_ENTRIES <= limits.SQS_BATCH_BYTES, char


def test_the_largest_audience_id_and_kind_fit_the_state_tables_partition_key() -> None:
    # The partition key holds the audience id and the context kind as JSON without ASCII escaping; control
    # characters (escaped to six bytes) are refused at ingest, so no code point takes more than four.
    for char in (ASTRAL, QUOTE):
        key = json.dumps([char * limits.MAX_QUEUED_AUDIENCE_ID, "k" * limits.MAX_CONTEXT_KIND], ensure_ascii=False)
        assert len(key.encode()) <= limits.DYNAMODB_PARTITION_KEY_BYTES - 900  # room for a shard suffix
    assert limits.key_defect("a\x00b") is not None  # what the four-byte bound relies on


def test_changes_queued_before_audience_ids_were_limited_to_128_still_read() -> None:
    queued = largest_change("i").to_message()
    assert len(MembershipChange.from_message(queued).audience_id) == 255 > limits.MAX_AUDIENCE_ID
