"""The hand-made mutants of the core (issue 19, item 7): each looks like a real bug, and the module's own fast
unit tests must fail with it. `python -m tests.unit.mutants [ID ...]` applies each mutant in turn, runs those
tests, restores the module, and rewrites tests/unit/MUTANTS.md (all mutants only) with the test that killed
each. A survivor is a missing test. Never run it beside another test run of the same checkout: the module is
mutated on disk while its tests run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers/shared/ld_audiences"
TABLE = Path(__file__).with_name("MUTANTS.md")
RECONCILE = ("test_reconciler.py", "test_reconcile_plan.py")
PENDING = ("test_pending_log.py",)


class Mutant(NamedTuple):
    name: str
    module: str
    bug: str
    tests: tuple[str, ...]  # under tests/unit
    original: str
    mutated: str


MUTANTS = [
    # reconcile.py
    Mutant(
        "R1",
        "reconcile.py",
        "chunk slices overlap",
        RECONCILE,
        "yield items[start : start + size]",
        "yield items[start : start + size + 1]",
    ),
    Mutant(
        "R2",
        "reconcile.py",
        "the oldest pending change wins",
        RECONCILE,
        "if current is None or change.order > current.order:",
        "if current is None or change.order < current.order:",
    ),
    Mutant(
        "R3",
        "reconcile.py",
        "a duplicate of what LaunchDarkly has is written again",
        RECONCILE,
        "if fresh is not None and (state is None or fresh.order > state.order):",
        "if fresh is not None and (state is None or fresh.order >= state.order):",
    ),
    Mutant(
        "R4",
        "reconcile.py",
        "a recheck loses the tie to a plain change of equal order",
        RECONCILE,
        "elif reassert is not None and state is not None:",
        "elif reassert is not None and state is not None and fresh is None:",
    ),
    Mutant(
        "R5",
        "reconcile.py",
        "a second recheck of a context is never resolved",
        RECONCILE,
        "if key in reasserts:",
        "if False:",
    ),
    Mutant(
        "R6",
        "reconcile.py",
        "retirement removes contexts that are no members",
        RECONCILE,
        "if state is None or not state.included or change.context_key in removing:",
        "if state is None or change.context_key in removing:",
    ),
    Mutant(
        "R7",
        "reconcile.py",
        "a retirement older than the member's change orders before it",
        RECONCILE,
        'event_time = max(format_time(datetime.fromtimestamp(retired_at, UTC)), state.order.partition("|")[0])',
        "event_time = format_time(datetime.fromtimestamp(retired_at, UTC))",
    ),
    Mutant(
        "R8",
        "reconcile.py",
        "isolation drops a key between the halves",
        RECONCILE,
        "for half in (chunk[:middle], chunk[middle:]):",
        "for half in (chunk[:middle], chunk[middle + 1 :]):",
    ),
    Mutant("R9", "reconcile.py", "isolation without a budget", RECONCILE, "        budget[0] -= 2\n", ""),
    Mutant(
        "R10",
        "reconcile.py",
        "a token refused after a fresh read is never final",
        RECONCILE,
        "if exc.status in TOKEN_REFUSED and not self._token_refusal_is_final:",
        "if exc.status in TOKEN_REFUSED:",
    ),
    Mutant(
        "R11",
        "reconcile.py",
        "an unknown outcome does not keep the lease",
        RECONCILE,
        "            work.unknown = True\n",
        "",
    ),
    Mutant(
        "R12",
        "reconcile.py",
        "unknown outcome and failure pause swapped",
        RECONCILE,
        "hold = lease.until if work.unknown else self._clock() + FAILURE_PAUSE_SECONDS if work.failed else None",
        "hold = lease.until if work.failed else self._clock() + FAILURE_PAUSE_SECONDS if work.unknown else None",
    ),
    Mutant(
        "R13",
        "reconcile.py",
        "a change the DLQ refused is resolved anyway (lost)",
        RECONCILE,
        "if self._dead_letters.send(record, reason, detail):",
        "if self._dead_letters.send(record, reason, detail) or True:",
    ),
    Mutant(
        "R14",
        "reconcile.py",
        "a write that could not be recorded is resolved",
        RECONCILE,
        "            if change.context_key in unrecorded:\n                continue",
        "            pass",
    ),
    Mutant(
        "R15",
        "reconcile.py",
        "a failing summary fails the round",
        RECONCILE,
        "        except Exception:  # the summary",
        "        except ValueError:  # the summary",
    ),
    Mutant(
        "R16",
        "reconcile.py",
        "chunks go on after a refused token / failure / spent window",
        RECONCILE,
        "            if work.stopped:\n                return\n\n    def _write(",
        "\n    def _write(",
    ),
    Mutant(
        "R17",
        "reconcile.py",
        "recheck delay beyond SQS's longest",
        RECONCILE,
        "min(lease_left + delay, MAX_DELAY_SECONDS)",
        "lease_left + delay",
    ),
    Mutant(
        "R18",
        "reconcile.py",
        "an item partly written is deleted",
        RECONCILE,
        "if all(c.context_key in work.resolved for c in item.changes):",
        "if any(c.context_key in work.resolved for c in item.changes):",
    ),
    Mutant(
        "R19",
        "reconcile.py",
        "a 404 is isolated like a 400",
        RECONCILE,
        "if failure.status != 400 or len(chunk) == 1",
        "if failure.status not in (400, 404) or len(chunk) == 1",
    ),
    # context_state.py
    Mutant(
        "C1",
        "context_state.py",
        "members expire, leavers do not",
        ("test_context_state.py",),
        "            if not change.included:\n",
        "            if change.included:\n",
    ),
    Mutant(
        "C2",
        "context_state.py",
        "a claimed, never written change read as LaunchDarkly's",
        ("test_context_state.py",),
        'applied = item.get(t.APPLIED_ORDER, {}).get("S")',
        'applied = item.get(t.DESIRED_ORDER, {}).get("S")',
    ),
    Mutant(
        "C3",
        "context_state.py",
        "summary takes the last, not the newest",
        ("test_context_state.py",),
        "newest = max(written, key=lambda c: c.order)",
        "newest = written[-1]",
    ),
    Mutant(
        "C4",
        "context_state.py",
        "written items carry no applied order",
        ("test_context_state.py",),
        't.APPLIED_ORDER: {"S": change.order},',
        "",
    ),
    # dynamodb_batch.py
    Mutant(
        "D1",
        "dynamodb_batch.py",
        "write groups overlap",
        ("test_dynamodb_batch.py",),
        "min(i + WRITE_ITEMS, len(requests))",
        "min(i + WRITE_ITEMS + 1, len(requests))",
    ),
    Mutant(
        "D2",
        "dynamodb_batch.py",
        "a failed call's writes reported as done",
        ("test_dynamodb_batch.py",),
        "return pending\n            unprocessed",
        "return []\n            unprocessed",
    ),
    Mutant(
        "D3",
        "dynamodb_batch.py",
        "the processed ones are sent again",
        ("test_dynamodb_batch.py",),
        "if _identity(requests[i]) in left]",
        "if _identity(requests[i]) not in left]",
    ),
    Mutant(
        "D4",
        "dynamodb_batch.py",
        "eventually consistent state reads",
        ("test_dynamodb_batch.py",),
        "*, consistent: bool = True",
        "*, consistent: bool = False",
    ),
    Mutant(
        "D5",
        "dynamodb_batch.py",
        "a partial read returned as complete",
        ("test_dynamodb_batch.py",),
        '        raise StateError("UnprocessedKeys")',
        "        return found",
    ),
    Mutant(
        "D6",
        "dynamodb_batch.py",
        "backoff does not grow",
        ("test_dynamodb_batch.py",),
        "random.uniform(0, BACKOFF * 2**round_)",
        "random.uniform(0, BACKOFF)",
    ),
    # audiences.py
    Mutant(
        "A1",
        "audiences.py",
        "listing skips every other shard",
        ("test_audiences.py",),
        'shard, after = shard + 1, ""',
        'shard, after = shard + 2, ""',
    ),
    Mutant(
        "A2",
        "audiences.py",
        "members counted as contexts",
        ("test_audiences.py",),
        'members += response["Count"]',
        'members += response["ScannedCount"]',
    ),
    Mutant(
        "A3",
        "audiences.py",
        "sample quota one over",
        ("test_audiences.py",),
        "for i in by_remainder[: size - sum(quotas)]:",
        "for i in by_remainder[: size - sum(quotas) + 1]:",
    ),
    Mutant(
        "A4",
        "audiences.py",
        "cursor past the last shard taken",
        ("test_audiences.py",),
        "int(shard) < t.SHARDS)",
        "int(shard) <= t.SHARDS)",
    ),
    Mutant(
        "A5",
        "audiences.py",
        "a pending change shown as applied",
        ("test_audiences.py",),
        'applied=item.get(t.APPLIED_ORDER, {}).get("S") == order,',
        "applied=t.APPLIED_ORDER in item,",
    ),
    # outcomes.py / requeue.py
    Mutant(
        "O1",
        "outcomes.py",
        "a merge forgets a token refusal",
        ("test_requeue.py",),
        "self.token_refused = self.token_refused or other.token_refused",
        "self.token_refused = other.token_refused",
    ),
    Mutant(
        "O2",
        "outcomes.py",
        "the latest tick wins",
        ("test_requeue.py", "test_reconciler.py"),
        "self.next_tick = seconds if self.next_tick is None else min(self.next_tick, seconds)",
        "self.next_tick = seconds if self.next_tick is None else max(self.next_tick, seconds)",
    ),
    Mutant(
        "O3",
        "outcomes.py",
        "wrong records back to SQS",
        ("test_requeue.py",),
        "if o.result == RETRY]",
        "if o.result != RECORDED]",
    ),
    Mutant(
        "Q1",
        "requeue.py",
        "recheck delay rounded down",
        ("test_requeue.py",),
        "Message(change.to_message(), math.ceil(delay))",
        "Message(change.to_message(), int(delay))",
    ),
    Mutant(
        "Q2",
        "requeue.py",
        "lost rechecks counted",
        ("test_requeue.py",),
        "    return Settlement(report.failed, len(reasserts) - len(lost), tick)",
        "    return Settlement(report.failed, len(reasserts), tick)",
    ),
    Mutant(
        "Q3",
        "requeue.py",
        "continue-now tick delayed",
        ("test_requeue.py",),
        "tick = not queue.send_messages([Message(TICK_BODY, 0)])",
        "tick = not queue.send_messages([Message(TICK_BODY, math.ceil(report.next_tick or 0))])",
    ),
    # writers.py / retry.py
    Mutant(
        "W1",
        "writers.py",
        "ownership by tag alone",
        ("test_segment_writers.py",),
        'if MANAGED_TAG not in (segment.get("tags") or []) or marker not in str(segment.get("description") or ""):',
        'if MANAGED_TAG not in (segment.get("tags") or []):',
    ),
    Mutant(
        "W2",
        "writers.py",
        "ownership read before every write",
        ("test_segment_writers.py",),
        "        if key not in self._ours:\n            self._claim(target, key, deadline)\n        keys",
        "        self._claim(target, key, deadline)\n        keys",
    ),
    Mutant(
        "W3",
        "writers.py",
        "a 429 on create judged as a refusal",
        ("test_segment_writers.py",),
        "if refused.status is None or refused.status == 429 or not 400 <= refused.status < 500:",
        "if refused.status is None or not 400 <= refused.status < 500:",
    ),
    Mutant(
        "W4",
        "writers.py",
        "empty batch sent",
        ("test_segment_writers.py",),
        "        if not batch:\n            return False\n",
        "",
    ),
    Mutant(
        "W5",
        "writers.py",
        "context kind not checked",
        ("test_segment_writers.py",),
        'elif segment.get("unboundedContextKind") != target.context_kind:',
        "elif False:",
    ),
    Mutant(
        "T1",
        "retry.py",
        "409 conflict permanent",
        ("test_segment_writers.py",),
        "TRANSIENT_STATUSES = frozenset({408, 409, 429})",
        "TRANSIENT_STATUSES = frozenset({408, 429})",
    ),
    Mutant(
        "T2",
        "retry.py",
        "500 permanent",
        ("test_segment_writers.py",),
        "return status >= 500 or",
        "return status > 500 or",
    ),
    Mutant(
        "T3",
        "retry.py",
        "rate-limit backoff can be nothing",
        ("test_segment_writers.py",),
        "return rng.uniform(step / 2, step)",
        "return rng.uniform(0, step)",
    ),
    # change.py
    Mutant(
        "G1",
        "change.py",
        "plain change beats recheck of equal order",
        ("test_change.py",),
        "return (self.order, self.reassert)",
        "return (self.order, not self.reassert)",
    ),
    Mutant(
        "G2",
        "change.py",
        "non-ASCII queued",
        ("test_change.py",),
        "return self.model_dump_json(ensure_ascii=True,",
        "return self.model_dump_json(ensure_ascii=False,",
    ),
    Mutant(
        "G3",
        "change.py",
        "reassert=false written out",
        ("test_change.py",),
        'left_out = {name for name in ("reassert", "received_at") if not getattr(self, name)}',
        'left_out = {"received_at"} if not self.received_at else set()',
    ),
    # rate_limit.py
    Mutant(
        "L1",
        "rate_limit.py",
        "requests start as a window closes",
        ("test_rate_limit.py",),
        "if self.remaining > 0 and now < self.reset_at - CLOSING_SECONDS:",
        "if self.remaining > 0 and now < self.reset_at:",
    ),
    Mutant(
        "L2",
        "rate_limit.py",
        "the larger count of one window wins",
        ("test_rate_limit.py",),
        "remaining = min(self.remaining, window.remaining) if same else window.remaining",
        "remaining = max(self.remaining, window.remaining) if same else window.remaining",
    ),
    Mutant(
        "L3",
        "rate_limit.py",
        "the sooner window decides",
        ("test_rate_limit.py",),
        "wait = max(wait for _, wait in taken.values())",
        "wait = min(wait for _, wait in taken.values())",
    ),
    Mutant(
        "L4",
        "rate_limit.py",
        "Retry-After obeyed beyond the bound",
        ("test_rate_limit.py",),
        "ends.append(now + min(retry_after, MAX_WINDOW_SECONDS))",
        "ends.append(now + retry_after)",
    ),
    Mutant(
        "L5",
        "rate_limit.py",
        "a guessed window's first request not taken",
        ("test_rate_limit.py",),
        "remaining=self.limit - 1, guessed=True)",
        "remaining=self.limit, guessed=True)",
    ),
    # normalize.py
    Mutant(
        "N1",
        "normalize.py",
        "any string is a membership",
        ("test_normalize.py",),
        'if isinstance(value, str) and value.lower() in ("true", "false"):',
        "if isinstance(value, str):",
    ),
    Mutant(
        "N2",
        "normalize.py",
        "a journey step without flag leaves",
        ("test_normalize.py",),
        '            return True\n        return Rejected("missing_membership"',
        '            return False\n        return Rejected("missing_membership"',
    ),
    Mutant(
        "N3",
        "normalize.py",
        "future skew bound doubled",
        ("test_normalize.py",),
        "if received_at is not None and parsed > format_time(received_at + limits.MAX_FUTURE_SKEW):",
        "if received_at is not None and parsed > format_time(received_at + 2 * limits.MAX_FUTURE_SKEW):",
    ),
    # pending_log.py and pending_record.py: leases, owners, inline changes
    Mutant(
        "P1",
        "pending_log.py",
        "a finish clears the audience although a batch was recorded during its reconcile",
        PENDING,
        '"#owner = :owner AND #seq = :seq"',
        '"#owner = :owner"',
    ),
    Mutant(
        "P2",
        "pending_log.py",
        "a holder whose lease ran out lists the audience again and drops the next holder's lease",
        PENDING,
        'self._update_work(lease, keep, values, "#owner = :owner", names)',
        'self._update_work(lease, keep, values, "attribute_exists(#owner)", names)',
    ),
    Mutant(
        "P3",
        "pending_log.py",
        "a lease is taken while another holder's runs",
        PENDING,
        "attribute_exists(#since) AND (attribute_not_exists(#until) OR #until < :now)",
        "attribute_exists(#since)",
    ),
    Mutant(
        "P4",
        "pending_log.py",
        "resolved inline changes stay in the work item",
        PENDING,
        'removed = ([] if hold_until is not None else ["#owner", "#until"]) + list(inline)',
        'removed = [] if hold_until is not None else ["#owner", "#until"]',
    ),
    Mutant(
        "P5",
        "pending_log.py",
        "the inline bytes freed are added",
        PENDING,
        'values[":freed"] = {"N": str(-sum(',
        'values[":freed"] = {"N": str(sum(',
    ),
    Mutant(
        "P6",
        "pending_log.py",
        "a reconcile does not read the inline changes",
        PENDING,
        "return PendingRead(held + taken, min(rest) if rest else None)",
        "return PendingRead(taken, min(rest) if rest else None)",
    ),
    Mutant(
        "P7",
        "pending_record.py",
        "an inline write goes past the room a stale read promised",
        PENDING,
        'ConditionExpression="attribute_not_exists(#held) OR #held <= :room",',
        'ConditionExpression="attribute_not_exists(#held) OR #held <= :room OR #held > :room",',
    ),
    Mutant(
        "P8",
        "pending_record.py",
        "a full work item is tried anyway (a refused write costs a unit)",
        PENDING,
        'room = item is None or int(item.get(t.INLINE_BYTES, {}).get("N", "0")) + _inline_size(blob) <= INLINE_BYTES',
        "room = True",
    ),
    Mutant(
        "P9",
        "pending_record.py",
        "a compaction under a live lease (its holder frees the moved bytes again)",
        PENDING,
        '"(attribute_not_exists(#until) OR #until < :now) AND "',
        '"(attribute_not_exists(#until) OR #until < :now OR #until >= :now) AND "',
    ),
    Mutant(
        "P10",
        "pending_record.py",
        "a compaction moves attributes a reconcile already removed",
        PENDING,
        '+ " AND ".join(f"attribute_exists({placeholder})" for placeholder in names),',
        '+ "attribute_exists(#key)",',
    ),
    # debounce.py
    Mutant(
        "B1",
        "debounce.py",
        "an audience that never goes quiet waits for ever",
        ("test_debounce.py",),
        "return min(newest + QUIET_SECONDS, pending_since + MAX_WAIT_SECONDS)",
        "return newest + QUIET_SECONDS",
    ),
    Mutant(
        "B2",
        "debounce.py",
        "the newest change is ignored",
        ("test_debounce.py",),
        "newest = pending_since if pending_newest is None else max(pending_newest, pending_since)",
        "newest = pending_since",
    ),
    Mutant(
        "B3",
        "debounce.py",
        "an audience is taken as waited long enough a moment early",
        ("test_debounce.py",),
        "(FLOOD_MAX_WAIT_SECONDS if flooded else MAX_WAIT_SECONDS) <= now",
        "(FLOOD_MAX_WAIT_SECONDS if flooded else MAX_WAIT_SECONDS) < now + 1",
    ),
    Mutant(
        "B4",
        "debounce.py",
        "a full batch changes nothing",
        ("test_debounce.py",),
        "    if flooded:\n",
        "    if False:\n",
    ),
]


def killer(mutant: Mutant) -> str | None:
    """The first test that fails with the mutant applied (None: it survived)."""
    path = CORE / mutant.module
    text = path.read_text()
    if text.count(mutant.original) != 1:
        raise SystemExit(f"{mutant.name}: the original text is not once in {mutant.module}: update the mutant")
    path.write_text(text.replace(mutant.original, mutant.mutated))
    try:
        paths = [f"tests/unit/{name}" for name in mutant.tests]
        run = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *paths],
            cwd=ROOT,
            env=os.environ,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        path.write_text(text)
    if run.returncode == 0:
        return None
    failed = [
        line.split(" ")[1] for line in run.stdout.splitlines() if line.startswith(("FAILED tests", "ERROR tests"))
    ]
    return failed[0].removeprefix("tests/unit/") if failed else f"pytest exit {run.returncode}"


def main(names: list[str]) -> int:
    rows, survivors = [], []
    for mutant in MUTANTS:
        if names and mutant.name not in names:
            continue
        killed_by = killer(mutant)
        print(mutant.name, killed_by or "SURVIVED", flush=True)
        if killed_by is None:
            survivors.append(mutant.name)
        rows.append(f"| {mutant.name} | {mutant.module} | {mutant.bug} | {killed_by or '**survived**'} |")
    if not names:
        header = [
            "# Mutants of the core",
            "",
            "Hand-made mutants that look like real bugs, each killed by its module's own fast unit tests.",
            "Written by `python -m tests.unit.mutants` (the mutants themselves are listed there); do not edit.",
            "",
            "| id | module | the bug | first test that fails |",
            "| --- | --- | --- | --- |",
        ]
        TABLE.write_text("\n".join(header + rows) + "\n")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
