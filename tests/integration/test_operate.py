"""`ld-audiences status`, `resync` and `audit` through the CLI's entry point, against moto's server (state
table, queues, CloudFormation) and the LaunchDarkly emulator over HTTP."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from ld_audiences.audiences import AudienceReader
from ld_audiences.change import MembershipChange
from ld_audiences.dead_letters import SqsDeadLetters
from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.outcomes import QueuedRecord, SyncReport
from ld_audiences.pending_log import PendingLog
from ld_audiences.sqs_queue import SqsChangeQueue
from ld_audiences.writers import RestWriter, SegmentAudiencesWriter, Target
from ld_audiences_cli import console
from ld_audiences_cli.audit import wilson_interval
from ld_audiences_cli.main import main
from ld_audiences_cli.resync import Progress, resync
from ld_audiences_local.ambiguities import CHOICES
from ld_audiences_local.emulator import Emulator
from tests.audience_state import change, write_audience, write_state
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, REGION, Aws, make_sync
from tests.launchdarkly_answers import error, user_segment, user_segments
from tests.recording_server import Recorded, RecordingServer, Scripted

MEMBERS = [f"m{i}" for i in range(20)]
LEFT = [f"l{i}" for i in range(10)]
SEGMENT = f"{CLIENT_SIDE_ID}/aud_a"  # the emulator's id of audience aud_a's synced segment
READER_TOKEN = "api-read-only-token"
# The emulator here lists no segments (getSegments): the synced segment is named, as an operator would.
SYNCED = ["--segment-key", "segment-audiences-aud_a"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr as a terminal: progress is shown only to a person watching."""
    monkeypatch.setattr(console, "stderr_is_a_terminal", lambda: True)


def where(aws: Aws) -> list[str]:
    return ["--table", aws.table, "--queue-url", aws.queue_url, "--dlq-url", aws.dlq_url]


def launchdarkly(emulator: Emulator, token: str = LD_TOKEN) -> list[str]:
    return ["--base-url", emulator.url, "--token", token, "--project-key", "default", "--environment-key", "production"]


def queued(aws: Aws) -> list[MembershipChange]:
    return [MembershipChange.from_message(m["Body"]) for m in aws.queue_messages(aws.queue_url)]


def write_launchdarkly(
    emulator: Emulator, add: Sequence[str], remove: Sequence[str] = (), audience: str = "aud_a"
) -> None:
    writer = SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID)
    writer.write(Target(audience, f"{audience}_key", "user"), add, remove, time.time() + 10)


@pytest.fixture
def audience(aws: Aws, emulator: Emulator) -> Aws:
    """aud_a: 20 members and 10 contexts that left, all written; LaunchDarkly has the 20."""
    write_audience(aws, "aud_a", MEMBERS, LEFT)
    write_launchdarkly(emulator, MEMBERS, LEFT)
    return aws


# ----------------------------------------------------------------------------------------- status


