"""Queue one reassert per context of an audience: the sync writes each context's newest desired state
to LaunchDarkly again, through the normal path (ordering, leases, the rate limit and the DLQ apply).

A reassert carries no state of its own that could win: the sync claims and writes the context's state
as the table holds it when the message is handled, so a resync racing live Engage traffic writes
either the live change itself or something newer, never an older state. Members and contexts that
left are both reasserted (a context that left is removed again, in case LaunchDarkly has it).
Reasserts are idempotent: a run can be interrupted and run again, from the start or from the cursor
its progress lines print.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ld_audiences.audiences import AudienceReader, ContextState
from ld_audiences.sqs_queue import Message, SqsChangeQueue
from ld_audiences.state_table import SHARDS


@dataclass
class Progress:
    queued: int = 0
    members: int = 0
    cursor: str | None = None  # everything before it is queued; None once all is
    shards_done: int = 0  # of SHARDS
    unsent: int = 0  # messages SQS did not accept: the run stopped there


def queue_reasserts(
    queue: SqsChangeQueue,
    contexts: Iterable[ContextState],
    audience_id: str,
    audience_key: str,
    context_kind: str,
) -> int:
    """Queue a reassert for each context; returns how many SQS did not accept."""
    messages = [Message(c.reassert(audience_id, audience_key, context_kind).to_message()) for c in contexts]
    return len(queue.send_messages(messages))


def resync(
    reader: AudienceReader,
    queue: SqsChangeQueue | None,
    audience_id: str,
    audience_key: str,
    context_kind: str,
    *,
    progress: Progress | None = None,
    page_size: int = 1000,
    on_page: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Queue a reassert for every context of the audience from `progress.cursor` (the start by default), a
    page at a time, updating `progress` as it goes (what an interrupted caller still has); `queue=None` is a
    dry run (read and count only). Stops at the first page SQS did not wholly accept (`unsent`)."""
    progress = progress or Progress()
    for page in reader.pages(audience_id, context_kind, cursor=progress.cursor, limit=page_size):
        if queue is not None:
            unsent = queue_reasserts(queue, page.contexts, audience_id, audience_key, context_kind)
            if unsent:
                progress.unsent = unsent
                return progress  # the cursor still points at this page's start: rerunning from it loses nothing
        progress.queued += len(page.contexts)
        progress.members += sum(c.included for c in page.contexts)
        progress.cursor = page.cursor
        progress.shards_done = SHARDS if page.cursor is None else int(page.cursor.partition(":")[0])
        on_page(progress)
    return progress
