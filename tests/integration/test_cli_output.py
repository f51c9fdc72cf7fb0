"""`--output json` of every command that prints a report: one JSON document on stdout with the keys
docs/CLI.md promises, nothing else there; and the exit statuses a scheduler relies on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.writers import SegmentAudiencesWriter, Target
from ld_audiences_cli.main import main
from ld_audiences_local.emulator import Emulator
from tests.audience_state import write_audience
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, Aws
from tests.recording_server import RecordingServer, Scripted

MEMBERS = [f"m{i}" for i in range(6)]
LEFT = ["l0", "l1"]


def as_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> Any:
    capsys.readouterr()
    assert main([*argv, "--output", "json"]) == code
    return json.loads(capsys.readouterr().out)  # the whole of stdout: one document


@pytest.fixture
def audience(aws: Aws, emulator: Emulator) -> Aws:
    """aud_a: 6 members and 2 contexts that left; LaunchDarkly has all but m5 (drift)."""
    write_audience(aws, "aud_a", MEMBERS, LEFT)
    writer = SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID)
    writer.write(Target("aud_a", "aud_a_key", "user"), MEMBERS[:-1], LEFT, time.time() + 10)
    return aws


def where(aws: Aws) -> list[str]:
    return ["--table", aws.table, "--queue-url", aws.queue_url, "--dlq-url", aws.dlq_url]


def test_status_json(audience: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "status", *where(audience))
    assert set(doc) == {"audiences", "queue", "dead_letter_queue", "read_units"}
    [aud] = doc["audiences"]
    assert (aud["audience_id"], aud["audience_key"], aud["members"], aud["contexts"]) == ("aud_a", "aud_a_key", 6, 8)
    assert {"dead_lettered", "dead_lettered_total", "last_write_at", "pending_since", "retired_at"} <= set(aud)
    assert main(["status", *where(audience), "--json"]) == 0  # the old spelling still works
    assert json.loads(capsys.readouterr().out)["audiences"] == doc["audiences"]


def test_resync_and_retire_json(audience: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "resync", *where(audience), "--audience", "aud_a", "--dry-run")
    assert doc == {
        "audience_id": "aud_a",
        "audience_key": "aud_a_key",
        "context_kind": "user",
        "dry_run": True,
        "queue_url": audience.queue_url,
        "queued": 8,
        "members": 6,
        "left": 2,
        "unsent": 0,
        "resume": None,
    }
    retired = as_json(capsys, "retire", *where(audience), "--audience", "aud_a")
    assert retired["retired"] is True and retired["removals_queued"] == 8 and retired["segment"] is None
    assert retired["retired_at"].endswith("+00:00")
    undone = as_json(capsys, "retire", *where(audience), "--audience", "aud_a", "--undo")
    assert (undone["retired"], undone["retired_at"]) == (False, None)


def test_audit_json_and_its_drift_is_exit_status_1(
    audience: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    launchdarkly = ["--base-url", emulator.url, "--token", LD_TOKEN, "--project-key", "default"]
    launchdarkly += ["--environment-key", "production", "--segment-key", "segment-audiences-aud_a"]
    doc = as_json(capsys, "audit", *where(audience), "--audience", "aud_a", *launchdarkly, code=1)
    assert doc["segment"]["found"] is True and doc["segment"]["key"] == "segment-audiences-aud_a"
    assert (doc["missing"], doc["extra"], doc["drift"], doc["checked"]) == (["m5"], [], 1, 8)
    assert doc["drift_rate"] is None and doc["repairs_queued"] == 0  # every context checked: no interval


def test_redrive_json(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    aws.sqs.send_message(QueueUrl=aws.dlq_url, MessageBody='{"audience_id": "aud_a"}')
    doc = as_json(capsys, "redrive", "--queue-url", aws.queue_url, "--dlq-url", aws.dlq_url, "--dry-run")
    assert (doc["dry_run"], doc["queue_url"], doc["failed"], doc["kept"]) == (True, aws.queue_url, [], [])
    [letter] = doc["moved"]
    assert letter["reason"] == "max_receive_count_exceeded" and letter["body"] == '{"audience_id": "aud_a"}'


def test_check_json(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "check", "--base-url", emulator.url, "--token", LD_TOKEN)
    assert doc["writer"] == "segment-audiences"
    statuses = {v["subject"]: v["status"] for v in doc["verdicts"]}
    assert statuses["access token"] == "ok" and statuses["client-side ID"] == "skip"
    assert LD_TOKEN not in json.dumps(doc)


def test_replay_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one.json").write_text('{"type": "identify", "userId": "u-1"}')
    (tmp_path / "two.json").write_text('{"batch": []}')
    answers = [Scripted(200, body={"accepted": 1, "skipped": 0, "rejected": 0}), Scripted(400, body={"code": "x"})]
    server = RecordingServer(answers)
    try:
        doc = as_json(capsys, "replay", str(tmp_path), "--endpoint", server.url, "--secret", "s", code=1)
    finally:
        server.close()
    assert (doc["answered_200"], doc["not_200"]) == (1, 1)
    assert [(f["url"].rsplit("/", 1)[-1], f["status"]) for f in doc["files"]] == [("events", 200), ("batch", 400)]


def test_an_aws_failure_cannot_tell_and_a_missing_option_is_a_usage_error(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--table", "no-such-table"]) == 3
    assert "AWS call failed" in capsys.readouterr().err
    assert main(["status"]) == 2
    assert "give --stack-name, or --table" in capsys.readouterr().err