def test_status_shows_each_audience_with_exact_members_the_queue_and_dead_letters_by_reason(
    audience: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    aws = audience
    write_audience(aws, "aud_b", ["x", "y"], kind="account")
    dead = SqsDeadLetters(aws.sqs, aws.dlq_url)
    for i, reason in enumerate(["launchdarkly_400_invalid_request", "launchdarkly_400_invalid_request", "x_y"]):
        body = change("aud_a", f"bad{i}", True).to_message()
        assert dead.send(QueuedRecord(f"r{i}", body), reason, "detail")
    aws.sqs.send_message(QueueUrl=aws.dlq_url, MessageBody=change("aud_c", "z", True).to_message())  # redrive policy
    aws.sqs.send_message(QueueUrl=aws.dlq_url, MessageBody="not json")
    for key in ("q1", "q2", "q3"):
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=change("aud_a", key, True).to_message())
    recorded = time.time()
    pending = [change("aud_a", "p1", True, second=40)]
    assert PendingLog(aws.dynamodb, aws.table).record([(Target("aud_a", "aud_a_key", "user"), pending)]) == set()

    code, out, _ = run(capsys, "status", *where(aws), "--json")
    assert code == 0
    report = json.loads(out)
    lines = {(a["audience_id"], a["context_kind"]): a for a in report["audiences"]}
    assert set(lines) == {("aud_a", "user"), ("aud_b", "account"), ("aud_c", "user")}
    a = lines[("aud_a", "user")]
    assert (a["audience_key"], a["members"], a["contexts"], a["changes_written"]) == ("aud_a_key", 20, 30, 30)
    assert a["last_event_time"] == "2026-11-20T10:00:00.000000000Z" and a["last_write_at"].endswith("Z")
    assert a["dead_lettered"] == {"launchdarkly_400_invalid_request": 2, "x_y": 1}
    pending_since = datetime.fromisoformat(a["pending_since"]).timestamp()
    assert recorded - 1 <= pending_since <= time.time()
    # Only dead-lettered so far: listed all the same, with what the table knows (nothing).
    c = lines[("aud_c", "user")]
    assert (c["members"], c["last_write_at"], c["dead_lettered"]) == (0, None, {"max_receive_count_exceeded": 1})
    assert c["pending_since"] is None and lines[("aud_b", "account")]["pending_since"] is None
    assert report["queue"]["total"] == 3
    assert report["dead_letter_queue"] == {
        "visible": 5,
        "in_flight": 0,
        "delayed": 0,
        "total": 5,
        "read": 5,
        "not_membership_changes": 1,
    }
    assert report["read_units"] > 0
    # The peek left every dead letter where it was, visible.
    attributes = aws.sqs.get_queue_attributes(QueueUrl=aws.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "5"

    code, out, _ = run(capsys, "status", *where(aws), "--audience", "aud_a")
    assert code == 0
    assert "queue: 3 message(s) not yet recorded" in out and "dead-letter queue: 5 message(s)" in out
    assert "WAITING" in out
    line = next(line for line in out.splitlines() if line.startswith("aud_a "))
    assert line.split()[:4] == ["aud_a", "aud_a_key", "user", "20"]
    assert re.search(r"\b\d+ s ago\b", line)
    assert line.endswith("  3") and "  aud_a: launchdarkly_400_invalid_request 2, x_y 1" in out.splitlines()
    assert "aud_b" not in out


def test_status_of_an_unknown_audience_is_an_error(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", *where(aws), "--audience", "aud_nope")
    assert code == 2 and "aud_nope is not in the state table" in err


@pytest.fixture
def stack(aws: Aws) -> Iterator[str]:
    """A CloudFormation stack in moto whose outputs name the test's table and queues."""
    cloudformation = boto3.client("cloudformation", endpoint_url=aws.endpoint, region_name=REGION)
    name = f"ld-audiences-{uuid.uuid4().hex[:8]}"
    template = {
        "Parameters": {"LaunchDarklyWriter": {"Type": "String"}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "StateTableName": {"Value": aws.table},
            "QueueUrl": {"Value": aws.queue_url},
            "DeadLetterQueueUrl": {"Value": aws.dlq_url},
        },
    }
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "LaunchDarklyWriter", "ParameterValue": "segment-audiences"}],
    )
    yield name
    cloudformation.delete_stack(StackName=name)


