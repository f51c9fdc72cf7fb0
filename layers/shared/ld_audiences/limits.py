"""Every limit on what ingest accepts, in one place, next to the downstream limit it protects.

Ingest refuses, with a reason, whatever a later step could not carry: once accepted, a change fits the
queue, the state table and a LaunchDarkly request, so it cannot fail the changes batched with it.
tests/unit/test_limits.py checks the arithmetic below against the AWS limits.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta

# ------------------------------------------------------------------------ identifiers (in code points)

# LaunchDarkly documents no maximum for a context key; 1,024 covers every real key (hashed e-mails, URNs).
MAX_CONTEXT_KEY = 1024
MAX_CONTEXT_KIND = 64
# Engage computation keys and message ids are short identifiers.
MAX_AUDIENCE_KEY = 255
MAX_MESSAGE_ID = 255
# The audience id is the cohort id of LaunchDarkly's synced segment, whose documentation recommends cohort
# ids of at most 128 characters.
MAX_AUDIENCE_ID = 128
# What a queued change's audience id may hold: ingest took 255 before it followed LaunchDarkly's
# recommendation, and changes queued (or dead-lettered, to be redriven) then must still sync. The state
# table's partition key holds the audience id and the context kind as JSON (UTF-8, at most 4 bytes a code
# point once control characters are refused): 255 + 64 code points take at most 1,092 of DynamoDB's 2,048
# bytes.
MAX_QUEUED_AUDIENCE_ID = 255

# Lambda takes at most 6 MiB (6,291,456 bytes) per synchronous invocation, the whole API Gateway proxy event
# counted: the body (inflated by API Gateway when it came gzipped) sits there as a JSON string, every quote
# escaped (Segment's events grow about 12 %), beside the headers and the request context. 5 MiB leaves that
# room; a larger limit could never be reached, API Gateway answers 413 "Request Too Long" without the function.
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10_000
# Lambda returns at most 6 MB either: an answer lists the first rejected events and counts the others (all
# are logged). 100 worst-case entries (255-character ids and keys of escaped characters) stay under 1.5 MB.
MAX_LISTED_ERRORS = 100
# LaunchDarkly's rule for a context kind (what its SDKs accept): ASCII letters, digits, '.', '_', '-',
# and neither "kind" nor "multi", which name parts of a context rather than a kind.
_CONTEXT_KIND = re.compile(r"[A-Za-z0-9._-]+")
RESERVED_CONTEXT_KINDS = frozenset({"kind", "multi"})

# A number sent where an id is expected must be a whole number JavaScript holds exactly: Segment's own
# destination and its JavaScript senders read every number as a double, so beyond this they have already
# rounded it, and 1, 1.0 and 1e0 are one number to them.
MAX_SAFE_INTEGER = 2**53 - 1

# ------------------------------------------------------------------------ time

# How far ahead of the time ingest received an event its event time may be. Engage stamps events on
# Segment's servers before delivering them, so only a wrong clock or a forged event is further ahead, and
# an event time far in the future would make every later real change look stale.
MAX_FUTURE_SKEW = timedelta(minutes=5)

# ------------------------------------------------------------------------ AWS

SQS_BATCH_ENTRIES = 10  # entries per SendMessageBatch call
# An SQS-triggered invocation's records must fit Lambda's 6 MB event; Lambda stops gathering a batch there, so
# a larger batch size is never reached. A typical change is about 1.3 KB in the event (its body, a receipt
# handle of about 400 characters, the attributes): 4,000 fit with room to spare (tests/unit/test_template.py).
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_SYNC_BATCH = 4000
SQS_BATCH_BYTES = 1024 * 1024  # SendMessageBatch: all bodies together (and each message)
DYNAMODB_PARTITION_KEY_BYTES = 2048

# ------------------------------------------------------------------------ characters

# Control characters (Cc: NUL, CR/LF, ESC of ANSI sequences, C1), format characters (Cf: bidi overrides,
# zero-width space and joiners, BOM, soft hyphen, tags) and line/paragraph separators: invisible or
# disruptive in LaunchDarkly's UI, logs and CSV exports, and never part of an id people type.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_defect(value: str) -> str | None:
    """Why `value` cannot be a context key, audience key, audience id or message id; None when it can.

    Spaces other than U+0020 (no-break, ideographic, ...) look like a space and are refused as well; a
    leading or trailing space would make a key that differs invisibly from the one the application uses.
    """
    if value.startswith(" ") or value.endswith(" "):
        return "starts or ends with a space"
    if value.isascii():  # the common case, without a lookup per character
        match = _ASCII_CONTROL.search(value)
        return None if match is None else _refused(match.group())
    for char in value:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES or (category == "Zs" and char != " "):
            return _refused(char)
    return None


def _refused(char: str) -> str:
    # The code point only: the rest of the value may be personal data.
    return f"holds U+{ord(char):04X} ({unicodedata.category(char)}), an invisible or control character"


def context_kind_defect(kind: str) -> str | None:
    """Why `kind` is not a LaunchDarkly context kind; None when it is."""
    if len(kind) > MAX_CONTEXT_KIND:
        return f"is longer than {MAX_CONTEXT_KIND} characters"
    if _CONTEXT_KIND.fullmatch(kind) is None:
        return "may hold only ASCII letters, digits, '.', '_' and '-'"
    if kind in RESERVED_CONTEXT_KINDS:
        return "is reserved by LaunchDarkly"
    return None
