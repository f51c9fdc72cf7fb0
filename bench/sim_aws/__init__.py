"""DynamoDB and SQS answered in process, behind real boto3 clients: the real client path without a network.

A botocore `before-send` handler answers each request the client has fully built (serialized, signed) with
a response botocore then parses, so the product's clients do all their own work — that is the CPU the
first-sync issue found dominant — while the answer costs no network. The answers follow DynamoDB's
semantics for what the product uses: `GetItem`, `PutItem`, `UpdateItem` (SET / REMOVE / ADD,
`if_not_exists`, `+` / `-`, every `ReturnValues`), `DeleteItem`; conditions with comparisons,
AND / OR / NOT, parentheses, attribute_(not_)exists, begins_with, BETWEEN, and
`ReturnValuesOnConditionCheckFailure`; `TransactWriteItems` (all or nothing, `CancellationReasons`, one
item once); `BatchWriteItem` and `BatchGetItem`; `Query` of the table or of a keys-only global secondary
index (key conditions, filters, COUNT, projections, either direction, pages of 1 MB or `Limit`,
`ReturnConsumedCapacity`). Values are S, N, B and BOOL. `tests/unit/test_sim_aws.py` checks the answers
against moto's.

What AWS bills is counted (`Usage`): write units (1 a started KB of the larger of the old and new item,
twice that in a transaction, the existing item's size for a failed condition; 2 an item for a cancelled
transaction), read units (1 a started 4 KB, half for an eventually consistent read; a Query's items
summed first), and index writes (an index entry put, deleted, or both when its keys change; 1 unit a
started KB of the entry, also in a transaction, since DynamoDB propagates index updates outside it).

What AWS throttles is enforced, per second of the `clock` (the simulation's virtual time), for the table
and for each index separately, from DynamoDB's documented on-demand limits:

* a partition key value serves 3,000 read units or 1,000 write units a second, or a linear combination
  (r/3,000 + w/1,000 <= 1) — DynamoDB splits hot partitions over time ("split for heat"); that is not
  modelled, so a key stays at this limit;
* the table (or index) serves `initial_read_units` / `initial_write_units` a second, or a linear
  combination: 12,000 / 4,000 for a new on-demand table, its warm throughput for one created warm. The
  ceiling follows traffic: twice the highest read (write) units of any one second at least 30 minutes
  earlier, when that is higher ("up to double the previous peak within 30 minutes"). Throttling itself
  raises no ceiling; DynamoDB's account-level quotas (40,000 a table by default) are not modelled.

A throttled request consumes nothing. A single-item call then fails with HTTP 400
`ProvisionedThroughputExceededException` (ThrottlingReasons `TableWriteKeyRangeThroughputExceeded` and
the like) when a partition key is over its limit, and `ThrottlingException` when the table is over its
ceiling: the DynamoDB Developer Guide's "Error handling" page documents ThrottlingException for
data-plane calls of on-demand tables whose request rate is too high, and the ThrottlingReason reference
documents KeyRangeThroughputExceeded for partition keys in both capacity modes; no documented reason
names the ceiling of on-demand scaling, so that answer carries none. In `TransactWriteItems` a throttled
item cancels the transaction: `TransactionCanceledException` with reason `ThrottlingError` for it, `None`
for the others (the TransactWriteItems reference). `BatchWriteItem` and `BatchGetItem` return throttled
items in `UnprocessedItems` / `UnprocessedKeys`, and fail with the throttling exception when every item
is throttled. botocore's standard retry mode retries both exceptions (not a cancelled transaction, not
unprocessed items: those are the product's); `attach(sleep=...)` makes its backoff wait on the
simulation's clock.

Only counted, not enforced: item and request size limits beyond key sizes, the 10 GB partition, burst
capacity, provisioned mode, and anything of latency (`attach(latency=...)` is the simulation's).

SQS: `SendMessage(Batch)` and `ChangeMessageVisibilityBatch` on queues the simulation owns.

Each answer may cost virtual time (`latency`): the simulation passes a function that blocks the calling
task; the answering itself is never counted as the product's CPU (`uncounted`).

One module per concern: `values` (the wire format), `expressions` (conditions and updates), `tables`
(items and indexes), `query`, `throughput` (bills and throttling), `dynamodb` (the operations), `sqs`,
`botocore_answers` (`attach`).
"""

from bench.sim_aws.botocore_answers import attach
from bench.sim_aws.dynamodb import InProcessDynamoDB
from bench.sim_aws.sqs import InProcessSqs, SentMessage
from bench.sim_aws.throughput import Usage

__all__ = ["InProcessDynamoDB", "InProcessSqs", "SentMessage", "Usage", "attach"]
