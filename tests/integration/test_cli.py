"""The installed `ld-audiences` console script, run as a subprocess the way a developer runs it."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from ld_audiences.dead_letters import SqsDeadLetters
from ld_audiences.launchdarkly import LaunchDarklyClient
from ld_audiences.sync import QueuedRecord
from ld_audiences.writers import SegmentAudiencesWriter, Target
from ld_audiences_cli.main import main
from ld_audiences_local.emulator import Emulator
from tests.audience_state import change, write_state
from tests.conftest import CLIENT_SIDE_ID, LD_TOKEN, Aws, free_port
from tests.recording_server import Recorded, RecordingServer, Scripted

CLI = (sys.executable, "-m", "ld_audiences_cli")  # what the `ld-audiences` console script runs
REPO_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("emulator", "local", "replay", "demo", "check", "redrive", "status", "resync", "audit")
SECRET = "cli-test-secret-6f1c"
FIXTURE = REPO_ROOT / "events" / "segment" / "01_beta_testers_identify_single.json"


def clean_env(**extra: str) -> dict[str, str]:
    ours = ("LD_API_TOKEN", "LD_CLIENT_SIDE_ID", "LD_PROJECT_KEY", "LD_ENVIRONMENT_KEY")
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.pop("LD_AUDIENCES_WEBHOOK_SECRET", None)
    env.update(extra)
    return env


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own console script)
        [*CLI, *args], capture_output=True, text=True, env=env or clean_env(), timeout=timeout, check=False
    )


class LineReader:
    """Reads a child's stdout on a thread, so waiting for a line never blocks forever."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True).start()

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no line starting with {prefix!r} within {timeout} s; got {self.seen}")

    def rest(self) -> str:
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


# ----------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_explains_itself(command: str) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: ld-audiences {command}".rstrip())
    if command:
        assert len(result.stdout.splitlines()) > 5
    else:
        for name in COMMANDS:
            assert name in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: ld-audiences" in result.stderr


@pytest.mark.parametrize("command", ["", "audit", "check", "replay"])
def test_the_exit_statuses_are_stated(command: str) -> None:
    text = " ".join(run(*([command] if command else []), "--help").stdout.split())
    assert "exit status: 0 success; 1 findings (drift, failed checks, refused files); 2 usage error" in text
    assert "3 cannot tell: AWS or LaunchDarkly failed or did not answer" in text


def test_a_local_chunk_holds_at_most_1000_keys() -> None:
    result = run("local", "--chunk-size", "1001")
    assert result.returncode == 2
    assert "must be from 1 to 1000" in result.stderr


# ----------------------------------------------------------------------------------------- what reaches the terminal

# Retitles the terminal (OSC ... BEL), clears the screen (CSI 2J), then shows what follows reversed (U+202E).
HOSTILE = "\x1b]0;owned\x07\x1b[2J\u202e"
# What SQS carries in a message attribute (no C0 controls): a C1 CSI and bidi isolates.
HOSTILE_ATTRIBUTE = "\x9b2J\u2066\u200f"


def raw_controls(output: str) -> list[str]:
    """Characters a terminal acts on or reorders by, line breaks aside."""
    return [
        f"U+{ord(c):04X}" for c in output.replace("\n", "") if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")
    ]


def test_replay_and_check_escape_what_the_endpoint_answers(fixtures: dict[str, bytes], tmp_path: Path) -> None:
    errors = [{"index": 0, "messageId": f"personas{HOSTILE}", "reason": f"invalid{HOSTILE}"}]
    body = {"accepted": 0, "skipped": 0, "rejected": 1, "errors": errors, "code": "c", "message": f"m{HOSTILE}"}
    server = RecordingServer(default=Scripted(401, {"Content-Type": "application/json"}, body))
    try:
        replayed = run("replay", str(tmp_path / "a_single.json"), "--endpoint", server.url, "--secret", SECRET)
        checked = run("check", "--base-url", server.url, "--token", LD_TOKEN)
    finally:
        server.close()
    for result in (replayed, checked):
        assert result.returncode == 1, result.stdout + result.stderr
        assert raw_controls(result.stdout + result.stderr) == []
    assert "#0 invalid\\x1b]0;owned\\x07\\x1b[2J\\u202e (personas\\x1b]0;owned" in replayed.stdout
    assert "(401 c: m\\x1b]0;owned\\x07\\x1b[2J\\u202e)" in checked.stdout


