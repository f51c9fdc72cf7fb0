"""Text for an operator's terminal.

Much of what the CLI prints comes from elsewhere: audience ids and keys, context keys and message ids from
events (some queued before ingest refused odd characters), dead letters' bodies and reasons, LaunchDarkly's
and AWS's error text. A control character there could move the cursor, recolour or retitle the terminal,
or rewrite a line already printed; a bidirectional override or isolate could show a key reversed.
"""

from __future__ import annotations

import unicodedata

# Cc: C0 controls (ESC starts ANSI sequences, CR and BS overwrite what is shown), DEL and C1 (CSI, OSC).
# Cf: the bidirectional marks, embeddings, overrides and isolates (U+200E/F, U+202A-202E, U+2066-2069),
# zero-width characters, BOM, soft hyphen, tags. Zl, Zp: line and paragraph separators, which some terminals
# break lines at. Cs: lone surrogates, which cannot be written to a UTF-8 terminal at all.
_ESCAPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def printable(text: str) -> str:
    """`text` with each of those characters written as a Python escape (`\\x1b`, `\\u202e`, `\\U000e0041`).

    A backslash is kept as it is, so that escaping twice changes nothing (a renderer may escape what it
    measures, and the CLI escapes every line it prints); an escape on screen may therefore also be those
    characters typed as text, but nothing reaches the terminal raw.
    """
    if text.isascii() and text.isprintable():  # nearly every line: no lookup per character
        return text
    return "".join(_escape(char) if unicodedata.category(char) in _ESCAPED else char for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
