"""What `ld-audiences local` prints once its stack runs, and which LaunchDarkly token the stack stores.

Every printed command runs as printed, from any directory and shell: it names this CLI by its absolute path
(the venv's script; `ld-audiences` alone is not on PATH until the venv is active) and the fixtures by theirs,
and carries every URL and the emulator's token it needs. With fixed ports (`--port`, `--aws-port`,
`--launchdarkly-port`) the lines stay valid across restarts.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ld_audiences_local import defaults
from ld_audiences_local.urls import loopback_origin

if TYPE_CHECKING:
    from ld_audiences_local.stack import LocalStack

SCRIPT = "ld-audiences"


def is_real_launchdarkly(launchdarkly_url: str | None) -> bool:
    """A LaunchDarkly elsewhere than this machine: any URL not on loopback (no URL: the in-process emulator)."""
    return bool(launchdarkly_url) and loopback_origin(launchdarkly_url or "") is None


def launchdarkly_token(launchdarkly_url: str | None, given: str | None, environ: Mapping[str, str]) -> str:
    """The token the stack stores: the one given, else LD_API_TOKEN for a real LaunchDarkly only (it often holds
    a real token, which an emulator must never receive), else the emulator's own."""
    if given:
        return given
    if is_real_launchdarkly(launchdarkly_url) and environ.get("LD_API_TOKEN"):
        return environ["LD_API_TOKEN"]
    return defaults.DEFAULT_LD_TOKEN


def cli_command() -> str:
    """How any shell runs this CLI: the running script's absolute path, else the one beside this Python."""
    running = Path(sys.argv[0])
    if running.name == SCRIPT and running.is_file():
        return shlex.quote(str(running.absolute()))
    beside = shutil.which(SCRIPT, path=str(Path(sys.executable).parent))
    return shlex.quote(beside) if beside else SCRIPT


def first_audience(events_dir: Path) -> str | None:
    """The audience of the first fixture that names one (the replay line sends them all)."""
    for path in sorted(events_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for event in doc.get("batch", [doc]) if isinstance(doc, dict) else doc:
            personas = event.get("context", {}).get("personas", {}) if isinstance(event, dict) else {}
            if isinstance(personas, dict) and personas.get("computation_id"):
                return str(personas["computation_id"])
    return None


def ready_to_paste(local: LocalStack, events_dir: Path) -> list[str]:
    """The webhook secret when it is the local default (no real secret), the LaunchDarkly token's origin, and
    commands to paste."""
    cli = cli_command()
    # The operator CLI knows no local default: moto's endpoint, dummy credentials and region are given like any.
    aws = (
        f"AWS_ACCESS_KEY_ID={defaults.ACCESS_KEY} AWS_SECRET_ACCESS_KEY={defaults.SECRET_KEY} "
        f"AWS_DEFAULT_REGION={defaults.REGION}"
    )
    queues = f"--endpoint-url {local.moto_url} --queue-url {local.queue_url} --dlq-url {local.dlq_url}"
    default = local.webhook_secret == defaults.DEFAULT_WEBHOOK_SECRET
    secret = shlex.quote(local.bearer_secret) if default else "'<your webhook secret>'"
    events = shlex.quote(str(events_dir.absolute()))
    real = is_real_launchdarkly(local.launchdarkly_url)
    lines = [
        f"status page:  {local.url}/",
        f"webhook secret: {local.bearer_secret} (the local default)" if default else "webhook secret: given, not shown",
        "LaunchDarkly token: given, not shown"
        if real
        else f"LaunchDarkly token: {local.launchdarkly_token} (the emulator's; LD_API_TOKEN is used only with a "
        "real LaunchDarkly at --launchdarkly-url)",
        "try:",
        f"  {cli} replay {events} --endpoint {local.url} --secret {secret}",
        f"  {aws} {cli} redrive {queues} --dry-run",
        f"  {aws} {cli} status {queues} --table {defaults.TABLE_NAME}",
    ]
    audience, where = first_audience(events_dir), local.launchdarkly_environment
    if audience and where:
        project, environment = where
        # A real LaunchDarkly's token is not printed: audit reads it from LD_API_TOKEN.
        token = "" if real else f" --token {shlex.quote(local.launchdarkly_token)}"
        lines.append(
            f"  {aws} {cli} audit {queues} --table {defaults.TABLE_NAME} --audience {shlex.quote(audience)} "
            f"--base-url {local.launchdarkly_url} --project-key {shlex.quote(project)} "
            f"--environment-key {shlex.quote(environment)} --writer {local.writer}{token}"
        )
    if cli == SCRIPT:
        lines.append(f"({SCRIPT} is on PATH once its venv is active: source .venv/bin/activate)")
    return lines