def test_operator_commands_escape_ids_keys_and_reasons(aws: Aws, emulator: Emulator) -> None:
    """Values queued before ingest refused such characters, and LaunchDarkly's words in a dead letter."""
    hostile = change(f"aud{HOSTILE}", f"user{HOSTILE}", True, audience_key=f"key{HOSTILE}")
    write_state(aws, [hostile, change("aud_h", f"user{HOSTILE}", True), change("aud_h", "m0", True)])
    dead = SqsDeadLetters(aws.sqs, aws.dlq_url)
    reason = f"launchdarkly_400{HOSTILE_ATTRIBUTE}"
    assert dead.send(QueuedRecord("r0", hostile.to_message()), reason, HOSTILE_ATTRIBUTE)
    writer = SegmentAudiencesWriter(LaunchDarklyClient(emulator.url, LD_TOKEN), CLIENT_SIDE_ID)
    writer.write(Target("aud_h", "aud_h_key", "user"), ["m0"], [], time.time() + 10)
    where = ["--table", aws.table, "--queue-url", aws.queue_url, "--dlq-url", aws.dlq_url]
    launchdarkly = ["--base-url", emulator.url, "--token", LD_TOKEN, "--project-key", "default"]

    status = run("status", *where)
    listed = run("redrive", "--queue-url", aws.queue_url, "--dlq-url", aws.dlq_url, "--dry-run")
    resynced = run("resync", *where, "--audience", hostile.audience_id, "--dry-run")
    # The emulator here lists no segments (getSegments): the synced segment is named.
    synced = ["--segment-key", "segment-audiences-aud_h"]
    audited = run("audit", *where, "--audience", "aud_h", *launchdarkly, "--environment-key", "production", *synced)
    for result, code in ((status, 0), (listed, 0), (resynced, 0), (audited, 1)):
        assert result.returncode == code, result.stdout + result.stderr
        assert raw_controls(result.stdout + result.stderr) == []
    assert "aud\\x1b]0;owned\\x07\\x1b[2J\\u202e" in status.stdout and "\\u2066" in status.stdout
    assert "add user:user\\x1b]0;owned" in listed.stdout and "reason launchdarkly_400\\x9b2J\\u2066" in listed.stdout
    assert "(key\\x1b]0;owned\\x07\\x1b[2J\\u202e, context kind user)" in resynced.stdout
    assert "  user\\x1b]0;owned\\x07\\x1b[2J\\u202e" in audited.stdout

    as_json = run("status", *where, "--json")
    assert as_json.returncode == 0 and as_json.stdout.isascii()
    audiences = {a["audience_id"]: a for a in json.loads(as_json.stdout)["audiences"]}
    assert audiences[hostile.audience_id]["audience_key"] == hostile.audience_key  # exact, once parsed


# ----------------------------------------------------------------------------------------- check


