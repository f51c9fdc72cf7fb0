"""What the CLI prints cannot act on the operator's terminal: `printable`, and the renderers that measure
what they print with it."""

from __future__ import annotations

import json
import unicodedata

import pytest

from ld_audiences_cli import status
from ld_audiences_cli.console import JSON, Report
from ld_audiences_cli.terminal import printable

ACTIVE = [
    "\x00",
    "\x07",  # BEL ends an OSC sequence (window title)
    "\x08",  # BS overwrites
    "\t",
    "\n",
    "\r",  # CR rewrites the line
    "\x1b",  # ESC starts ANSI sequences
    "\x7f",
    "\x85",
    "\x9b",  # CSI in one byte
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200b",
    "\ufeff",
    "\U000e0041",  # a tag character
    "\u2028",
    "\u2029",
    "\ud800",  # a lone surrogate: not even writable as UTF-8
]


def shown_safely(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


@pytest.mark.parametrize("char", ACTIVE, ids=lambda c: f"U+{ord(c):04X}")
def test_control_format_and_separator_characters_are_escaped(char: str) -> None:
    shown = printable(f"user{char}-1")
    assert shown_safely(shown) and shown.isascii()
    assert shown.startswith("user\\") and shown.endswith("-1") and f"{ord(char):x}" in shown
    assert printable(shown) == shown  # escaping twice changes nothing


def test_escapes_read_like_python_and_name_the_code_point() -> None:
    assert printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert printable("abc\u202edef") == "abc\\u202edef"
    assert printable("\U000e0041") == "\\U000e0041"


@pytest.mark.parametrize("text", ["user-1", "jane doe", "zoë", "用户", "\U0001f680", "a\u0301", "C:\\keys", "50 %"])
def test_visible_text_is_kept_as_it_is(text: str) -> None:
    assert printable(text) == text


def hostile_status() -> status.Status:
    audience = status.AudienceStatus(
        audience_id="aud_\x1b[2J",
        context_kind="user",
        audience_key="key\u202eevil",
        members=3,
        contexts=4,
        last_event_time="2026-11-20T10:00:00.000000000Z",
        last_message_id="personas_\x1b]0;owned\x07",
        last_write_at=1.0,
        dead_lettered={"launchdarkly_400_\u2066x": 2},
    )
    plain = status.AudienceStatus(audience_id="aud_plain", context_kind="user", audience_key="k", members=1, contexts=1)
    return status.Status([audience, plain], None, None, 0, 0, 1.0)


def test_status_lines_escape_every_cell_and_still_line_up() -> None:
    lines = status.lines(hostile_status())
    assert all(shown_safely(line) for line in lines)
    header, hostile, plain = (
        next(line for line in lines if line.startswith(start)) for start in ("AUDIENCE", "aud_\\", "aud_p")
    )
    assert "aud_\\x1b[2J" in hostile and "key\\u202eevil" in hostile
    assert any("launchdarkly_400_\\u2066x 2" in line for line in lines)  # the reasons, below the table
    for column in ("KIND", "MEMBERS", "WRITTEN"):
        at = header.index(column)
        assert hostile[at - 2 : at] == plain[at - 2 : at] == "  ", column


def test_status_json_is_ascii_and_gives_back_the_exact_values(capsys: pytest.CaptureFixture[str]) -> None:
    Report(JSON).document(status.to_document(hostile_status()))
    text = capsys.readouterr().out
    assert text.isascii() and shown_safely(text.replace("\n", ""))
    audience = json.loads(text)["audiences"][0]
    assert (audience["audience_id"], audience["audience_key"]) == ("aud_\x1b[2J", "key\u202eevil")
    assert audience["last_message_id"] == "personas_\x1b]0;owned\x07"


def test_status_table_of_a_typical_audience_fits_in_120_columns() -> None:
    audience = status.AudienceStatus(
        audience_id="aud_2Zx8Kq4mW1pR7tY9uV3bN6cD0eF",
        context_kind="user",
        audience_key="bought_twice_in_30_days",
        members=1_234_567,
        contexts=1_300_000,
        last_event_time="2026-11-20T10:00:00.123456789Z",
        last_message_id="personas_2Zx8Kq4mW1pR7tY9uV3bN6cD0eF_user-0001234567",
        last_write_at=1_800_000_000.0 - 3_600,
        pending_since=1_800_000_000.0,
        dead_lettered={"launchdarkly_400": 3},
    )
    lines = status.lines(status.Status([audience], None, None, 0, 0, 1.0), now=1_800_000_042.0)
    row = next(line for line in lines if line.startswith("aud_"))
    assert max(len(line) for line in lines) <= 120, lines
    assert row.endswith("2026-11-20T10:00:00Z  1 h ago  42 s ago  3")  # to the second; written an hour ago
    assert lines[-3:-1] == ["dead-lettered, by reason:", "  aud_2Zx8Kq4mW1pR7tY9uV3bN6cD0eF: launchdarkly_400 3"]