def test_status_finds_a_deployed_stack_by_its_name(
    audience: Aws, stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", "--stack-name", stack, "--json")
    assert code == 0
    assert [(a["audience_id"], a["members"]) for a in json.loads(out)["audiences"]] == [("aud_a", 20)]
    code, _, err = run(capsys, "status", "--stack-name", "no-such-stack")
    assert code == 2 and "cannot describe stack no-such-stack" in err


# ----------------------------------------------------------------------------------------- resync


def test_resync_queues_a_reassert_of_the_stored_state_for_every_context(
    audience: Aws, capsys: pytest.CaptureFixture[str], watched: None
) -> None:
    aws = audience
    code, out, _ = run(capsys, "resync", *where(aws), "--audience", "aud_a", "--dry-run")
    assert code == 0 and "would queue 30 reasserts (20 members, 10 that left)" in out
    assert queued(aws) == []

    code, out, err = run(capsys, "resync", *where(aws), "--audience", "aud_a", "--progress-every", "10")
    assert code == 0 and "queued 30 reasserts (20 members, 10 that left)" in out
    assert "--resume " in err and "--resume" not in out  # progress lines, on stderr, say where to continue from
    messages = queued(aws)
    assert sorted(m.context_key for m in messages) == sorted(MEMBERS + LEFT)
    assert all(m.reassert and m.audience_key == "aud_a_key" and m.context_kind == "user" for m in messages)
    assert {m.context_key for m in messages if m.included} == set(MEMBERS)
    assert all(m.order == change("aud_a", m.context_key, m.included).order for m in messages)  # the stored state


def test_an_interrupted_resync_continues_from_its_cursor_without_gaps(audience: Aws) -> None:
    aws = audience
    reader = AudienceReader(aws.dynamodb, aws.table)
    queue = SqsChangeQueue(aws.sqs, aws.queue_url)
    progress = Progress()

    def interrupt(progress: Progress) -> None:
        if progress.queued >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resync(reader, queue, "aud_a", "aud_a_key", "user", progress=progress, page_size=4, on_page=interrupt)
    first = [m.context_key for m in queued(aws)]
    assert 8 <= len(first) == progress.queued < 30
    resync(reader, queue, "aud_a", "aud_a_key", "user", progress=Progress(cursor=progress.cursor), page_size=4)
    second = [m.context_key for m in queued(aws)]
    assert sorted(first + second) == sorted(MEMBERS + LEFT)


def test_resync_restores_a_deleted_segment_through_the_sync(
    audience: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reasserts go through the real sync core: the segment gets the members back, and a context that
    left is removed again even though LaunchDarkly had it (added behind the sync's back)."""
    aws = audience
    write_launchdarkly(emulator, [], MEMBERS)  # emptied in LaunchDarkly
    write_launchdarkly(emulator, ["l0"])  # and a context that left added by hand
    assert run(capsys, "resync", *where(aws), "--audience", "aud_a")[0] == 0
    records = [QueuedRecord(m["MessageId"], m["Body"]) for m in aws.queue_messages(aws.queue_url)]
    sync = make_sync(aws, SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID))
    report = sync.sync(records, time.time() + 30)
    assert (report.added, report.removed, report.failed) == (20, 10, [])
    assert emulator.included(SEGMENT) == set(MEMBERS)


def test_resync_needs_the_kind_and_key_of_an_audience_the_table_has_no_summary_for(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(aws, [change("aud_q", "k", True)], applied=False)  # never written: no summary
    code, _, err = run(capsys, "resync", *where(aws), "--audience", "aud_q")
    assert code == 2 and "give --context-kind" in err
    code, _, err = run(capsys, "resync", *where(aws), "--audience", "aud_q", "--context-kind", "user")
    assert code == 2 and "give --audience-key" in err
    args = ["--audience", "aud_q", "--context-kind", "user", "--audience-key", "q_key"]
    assert run(capsys, "resync", *where(aws), *args)[0] == 0
    assert [(m.context_key, m.audience_key) for m in queued(aws)] == [("k", "q_key")]


# ----------------------------------------------------------------------------------------- audit


# What LaunchDarkly answers for a context never added to a big segment is not documented (404, or 200 with
# included false): the audit must read the same whichever it is.
UNKNOWN_CONTEXT = pytest.mark.parametrize("unknown_context", CHOICES["unknown_context"])


@UNKNOWN_CONTEXT
def test_audit_of_a_segment_in_sync_passes(
    audience: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str], unknown_context: Any
) -> None:
    emulator.ambiguities = replace(emulator.ambiguities, unknown_context=unknown_context)
    code, out, _ = run(capsys, "audit", *where(audience), "--audience", "aud_a", *launchdarkly(emulator), *SYNCED)
    assert code == 0, out
    assert "checked: all 30" in out and "missing members: 0" in out and "extra members: 0" in out
    assert "drift: 0 of 30 checked" in out


@UNKNOWN_CONTEXT
def test_audit_reports_missing_extra_and_unwritten_contexts_and_repair_queues_them(
    audience: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str], unknown_context: Any
) -> None:
    emulator.ambiguities = replace(emulator.ambiguities, unknown_context=unknown_context)
    aws = audience
    write_launchdarkly(emulator, ["l1", "l2"], ["m1", "m2", "m3"])  # edited in LaunchDarkly
    write_state(aws, [change("aud_a", "m9", False, second=30)], applied=False)  # left; not written yet
    args = ["--audience", "aud_a", *launchdarkly(emulator), *SYNCED]
    code, out, _ = run(capsys, "audit", *where(aws), *args, "--show", "2")
    assert code == 1
    assert "missing members: 3" in out and "extra members: 2" in out
    assert "not written yet: 1 differ" in out and "drift: 5 of 30 checked" in out
    listed = out.split("missing members: 3")[1].split("extra members")[0]
    assert len([k for k in ("m1", "m2", "m3") if f"  {k}\n" in listed]) == 2 and "… and 1 more" in listed
    assert queued(aws) == []  # no --repair: nothing queued

    code, out, _ = run(capsys, "audit", *where(aws), *args, "--repair")
    assert code == 1 and "repair: queued 6 reasserts" in out
    repairs = queued(aws)
    assert sorted(m.context_key for m in repairs) == ["l1", "l2", "m1", "m2", "m3", "m9"]
    assert all(m.reassert for m in repairs)


def test_audit_of_a_deleted_segment_cannot_tell_and_repairs_nothing(
    audience: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"{emulator.url}/api/v2/segments/default/production/segment-audiences-aud_a"
    assert requests.delete(path, headers={"Authorization": LD_TOKEN}, timeout=5).status_code == 204
    args = ["--audience", "aud_a", *launchdarkly(emulator), *SYNCED, "--repair"]
    code, out, err = run(capsys, "audit", *where(audience), *args)
    assert code == 3  # deleted, or a wrong project, environment or key: the audit cannot tell
    assert "segment not found: searched segment segment-audiences-aud_a in default/production" in out
    assert "missing members" not in out and "--repair queued nothing" in err
    assert queued(audience) == []  # rewriting every member into a segment that may be the wrong one: no
    requests_made = emulator.stats()["requests"]
    assert not any("/contexts/" in route for route in requests_made)


def test_audit_samples_a_large_audience_and_states_the_interval(
    aws: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [f"u{i}" for i in range(200)]
    write_audience(aws, "aud_a", members)
    write_launchdarkly(emulator, members[50:])  # a quarter missing
    args = ["--audience", "aud_a", *launchdarkly(emulator), *SYNCED, "--sample", "60", "--seed", "4"]
    code, out, _ = run(capsys, "audit", *where(aws), *args)
    assert code == 1
    assert "checked: a uniform random sample of 60" in out
    line = next(line for line in out.splitlines() if line.startswith("drift rate: "))
    assert "Wilson score interval, finite-population corrected, sample of 60 of 200" in line
    low, high = (float(part.split(" %")[0]) / 100 for part in line.removeprefix("drift rate: ").split(" to ")[:2])
    assert low < 0.25 < high and high - low < 0.4
    reads = emulator.stats()["requests"]
    assert sum(sum(by_status.values()) for route, by_status in reads.items() if "/contexts/" in route) == 60


def test_audit_reads_a_rest_writer_segment_with_a_read_only_token(aws: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    with Emulator(tokens=(LD_TOKEN,), reader_tokens=(READER_TOKEN,), environments=("proj/prod",)) as emulator:
        write_audience(aws, "aud_r", ["a", "b"], ["c"])
        writer = RestWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), "proj", "prod")
        writer.write(Target("aud_r", "aud_r_key", "user"), ["a"], [], time.time() + 10)
        args = ["--audience", "aud_r", "--writer", "rest", "--base-url", emulator.url, "--token", READER_TOKEN]
        code, out, _ = run(capsys, "audit", *where(aws), *args, "--project-key", "proj", "--environment-key", "prod")
        assert code == 1, out
        assert f"segment {RestWriter.segment_key(Target('aud_r', 'aud_r_key', 'user'))} in proj/prod" in out
        assert "missing members: 1" in out and "  b\n" in out
        # A token LaunchDarkly refuses: an error that names no token.
        code, out, err = run(
            capsys, "audit", *where(aws), *args[:-1], "api-wrong", "--project-key", "proj", "--environment-key", "prod"
        )
        assert code == 3 and "401" in err and "api-wrong" not in out + err


def test_audit_paces_by_answers_that_name_only_the_reset(audience: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    """LaunchDarkly may answer with X-Ratelimit-Reset and no remaining count."""

    def answer(request: Recorded) -> Scripted:
        reset = {"X-Ratelimit-Reset": str(int((time.time() + 10) * 1000))}
        if "/contexts/" not in request.path:  # the listing
            segment = user_segment("synced-aud-a", "Aud a key", external="segment-audiences")
            return Scripted(200, reset, user_segments([segment]))
        return Scripted(200, reset, {"included": request.path.rsplit("/", 1)[1].startswith("m")})

    server = RecordingServer(respond=answer)
    try:
        args = ["--audience", "aud_a", "--base-url", server.url, "--token", LD_TOKEN]
        code, out, err = run(capsys, "audit", *where(audience), *args, "--project-key", "p", "--environment-key", "e")
    finally:
        server.close()
    assert code == 0, out + err
    assert "drift: 0 of 30 checked" in out


def test_audit_that_cannot_read_the_state_table_cannot_tell(
    aws: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "audit", "--table", "no-such-table", "--audience", "aud_a", *launchdarkly(emulator))
    assert code == 3 and "AWS call failed" in err


def test_audit_needs_a_token_and_where_the_segment_is(
    aws: Aws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LD_API_TOKEN", "LD_PROJECT_KEY", "LD_ENVIRONMENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run(capsys, "audit", *where(aws), "--audience", "aud_a")
    assert code == 2 and "no access token" in err
    code, _, err = run(capsys, "audit", *where(aws), "--audience", "aud_a", "--token", "t")
    assert code == 2 and "--project-key and --environment-key" in err


# ----------------------------------------------------------------------------------------- the interval


def test_wilson_interval_matches_the_textbook_and_shrinks_with_the_population() -> None:
    wide = wilson_interval(10, 100, 10**9)
    assert (round(wide.low, 4), round(wide.high, 4)) == (0.0552, 0.1744)  # Wilson 95 % for 10 of 100
    corrected = wilson_interval(10, 100, 200)
    assert wide.low < corrected.low < 0.1 < corrected.high < wide.high
    assert wilson_interval(10, 100, 100) == type(wide)(0.1, 0.1, 0.95)  # a census is exact
    none = wilson_interval(0, 50, 10**6)
    assert none.low == 0.0 and 0.05 < none.high < 0.08


# ----------------------------------------------------------------------------------------- retire


def test_retire_empties_the_segment_skips_later_changes_and_undo_with_resync_restores_it(
    audience: Aws, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    aws = audience
    sync = make_sync(aws, SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID))

    def sync_queue() -> SyncReport:
        records = [QueuedRecord(m["MessageId"], m["Body"]) for m in aws.queue_messages(aws.queue_url)]
        return sync.sync(records, time.time() + 30)

    code, out, _ = run(capsys, "retire", *where(aws), "--audience", "aud_a")
    assert code == 0 and "20 member(s) will be removed" in out and "--undo" in out
    report = sync_queue()
    assert report.removed == 20 and emulator.included(SEGMENT) == set()
    code, out, _ = run(capsys, "status", *where(aws), "--json")
    [line] = [a for a in json.loads(out)["audiences"] if a["audience_id"] == "aud_a"]
    assert line["retired_at"] is not None and line["members"] == 20  # the table keeps what Engage sent

    # A change Engage sends after the retirement is skipped, with its reason.
    late = change("aud_a", "newcomer", True, second=50)
    report = sync.sync([QueuedRecord("late", late.to_message())], time.time() + 30)
    assert report.retired == 1 and report.added == 0 and emulator.included(SEGMENT) == set()

    code, out, _ = run(capsys, "retire", *where(aws), "--audience", "aud_a", "--undo")
    assert code == 0 and "ld-audiences resync --audience aud_a" in out
    assert run(capsys, "resync", *where(aws), "--audience", "aud_a")[0] == 0
    sync_queue()
    assert emulator.included(SEGMENT) == set(MEMBERS)


# ----------------------------------------------------------------------------------------- audit: which segment


def scripted_launchdarkly(listed: list[dict[str, object]], by_key: dict[str, dict[str, object]]) -> RecordingServer:
    """getSegments over `listed` (paged by limit and offset), getSegment from `by_key`, and membership: m… are in."""

    def answer(request: Recorded) -> Scripted:
        url = urlsplit(request.path)
        parts = url.path.split("/")  # "", api, v2, segments, project, environment, [key, [contexts, context]]
        if len(parts) == 6:
            query = parse_qs(url.query)
            offset, limit = int(query["offset"][0]), int(query["limit"][0])
            return Scripted(200, body=user_segments(listed[offset : offset + limit], total=len(listed)))
        if len(parts) == 7:
            found = by_key.get(parts[6])
            return Scripted(200, body=found) if found else Scripted(404, body=error("not_found", "Invalid resource"))
        return Scripted(200, body={"userKey": parts[8], "included": parts[8].startswith("m"), "excluded": False})

    return RecordingServer(respond=answer)


def audit_against(
    server: RecordingServer, aws: Aws, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    args = ["--audience", "aud_a", "--base-url", server.url, "--token", LD_TOKEN, "--project-key", "p"]
    try:
        return run(capsys, "audit", *where(aws), *args, "--environment-key", "e", *extra)
    finally:
        server.close()


def synced(key: str, name: str = "Aud a key") -> dict[str, object]:
    return user_segment(key, name, external="segment-audiences")


def membership_reads(server: RecordingServer) -> list[str]:
    return [r.path for r in server.requests if "/contexts/" in r.path]


def test_audit_finds_the_synced_segment_among_every_page_of_big_segments(
    audience: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    others = [user_segment(f"big-{i}", f"Big {i}") for i in range(60)]
    server = scripted_launchdarkly([*others, synced("LD-chose-this-key")], {})
    code, out, _ = audit_against(server, audience, capsys)
    assert code == 0, out
    assert "found segment LD-chose-this-key: searched the big segments of p/e (61 listed)" in out
    listings = [urlsplit(r.path) for r in server.requests if "/contexts/" not in r.path]
    assert [parse_qs(u.query)["offset"] for u in listings] == [["0"], ["50"]]
    assert all(parse_qs(u.query)["filter"] == ["unbounded equals true"] for u in listings)
    reads = membership_reads(server)
    assert len(reads) == 30 and all(p.startswith("/api/v2/segments/p/e/LD-chose-this-key/contexts/") for p in reads)


def test_audit_of_a_synced_segment_it_cannot_find_cannot_tell_and_repairs_nothing(
    audience: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    server = scripted_launchdarkly([synced("s-other", "Gamers"), user_segment("rest-one", "Aud a key")], {})
    code, out, err = audit_against(server, audience, capsys, "--repair")
    assert code == 3
    assert "segment not found: searched the big segments of p/e (2 listed)" in out and "'Aud a key'" in out
    assert "s-other ('Gamers')" in out and "resync" in out and "--segment-key" in out
    assert "cannot tell" in err and "--repair queued nothing" in err
    assert membership_reads(server) == [] and queued(audience) == []


def test_audit_of_two_matching_synced_segments_names_both_and_reads_neither(
    audience: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    server = scripted_launchdarkly([synced("s-2"), synced("s-1")], {})
    code, out, err = audit_against(server, audience, capsys, "--repair")
    assert code == 3
    assert "segment not found for sure" in out and "2 segments match: s-1, s-2" in out
    assert "--segment-key" in err and membership_reads(server) == [] and queued(audience) == []


def test_audit_reads_the_segment_key_given_without_listing(audience: Aws, capsys: pytest.CaptureFixture[str]) -> None:
    server = scripted_launchdarkly([synced("s-1"), synced("s-2")], {"s-2": synced("s-2")})
    code, out, _ = audit_against(server, audience, capsys, "--segment-key", "s-2")
    assert code == 0, out
    assert "found segment s-2: searched segment s-2 in p/e (--segment-key)" in out
    assert [r.path for r in server.requests if "/contexts/" not in r.path] == ["/api/v2/segments/p/e/s-2"]


def test_audit_of_a_rest_key_held_by_a_segment_it_did_not_create_cannot_tell(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    write_audience(aws, "aud_a", MEMBERS)
    key = RestWriter.segment_key(Target("aud_a", "aud_a_key", "user"))
    server = scripted_launchdarkly([], {key: user_segment(key, "Aud a key", description="made by hand")})
    code, out, err = audit_against(server, aws, capsys, "--writer", "rest")
    assert code == 3
    assert f"searched segment {key} in p/e (the rest writer key)" in out and "lacks the tag 'ld-audiences'" in out
    assert "segment_not_managed" in out and "cannot tell" in err and membership_reads(server) == []


def test_audit_shows_progress_on_stderr_while_listing(
    audience: Aws, capsys: pytest.CaptureFixture[str], watched: None
) -> None:
    others = [user_segment(f"big-{i}", f"Big {i}") for i in range(1200)]
    server = scripted_launchdarkly([*others, synced("s-1")], {})
    code, out, err = audit_against(server, audience, capsys)
    assert code == 0, out
    assert "listed 500/1201 segments…" in err and "listed 1000/1201 segments…" in err
    assert "segments…" not in out  # stdout stays the report


def test_retire_can_delete_the_rest_writers_own_segment_and_nothing_else(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    with Emulator(tokens=(LD_TOKEN,), environments=("proj/prod",)) as emulator:
        write_audience(aws, "aud_r", ["a", "b"])
        target = Target("aud_r", "aud_r_key", "user")
        RestWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), "proj", "prod").write(
            target, ["a", "b"], [], time.time() + 10
        )
        ld = ["--writer", "rest", "--base-url", emulator.url, "--token", LD_TOKEN, "--project-key", "proj"]
        ld += ["--environment-key", "prod"]
        # A segment-audiences deployment's synced segment is LaunchDarkly's integration's: refused.
        code, _, err = run(
            capsys,
            "retire",
            *where(aws),
            "--audience",
            "aud_r",
            "--delete-segment",
            *ld[:1],
            "segment-audiences",
            *ld[2:],
        )
        assert code == 2 and "rest writer" in err
        code, out, _ = run(capsys, "retire", *where(aws), "--audience", "aud_r", "--delete-segment", *ld)
        assert code == 0 and f"deleted {RestWriter.segment_key(target)}" in out and "--undo" in out
        assert emulator.segments() == [] and queued(aws) == []  # deleted, not emptied
        code, out, _ = run(capsys, "status", *where(aws), "--json")
        assert json.loads(out)["audiences"][0]["retired_at"] is not None

        # A segment at the writer's key that ld-audiences did not make is left alone.
        other = Target("aud_o", "aud_o_key", "user")
        write_audience(aws, "aud_o", ["x"])
        key = RestWriter.segment_key(other)
        requests.post(
            f"{emulator.url}/api/v2/segments/proj/prod",
            json={"key": key, "name": "by hand", "unbounded": True, "unboundedContextKind": "user"},
            headers={"Authorization": LD_TOKEN, "LD-API-Version": "20240415"},
            timeout=10,
        ).raise_for_status()
        code, _, err = run(capsys, "retire", *where(aws), "--audience", "aud_o", "--delete-segment", *ld)
        assert code == 1 and "not made by ld-audiences" in err
        assert [s["key"] for s in emulator.segments()] == [key]