def test_check_passes_with_a_valid_token_and_client_side_id(emulator: Emulator) -> None:
    result = run(
        "check",
        "--base-url",
        emulator.url,
        "--clientsdk-url",
        emulator.url,
        "--token",
        LD_TOKEN,
        "--client-side-id",
        CLIENT_SIDE_ID,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK  ") == 3  # token, client-side ID, the instance offers synced segments
    assert "verdict: all good" in result.stdout
    assert LD_TOKEN not in result.stdout + result.stderr


def test_check_reads_the_token_from_the_environment(emulator: Emulator) -> None:
    result = run("check", "--base-url", emulator.url, env=clean_env(LD_API_TOKEN=LD_TOKEN))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SKIP  client-side ID" in result.stdout
    assert LD_TOKEN not in result.stdout + result.stderr


def test_check_fails_on_a_bad_token_without_printing_it(emulator: Emulator) -> None:
    bad = "api-0000-definitely-not-valid-4242"
    result = run(
        "check",
        "--base-url",
        emulator.url,
        "--clientsdk-url",
        emulator.url,
        "--token",
        bad,
        "--client-side-id",
        CLIENT_SIDE_ID,
    )
    assert result.returncode == 1
    assert "FAIL  access token: rejected" in result.stdout
    assert "OK    client-side ID" in result.stdout
    assert "1 problem(s)" in result.stdout
    assert bad not in result.stdout + result.stderr


def test_check_fails_on_an_unknown_client_side_id(emulator: Emulator) -> None:
    result = run(
        "check",
        "--base-url",
        emulator.url,
        "--clientsdk-url",
        emulator.url,
        "--token",
        LD_TOKEN,
        "--client-side-id",
        "no-such-environment",
    )
    assert result.returncode == 1
    assert "FAIL  client-side ID: no-such-environment is unknown" in result.stdout


def test_check_cannot_tell_when_the_service_is_unreachable() -> None:
    result = run("check", "--base-url", f"http://127.0.0.1:{free_port()}", "--token", LD_TOKEN)
    assert result.returncode == 3
    assert "could not reach" in result.stdout
    assert LD_TOKEN not in result.stdout + result.stderr


def test_check_without_a_token_is_a_usage_error() -> None:
    result = run("check")
    assert result.returncode == 2
    assert "LD_API_TOKEN" in result.stderr


def check_environment(base_url: str, project: str, environment: str) -> subprocess.CompletedProcess[str]:
    return run(
        "check", "--base-url", base_url, "--project-key", project, "--environment-key", environment, "--token", LD_TOKEN
    )


def test_check_passes_for_an_existing_project_and_environment(emulator: Emulator) -> None:
    result = check_environment(emulator.url, "default", "production")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK    project and environment: default/production exists and this token can read it" in result.stdout
    assert "SKIP  project and environment" not in result.stdout
    assert LD_TOKEN not in result.stdout + result.stderr
    assert "sdk-" not in result.stdout  # the environment's SDK key is in the answer, never in the output


def test_check_says_which_of_project_and_environment_is_unknown(emulator: Emulator) -> None:
    result = check_environment(emulator.url, "default", "staging")
    assert result.returncode == 1
    assert "FAIL  project and environment: project default has no environment staging (404)" in result.stdout
    result = check_environment(emulator.url, "defualt", "production")
    assert result.returncode == 1
    assert "FAIL  project and environment: project defualt does not exist" in result.stdout


def test_check_reports_a_token_that_may_not_read_the_environment() -> None:
    server = RecordingServer(respond=lambda r: Scripted(200 if r.path == "/api/v2/versions" else 403, body={}))
    try:
        result = check_environment(server.url, "default", "production")
    finally:
        server.close()
    assert result.returncode == 1
    assert "OK    access token" in result.stdout
    assert "FAIL  project and environment: this token may not read default/production (403)" in result.stdout
    assert "viewProject" in result.stdout and "createSegment" in result.stdout


def test_check_reads_project_and_environment_from_the_environment(emulator: Emulator) -> None:
    env = clean_env(LD_API_TOKEN=LD_TOKEN, LD_PROJECT_KEY="default", LD_ENVIRONMENT_KEY="nope")
    result = run("check", "--base-url", emulator.url, env=env)
    assert result.returncode == 1
    assert "no environment nope" in result.stdout


def test_check_needs_both_project_and_environment() -> None:
    result = run("check", "--token", LD_TOKEN, "--project-key", "default")
    assert result.returncode == 2
    assert "both --project-key and --environment-key" in result.stderr


# ----------------------------------------------------------------------------------------- replay


def answer_like_ingest(request: Recorded) -> Scripted:
    """200 with counts for the right secret, 401 otherwise, as the ingest endpoint answers."""
    json_type = {"Content-Type": "application/json"}
    if request.headers.get("Authorization") not in (
        f"Bearer {SECRET}",
        "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode(),
    ):
        return Scripted(401, json_type, {"code": "unauthorized", "message": "missing or invalid credentials"})
    errors = [{"index": 1, "messageId": "personas_x", "reason": "missing_membership"}]
    counts = {"accepted": 1, "skipped": 3, "rejected": 12, "errors_omitted": 11}
    reasons = {"not_audience_event": 2, "computation_class_not_synced": 1}
    return Scripted(200, json_type, {**counts, "skipped_reasons": reasons, "errors": errors})


@pytest.fixture
def ingest() -> Iterator[RecordingServer]:
    server = RecordingServer(respond=answer_like_ingest)
    yield server
    server.close()


@pytest.fixture
def fixtures(tmp_path: Path) -> dict[str, bytes]:
    files = {
        "a_single.json": b'{"type": "identify", "userId": "u-1"}',
        "b_array.json": b'[{"type": "track"}, {"type": "identify"}]',
        "c_batch.json": b'{"batch": [{"type": "identify"}], "writeKey": "x"}',
        "nested/d_single.json": b'{"type": "track", "userId": "u-2"}\n',
    }
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    (tmp_path / "README.md").write_text("not a fixture")
    return files


def test_replay_posts_every_fixture_to_the_route_for_its_shape(
    ingest: RecordingServer, fixtures: dict[str, bytes], tmp_path: Path
) -> None:
    result = run("replay", str(tmp_path), "--endpoint", ingest.url, "--secret", SECRET)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r.path for r in ingest.requests] == ["/events", "/events", "/v1/batch", "/events"]
    assert [r.raw for r in ingest.requests] == list(fixtures.values())  # byte for byte, in name order
    assert {r.headers["Authorization"] for r in ingest.requests} == {f"Bearer {SECRET}"}
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert "a_single.json  200  accepted=1 skipped=3 rejected=12" in lines[0]
    assert "skipped: computation_class_not_synced (1), not_audience_event (2)" in lines[0]
    assert "rejected: #1 missing_membership (personas_x) … and 11 more" in lines[0]
    assert SECRET not in result.stdout + result.stderr


