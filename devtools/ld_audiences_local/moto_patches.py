"""Patches that make the in-process moto behave like AWS under concurrent callers, and fast enough to keep up.

moto runs in the same process as the local stack and the tests (its backends are process-wide), so these
patch moto's classes in place. Each is idempotent; `tests/integration/test_moto_fidelity.py` pins down the
SQS ones.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)

_moto_patched = False


def prepare_moto() -> None:
    """Make the in-process moto behave like AWS under concurrent callers, and fast enough to keep up."""
    speed_up_moto_sqs()
    make_moto_sqs_thread_safe()
    make_moto_transactions_cheap()
    make_moto_dynamodb_atomic()  # last: it serializes the patched transaction too


def speed_up_moto_sqs() -> None:
    """Make moto's SQS calls cheap without changing what they answer (moto runs in this process).

    moto 5 reads the clock through a datetime round trip for every message on every walk of a
    queue, and walks the queue three times per message sent (the ContentBasedDeduplication lookup
    builds every queue attribute) and per message received (the retention check does the same):
    with 700 messages queued a ReceiveMessage took ~0.5 s, a SendMessageBatch ~0.25 s, so a local
    run fell behind and never caught up. Same values, computed directly: ~7 ms and ~20 ms.
    Idempotent; skipped when moto's internals are not the expected ones.
    """
    global _moto_patched
    if _moto_patched:
        return
    from moto.core import utils
    from moto.sqs import models

    backend = getattr(models, "SQSBackend", None)
    if not (
        getattr(models, "unix_time", None) is utils.unix_time
        and getattr(models, "unix_time_millis", None) is utils.unix_time_millis
        and backend is not None
        and hasattr(backend, "is_message_valid_based_on_retention_period")
    ):
        logger.warning("moto's SQS internals are not the expected ones: SQS calls stay slow")
        return
    slow_unix_time = utils.unix_time

    def unix_time(dt: datetime | None = None) -> float:
        return time.time() if dt is None else slow_unix_time(dt)

    def unix_time_millis(dt: datetime | None = None) -> float:
        return unix_time(dt) * 1000.0

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention_period + message.sent_timestamp / 1000 > time.time())

    setattr(models, "unix_time", unix_time)  # noqa: B010 (names moto does not export)
    setattr(models, "unix_time_millis", unix_time_millis)  # noqa: B010
    setattr(backend, "is_message_valid_based_on_retention_period", is_message_valid_based_on_retention_period)  # noqa: B010
    _moto_patched = True


def make_moto_sqs_thread_safe() -> None:
    """Make moto's SQS receives and deletes atomic per queue, as SQS's are (moto runs in this process).

    moto (5.2) deletes a message by rebuilding the queue's message list from the list it started with,
    without the lock its sends take: when a second delete and a send land meanwhile, the first delete's
    list drops the new message and brings back the other deleted one. The sync pollers delete while
    ingest sends: measured, 394 of 12,000 messages lost with four senders and two pollers, and a chaos
    run now and then ended with a member stale because its latest change was never delivered. Concurrent
    receives also race: one message handed to both pollers, or a receive failing with "Set changed size
    during iteration" after it had already hidden some messages. Both now hold the queue's own lock (a
    long poll releases it while it waits, like every waiter on that condition).
    """
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue.delete_message, "_ld_audiences_locked", False):
        return
    delete, receive = Queue.delete_message, SQSBackend.receive_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return receive(self, queue_name, *args, **kwargs)

    delete_message._ld_audiences_locked = True  # type: ignore[attr-defined]
    setattr(Queue, "delete_message", functools.wraps(delete)(delete_message))  # noqa: B010
    setattr(SQSBackend, "receive_message", functools.wraps(receive)(receive_message))  # noqa: B010


_dynamodb_lock = threading.RLock()


def make_moto_dynamodb_atomic() -> None:
    """Make moto's DynamoDB item writes atomic, as DynamoDB's are (moto runs in this process).

    moto (5.2) checks a ConditionExpression and applies the update in separate steps without a lock,
    and for an item that does not exist yet each request creates its own: two conditional updates of
    one new item from concurrent requests can both pass, and one is silently lost (measured: 7 in
    2,000 concurrent pairs). The state store relies on DynamoDB's per-item atomicity, and concurrent
    sync pollers claim the same new contexts all the time: serialize moto's item calls. Queries too: a
    Query of an index that sorts an item another request is updating fails in moto (an index key read
    between two attributes of one update), where DynamoDB sees each item whole.
    """
    from moto.dynamodb.models import DynamoDBBackend

    for name in (
        "get_item",
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
        "query",  # batch calls go through get_item, put_item and delete_item, item by item
    ):
        original = getattr(DynamoDBBackend, name, None)
        if original is None or getattr(original, "_ld_audiences_atomic", False):
            continue

        def serialized(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _dynamodb_lock:
                return _original(*args, **kwargs)

        serialized._ld_audiences_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, functools.wraps(original)(serialized))


def make_moto_transactions_cheap() -> None:
    """Make moto's TransactWriteItems cost what its items cost, not what the table holds.

    moto (5.2) backs up the whole table with `copy.deepcopy` once per item of a transaction, to roll
    back if one fails: a 100-item transaction on a table of a few thousand items took over a second
    (measured: 10-13 ms an item, growing with the table), and the state store claims and confirms in
    100-item transactions. This backs up only the items the transaction touches and restores those on
    failure; moto's own code still checks every condition and applies every update, so the answers,
    cancellation reasons included, are moto's. Idempotent.
    """
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "_ld_audiences_cheap", False):
        return

    class _NoTableCopies:
        """moto's module-level `copy` while a transaction runs: tables are not copied (we keep items)."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        with _dynamodb_lock:
            backups = _touched_items(self, transact_items)
            module_copy, models.copy = models.copy, _NoTableCopies  # type: ignore[assignment]
            try:
                original(self, transact_items)
            except Exception:
                for table_name, key, attributes in reversed(backups):
                    if attributes is not None:
                        self.put_item(table_name, attributes)
                    elif self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                raise
            finally:
                models.copy = module_copy

    transact_write_items._ld_audiences_cheap = True  # type: ignore[attr-defined]
    setattr(DynamoDBBackend, "transact_write_items", functools.wraps(original)(transact_write_items))  # noqa: B010


def _touched_items(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    """(table, key, the item's attributes now or None) for every item a transaction names."""
    backups = []
    for entry in transact_items:
        op = next(iter(entry.values()), None)
        if not isinstance(op, dict) or op.get("TableName") not in backend.tables:
            continue
        table = backend.tables[op["TableName"]]
        key = op.get("Key")
        if key is None and isinstance(op.get("Item"), dict):
            names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
            key = {name: op["Item"][name] for name in names if name in op["Item"]}
        try:
            current = backend.get_item(op["TableName"], key)
        except Exception:  # noqa: S112 - an invalid key: moto refuses the whole transaction unwritten
            continue
        attributes = copy.deepcopy(current.to_json()["Attributes"]) if current is not None else None
        backups.append((op["TableName"], key, attributes))
    return backups
