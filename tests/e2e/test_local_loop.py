"""The local loop a developer relies on: `ld-audiences local` on the ports it is given, printed commands that run
as printed, an emulator that never receives a real token, and servers that no other web origin can read."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from ld_audiences_local import defaults
from ld_audiences_local.local_aws import LocalAws
from ld_audiences_local.local_banner import first_audience, launchdarkly_token
from ld_audiences_local.stack import LocalStack
from tests.conftest import free_port
from tests.integration.test_cli import LineReader, _terminate, as_pasted, clean_env, run

# The venv's console script: what the banner names, so that its lines run without the venv active.
CLI = Path(sys.executable).parent / "ld-audiences"

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
EVIL = "http://evil.example"
REAL_TOKEN = "api-real-launchdarkly-token-3f9e"  # what LD_API_TOKEN often holds
LIST_QUEUES = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    aws = LocalAws()
    aws.start()
    yield aws.url
    aws.stop()


def _no_cors(response: requests.Response) -> bool:
    return not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_moto_answers_its_own_tools(moto: str) -> None:
    answer = requests.post(moto, data="{}", headers=LIST_QUEUES, timeout=5)
    assert answer.status_code == 200 and _no_cors(answer)
    # Its own origin is no other origin; moto's CORS headers are still never sent.
    own = requests.post(moto, data="{}", headers={**LIST_QUEUES, "Origin": moto}, timeout=5)
    assert own.status_code == 200 and _no_cors(own)


def test_moto_refuses_another_origin(moto: str) -> None:
    port = moto.rsplit(":", 1)[1]
    for headers in (
        {"Origin": EVIL},
        {"Origin": "null"},
        {"Origin": f"http://localhost:{int(port) + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Host": f"evil.example:{port}"},  # DNS rebinding: the page's own name
    ):
        answer = requests.post(moto, data="{}", headers={**LIST_QUEUES, **headers}, timeout=5)
        assert answer.status_code in (403, 421), headers
        assert _no_cors(answer), headers
    preflight = requests.options(
        moto, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST", "Host": f"127.0.0.1:{port}"}, timeout=5
    )
    assert preflight.status_code == 403 and _no_cors(preflight)


def test_status_page_checks_host_and_may_not_be_framed() -> None:
    with LocalStack(port=0, batching_window=0.2) as stack:
        port = stack.url.rsplit(":", 1)[1]
        for path in ("/", "/status.json"):
            page = requests.get(f"{stack.url}{path}", timeout=10)
            assert page.status_code == 200
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert _no_cors(page)
            for headers in ({"Host": f"evil.example:{port}"}, {"Host": "127.0.0.1:1"}, {"Origin": EVIL}):
                refused = requests.get(f"{stack.url}{path}", headers=headers, timeout=10)
                assert refused.status_code in (403, 421), (path, headers)
                assert "segments" not in refused.text


@pytest.mark.parametrize(
    "url, expected",
    [
        (None, defaults.DEFAULT_LD_TOKEN),  # the in-process emulator
        ("http://127.0.0.1:8765", defaults.DEFAULT_LD_TOKEN),  # `ld-audiences emulator`
        ("https://app.launchdarkly.com", REAL_TOKEN),
    ],
)
def test_the_real_token_goes_only_to_a_real_launchdarkly(url: str | None, expected: str) -> None:
    assert launchdarkly_token(url, None, {"LD_API_TOKEN": REAL_TOKEN}) == expected
    assert launchdarkly_token(url, "given", {"LD_API_TOKEN": REAL_TOKEN}) == "given"


def test_the_audit_line_names_a_bundled_audience() -> None:
    fixture = json.loads((REPO_ROOT / "events/segment/01_beta_testers_identify_single.json").read_text())
    assert first_audience(REPO_ROOT / "events" / "segment") == fixture["context"]["personas"]["computation_id"]


def _run_line(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A printed line, run as a shell would: its NAME=value words in the environment, the venv's script."""
    words = shlex.split(line)
    assert str(CLI) in words, f"not the venv's script: {line}"
    return run(*as_pasted(line, env), env=env)


def test_local_serves_on_the_ports_it_is_given_and_its_lines_run_as_printed(tmp_path: Path) -> None:
    aws_port, ld_port, port = free_port(), free_port(), free_port()
    # A shell with no AWS settings, a real token in LD_API_TOKEN, and another working directory.
    env = {k: v for k, v in clean_env(LD_API_TOKEN=REAL_TOKEN).items() if not k.startswith("AWS_")}
    ports = ("--port", str(port), "--aws-port", str(aws_port), "--launchdarkly-port", str(ld_port))
    process = subprocess.Popen(  # noqa: S603 (our own console script)
        [str(CLI), "local", *ports, "--batching-window", "0.2", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    reader = LineReader(process)
    try:
        assert reader.wait_for("moto (AWS): ", 30).split()[-1] == f"http://127.0.0.1:{aws_port}"
        assert reader.wait_for("LaunchDarkly: ", 5).split()[1] == f"http://127.0.0.1:{ld_port}"
        assert "the emulator's" in reader.wait_for("LaunchDarkly token: ", 5)
        replay = reader.wait_for(f"  {CLI} replay ", 5)
        aws = "  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
        reader.wait_for(f"{aws} {CLI} redrive ", 5)
        status = reader.wait_for(f"{aws} {CLI} status ", 5)
        audit = reader.wait_for(f"{aws} {CLI} audit ", 5)
        assert reader.wait_for("listening on ", 30) == f"listening on http://127.0.0.1:{port}"
        assert f"--base-url http://127.0.0.1:{ld_port}" in audit and REAL_TOKEN not in audit

        versions = f"http://127.0.0.1:{ld_port}/api/v2/versions"
        assert requests.get(versions, headers={"Authorization": REAL_TOKEN}, timeout=5).status_code == 401
        assert requests.get(versions, headers={"Authorization": "api-local-token"}, timeout=5).status_code == 200

        replayed = _run_line(replay, env)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert status.split("--queue-url ")[1].startswith(f"http://127.0.0.1:{aws_port}/")
        deadline = time.monotonic() + 30
        while True:  # the replayed changes reach LaunchDarkly a moment later
            audited = _run_line(audit, env)
            if audited.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert audited.returncode == 0, audited.stdout + audited.stderr
    finally:
        _terminate(process, reader)
    assert process.returncode == 0


@pytest.mark.parametrize("flag", ["--port", "--aws-port", "--launchdarkly-port"])
def test_a_taken_port_is_named_by_its_flag(flag: str) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as taken:
        ports = {"--port": "0", "--aws-port": "0", "--launchdarkly-port": "0", flag: str(taken.server_address[1])}
        result = run("local", *(word for pair in ports.items() for word in pair), timeout=30)
    assert result.returncode == 1
    assert f"port {taken.server_address[1]} ({flag}) is in use" in result.stderr


def test_fixed_ports_give_the_same_urls_after_a_restart() -> None:
    ports = {"port": free_port(), "aws_port": free_port(), "launchdarkly_port": free_port()}
    seen = []
    for _ in range(2):
        with LocalStack(**ports, batching_window=0.2) as stack:
            seen.append((stack.url, stack.moto_url, stack.queue_url, stack.dlq_url, stack.launchdarkly_url))
    assert seen[0] == seen[1]
    assert seen[0][1] == f"http://127.0.0.1:{ports['aws_port']}"