def test_replay_to_a_full_endpoint_with_basic_auth_and_gzip(
    ingest: RecordingServer, fixtures: dict[str, bytes], tmp_path: Path
) -> None:
    result = run(
        "replay",
        str(tmp_path / "a_single.json"),
        str(tmp_path / "c_batch.json"),
        "--endpoint",
        f"{ingest.url}/v1/batch",
        "--basic",
        "--gzip",
        env=clean_env(LD_AUDIENCES_WEBHOOK_SECRET=SECRET),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r.path for r in ingest.requests] == ["/v1/batch", "/v1/batch"]
    for received, name in zip(ingest.requests, ("a_single.json", "c_batch.json"), strict=True):
        assert received.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(received.raw) == fixtures[name]
        assert base64.b64decode(received.headers["Authorization"].removeprefix("Basic ")) == f"{SECRET}:".encode()
    assert SECRET not in result.stdout + result.stderr


def test_replay_exits_1_when_a_file_is_not_accepted(
    ingest: RecordingServer, fixtures: dict[str, bytes], tmp_path: Path
) -> None:
    wrong = "wrong-secret-9d2e"
    result = run("replay", str(tmp_path), "--endpoint", ingest.url, "--secret", wrong)
    assert result.returncode == 1
    assert "401  unauthorized: missing or invalid credentials" in result.stdout
    assert "0 answered 200, 4 not" in result.stdout
    assert wrong not in result.stdout + result.stderr


def test_replay_fails_fast_once_when_nothing_answers(fixtures: dict[str, bytes], tmp_path: Path) -> None:
    started = time.monotonic()
    result = run("replay", str(tmp_path), "--endpoint", f"http://127.0.0.1:{free_port()}", "--secret", SECRET)
    assert len(list(tmp_path.glob("*.json"))) > 1
    assert result.returncode == 3
    assert result.stdout == ""
    assert (
        result.stderr.count("\n") == 1
        and "did not answer (no answer: ConnectionError) after 0 file(s)" in result.stderr
    )
    assert "check --endpoint" in result.stderr
    assert time.monotonic() - started < 10


def test_replay_usage_errors(tmp_path: Path, fixtures: dict[str, bytes]) -> None:
    missing = run("replay", str(tmp_path / "nope.json"), "--endpoint", "http://127.0.0.1:9", "--secret", SECRET)
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    no_secret = run("replay", str(tmp_path), "--endpoint", "http://127.0.0.1:9")
    assert no_secret.returncode == 2 and "LD_AUDIENCES_WEBHOOK_SECRET" in no_secret.stderr


# ----------------------------------------------------------------------------------------- long-running commands


def _terminate(process: subprocess.Popen[str], reader: LineReader) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return reader.rest()


@contextlib.contextmanager
def emulator_serving(*args: str) -> Iterator[str]:
    """`ld-audiences emulator --port 0 ARGS` until SIGTERM; yields its URL, then checks it exited cleanly."""
    process = subprocess.Popen(  # noqa: S603
        [*CLI, "emulator", "--port", "0", *args], stdout=subprocess.PIPE, text=True, env=clean_env()
    )
    reader = LineReader(process)
    try:
        yield reader.wait_for("listening on ", 20).removeprefix("listening on ")
    finally:
        _terminate(process, reader)
    assert process.returncode == 0


def test_emulator_serves_until_sigterm() -> None:
    with emulator_serving("--token", "t-1", "--client-side-id", "c-1", "--environment", "p/e") as url:
        assert requests.get(f"{url}/api/v2/versions", headers={"Authorization": "t-1"}, timeout=5).status_code == 200
        assert requests.head(f"{url}/sdk/goals/c-1", timeout=5).status_code == 200
        environment = requests.get(
            f"{url}/api/v2/projects/p/environments/e", headers={"Authorization": "t-1"}, timeout=5
        )
        assert environment.json()["_id"] == "c-1"
        unknown = requests.get(
            f"{url}/api/v2/projects/default/environments/production", headers={"Authorization": "t-1"}
        )
        assert unknown.status_code == 404  # only the environments given exist


def test_emulator_refuses_a_malformed_environment() -> None:
    result = run("emulator", "--port", "0", "--environment", "no-slash")
    assert result.returncode == 2
    assert "PROJECT_KEY/ENVIRONMENT_KEY" in result.stderr


def test_emulator_rate_limit_flags() -> None:
    with emulator_serving("--rate-limit", "2", "--rate-limit-window", "60") as url:
        answers = [
            requests.get(f"{url}/api/v2/versions", headers={"Authorization": "api-local-token"}, timeout=5)
            for _ in range(3)
        ]
        assert [(a.status_code, a.headers.get("X-Ratelimit-Route-Remaining")) for a in answers] == [
            (200, "1"),
            (200, "0"),
            (429, "0"),
        ]
        assert int(answers[2].headers["X-Ratelimit-Reset"]) > (time.time() + 50) * 1000


def test_local_rate_limit_is_the_in_process_emulators() -> None:
    result = run("local", "--rate-limit", "5", "--launchdarkly-url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "--rate-limit limits the in-process emulator" in result.stderr


def test_local_serves_the_pipeline_until_sigterm() -> None:
    process = subprocess.Popen(  # noqa: S603
        [
            *CLI,
            "local",
            "--port",
            "0",
            "--webhook-secret",
            SECRET,
            "--batching-window",
            "0.2",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    reader = LineReader(process)
    try:
        emulator_line = reader.wait_for("LaunchDarkly: ", 30)
        emulator_url = emulator_line.split()[1]
        url = reader.wait_for("listening on ", 30).removeprefix("listening on ")
        response = requests.post(
            f"{url}/events",
            data=FIXTURE.read_bytes(),
            headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200 and response.json()["accepted"] == 1
        deadline = time.monotonic() + 20
        members: list[str] = []
        while time.monotonic() < deadline and not members:
            segments = requests.get(f"{emulator_url}/emulator/segments", timeout=5).json()["segments"]
            members = [m for s in segments for m in s["included"]]
            time.sleep(0.1)
        assert members == ["u-1001"]
    finally:
        output = _terminate(process, reader)
    assert process.returncode == 0
    assert "shutting down" in output
    assert "webhook secret: given, not shown" in output
    assert SECRET not in output


def as_pasted(line: str, env: dict[str, str]) -> tuple[str, ...]:
    """The arguments of a printed `NAME=value ... ld-audiences ARGS` line, with its NAME=values added to `env`."""
    words = shlex.split(line)
    command = next(i for i, word in enumerate(words) if word.endswith("ld-audiences"))
    env.update(word.split("=", 1) for word in words[:command])
    return tuple(words[command + 1 :])


def test_local_banner_gives_the_secret_and_commands_that_work_as_pasted() -> None:
    """The default webhook secret is printed (it is no real secret), and the replay, redrive and status lines run
    as they are, in a shell with no AWS settings at all: redrive and status name moto's endpoint, its dummy
    credentials and the local table themselves (the operator CLI knows no local default)."""
    env = {name: value for name, value in clean_env().items() if not name.startswith("AWS_")}
    process = subprocess.Popen(  # noqa: S603
        [*CLI, "local", "--port", "0", "--batching-window", "0.2", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    reader = LineReader(process)
    try:
        assert reader.wait_for("webhook secret: ", 30) == "webhook secret: local-webhook-secret (the local default)"
        replay_line = reader.wait_for("  /", 5)  # the venv's script by its absolute path: runs without the venv
        redrive_line = reader.wait_for("  AWS_ACCESS_KEY_ID=testing ", 5)
        status_line = reader.wait_for("  AWS_ACCESS_KEY_ID=testing ", 5)
        assert (" replay " in replay_line, " redrive " in redrive_line, " status " in status_line) == (True,) * 3
        reader.wait_for("listening on ", 30)
        replayed = run(*shlex.split(replay_line)[1:], env=env)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "0 not" in replayed.stdout
        listed = run(*as_pasted(redrive_line, env), env=env)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "dry run: 0 message(s) would be moved back" in listed.stdout
        ends = time.monotonic() + 30
        while True:  # the replayed changes reach LaunchDarkly, and the audience summaries, a moment later
            status = run(*as_pasted(status_line, env), env=env)
            assert status.returncode == 0, status.stdout + status.stderr
            if "beta_testers" in status.stdout or time.monotonic() > ends:
                break
            time.sleep(0.5)
        assert "beta_testers" in status.stdout and "dead-letter queue: 0 message(s)" in status.stdout
    finally:
        _terminate(process, reader)


def test_local_states_the_relation_of_its_timeouts() -> None:
    result = run("local", "--visibility-timeout", "2")
    assert result.returncode == 2
    assert "--visibility-timeout must be at least --sync-timeout (10 s)" in result.stderr
    assert "at least --sync-timeout" in " ".join(run("local", "--help").stdout.split())


def test_local_refuses_a_taken_port() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as taken:
        result = run("local", "--port", str(taken.server_address[1]), timeout=30)
    assert result.returncode == 1
    assert "cannot start the local stack" in result.stderr


def test_demo_replays_the_bundled_fixtures() -> None:
    result = run("demo", "--port", "0", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Beta testers" in result.stdout and "- u-1001" in result.stdout
    assert "dead-letter queue: 0 message(s)" in result.stdout


def scripted_account(token: dict[str, object], stores: list[dict[str, object]]) -> RecordingServer:
    """LaunchDarkly as `check` reads it: the token is `tok1` with `token`'s fields, the environment p/e exists."""
    answers: dict[str, object] = {
        "/api/v2/versions": {"validVersions": [20240415], "latestVersion": 20240415, "currentVersion": 20240415},
        "/api/v2/projects/p/environments/e": {"_id": "cs-1", "key": "e", "name": "E", "apiKey": "sdk-secret"},
        "/api/v2/caller-identity": {"tokenId": "tok1", "tokenKind": "auth", "authKind": "token", "serviceToken": True},
        "/api/v2/tokens/tok1": {"_id": "tok1", "ownerId": "o", "memberId": "m", "creationDate": 0, **token},
        "/api/v2/roles/role1": {
            "_id": "role1",
            "key": "segment-sync",
            "name": "Segment sync",
            "policy": [
                {
                    "effect": "allow",
                    "actions": ["createSegment", "updateIncluded"],
                    "resources": ["proj/p:env/e:segment/*"],
                }
            ],
        },
        "/api/v2/integration-capabilities/big-segment-store": {"_links": {}, "items": stores},
    }
    return RecordingServer(
        respond=lambda r: Scripted(200, body=answers[r.path]) if r.path in answers else Scripted(404, body={})
    )


def redis_store(environment: str) -> dict[str, object]:
    return {
        "_id": "s1",
        "_links": {},
        "integrationKey": "redis",
        "projectKey": "p",
        "environmentKey": environment,
        "config": {},
        "on": True,
        "tags": [],
        "name": "Prod Redis",
        "version": 1,
        "_status": {"available": True, "potentiallyStale": False, "lastSync": 0},
    }


def check_against(server: RecordingServer, *more: str) -> subprocess.CompletedProcess[str]:
    """`check` of environment p/e against a scripted LaunchDarkly, which is closed afterwards."""
    try:
        return run(
            "check",
            "--base-url",
            server.url,
            "--token",
            LD_TOKEN,
            "--project-key",
            "p",
            "--environment-key",
            "e",
            *more,
        )
    finally:
        server.close()


def test_check_tells_whether_segments_written_to_the_environment_can_be_evaluated() -> None:
    server = scripted_account({"role": "reader", "customRoleIds": ["role1"]}, [redis_store("e")])
    result = check_against(server)
    assert result.returncode == 0, result.stdout
    assert "OK    instance: big segments (the rest writer)" in result.stdout
    assert "OK    write access: the token's custom role(s) allow createSegment and updateIncluded" in result.stdout
    assert "OK    big segment store: 'Prod Redis' (redis) is on for p/e and in sync" in result.stdout
    assert "sdk-secret" not in result.stdout and "verdict: all good\n" in result.stdout
    assert [r.headers["LD-API-Version"] for r in server.requests if "big-segment-store" in r.path] == ["beta"]


def test_check_fails_a_read_only_token_and_warns_of_a_missing_store() -> None:
    result = check_against(
        scripted_account({"role": "reader"}, [redis_store("other")]), "--writer", "segment-audiences"
    )
    assert result.returncode == 1
    assert "OK    instance: 127.0.0.1 offers synced segments" in result.stdout
    assert "FAIL  write access: built-in role 'reader' cannot write" in result.stdout
    assert "WARN  big segment store: no persistent store integration is on for p/e (none)" in result.stdout
    assert "Relay Proxy" in result.stdout and "verdict: 1 problem(s), 1 to check" in result.stdout


def test_check_warns_when_the_api_does_not_show_the_tokens_role() -> None:
    server = RecordingServer(
        respond=lambda r: (
            Scripted(403, body={"code": "forbidden", "message": "Access to the requested resource was denied"})
            if r.path.startswith(("/api/v2/tokens", "/api/v2/integration"))
            else Scripted(200, body={"tokenId": "tok1"})
        )
    )
    result = check_against(server)
    assert result.returncode == 0, result.stdout
    assert "WARN  write access: cannot tell: GET /api/v2/tokens/{id} answered 403 forbidden" in result.stdout
    assert "Authorization" in result.stdout
    assert "WARN  big segment store: cannot tell" in result.stdout and "2 to check" in result.stdout


def test_version_and_a_missing_region_are_answered_as_the_aws_cli_would(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("ld-audiences ")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert main(["status", "--table", "t"]) == 2
    assert "give --region" in capsys.readouterr().err
