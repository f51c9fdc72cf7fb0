"""The dashboard and the alarms show what the functions really emit.

A CloudWatch metric is its namespace, its name and its whole set of dimensions: a widget or an alarm that
names one of them differently shows nothing, silently. So the emitted set is not written down here: both
real handlers run (metrics on, with the namespace and service names template.yaml gives them) over
scenarios that produce every metric — accepted, skipped and rejected events, 2xx/4xx/5xx answers, contexts
added and removed, a LaunchDarkly 429 and its retry, a dead-lettered change, failed records — and their EMF
output is read back. Every LdAudiences metric in the dashboard and in the alarms must be one of those, every
emitted one must be on the dashboard, and the Logs Insights widget must read the line sync really logs for a
dead-lettered change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ld_audiences_local.handlers import FakeLambdaContext, load_function
from tests.conftest import CLIENT_SIDE_ID, Aws
from tests.integration.test_handlers import WEBHOOK, api_event
from tests.recording_server import RecordingServer, Scripted
from tests.segment_events import engage_event
from tests.unit.test_template import function_env, load_template, resources, target

TEMPLATE = load_template()
NAMESPACE = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
# A metric as CloudWatch identifies it: namespace, name, and the dimensions with their values.
Metric = tuple[str, str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Reference:
    """A metric a widget or an alarm shows. `dimensions` maps a name to its value, or to None when a
    SEARCH expression leaves that dimension free."""

    where: str
    namespace: str
    name: str
    dimensions: dict[str, str | None] = field(hash=False)

    def matches(self, metric: Metric) -> bool:
        namespace, name, dimensions = metric
        values = dict(dimensions)
        return (
            (namespace, name) == (self.namespace, self.name)
            and values.keys() == self.dimensions.keys()
            and all(expected in (None, values[key]) for key, expected in self.dimensions.items())
        )


# ------------------------------------------------------------------------------ what the template shows


def dashboard_body(t: dict[str, Any]) -> dict[str, Any]:
    """The dashboard JSON, with each ${...} of its Fn::Sub replaced: parameters by their defaults (some stand
    where JSON wants a number), anything else by its own name."""
    (dashboard,) = resources(t, "AWS::CloudWatch::Dashboard").values()
    template_text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(t["Parameters"][name]["Default"]) if name in t["Parameters"] else f"<{name}>"

    body: dict[str, Any] = json.loads(re.sub(r"\$\{([^}]+)\}", value, template_text))
    return body


SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\}(?P<terms>[^']*)',")
TERM = re.compile(r'(\w+)="([^"]*)"')


def search_reference(where: str, expression: str) -> Reference:
    match = SEARCH.search(expression)
    assert match, f"{where}: not a SEARCH expression this test can read: {expression}"
    namespace, *dimension_names = (part.strip() for part in match["schema"].split(","))
    terms = dict(TERM.findall(match["terms"]))
    name = terms.pop("MetricName")
    assert terms.keys() <= set(dimension_names), f"{where}: SEARCH filters on a dimension outside its schema"
    return Reference(where, namespace, name, {d: terms.get(d) for d in dimension_names})


def dashboard_references(t: dict[str, Any]) -> list[Reference]:
    references = []
    for widget in dashboard_body(t)["widgets"]:
        if widget["type"] != "metric":
            continue
        where = f"dashboard widget {widget['properties']['title']!r}"
        for entry in widget["properties"]["metrics"]:
            if isinstance(entry[0], dict):
                references.append(search_reference(where, entry[0]["expression"]))
                continue
            parts = [p for p in entry if not isinstance(p, dict)]
            assert parts[0] not in (".", "..."), f"{where}: write metrics out in full, no shorthand"
            namespace, name, *pairs = parts
            references.append(Reference(where, namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return references


def alarm_references(t: dict[str, Any]) -> list[Reference]:
    references = []
    for alarm_id, alarm in resources(t, "AWS::CloudWatch::Alarm").items():
        stats = [alarm["Properties"]]
        stats += [q["MetricStat"]["Metric"] for q in alarm["Properties"].get("Metrics", []) if "MetricStat" in q]
        for stat in stats:
            if "MetricName" in stat:
                dimensions = {d["Name"]: d["Value"] for d in stat.get("Dimensions", [])}
                references.append(Reference(f"alarm {alarm_id}", stat["Namespace"], stat["MetricName"], dimensions))
    return references


def unemitted(references: list[Reference], emitted: set[Metric]) -> list[str]:
    return [
        f"{r.where}: {r.name} {r.dimensions} is not emitted"
        for r in references
        if r.namespace == NAMESPACE and not any(r.matches(metric) for metric in emitted)
    ]


# ------------------------------------------------------------------------------ what the functions emit


@dataclass
class Observed:
    metrics: set[Metric] = field(default_factory=set)
    log_lines: list[dict[str, Any]] = field(default_factory=list)

    def read(self, output: str) -> None:
        for line in output.splitlines():
            with contextlib.suppress(ValueError):
                document = json.loads(line)
                if not isinstance(document, dict):
                    continue
                if "_aws" in document:
                    self.metrics.update(emf_metrics(document))
                elif "level" in document:
                    self.log_lines.append(document)


def emf_metrics(blob: dict[str, Any]) -> Iterator[Metric]:
    for directive in blob["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            dimensions = frozenset((name, str(blob[name])) for name in dimension_set)
            for metric in directive["Metrics"]:
                yield directive["Namespace"], metric["Name"], dimensions


class Functions:
    """The real handlers, loaded with the environment template.yaml gives them (metrics on)."""

    def __init__(self, aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.aws, self.monkeypatch, self.capsys = aws, monkeypatch, capsys
        self.observed = Observed()
        monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
        self.powertools_env = {
            function: {
                name: function_env(TEMPLATE, function_id)[name]
                for name in ("POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_SERVICE_NAME")
            }
            for function, function_id in (("ingest", "IngestFunction"), ("sync", "SyncFunction"))
        }

    def _run(self, function: str, event: dict[str, Any], timeout: float, **env: str) -> dict[str, Any]:
        base = {
            "QUEUE_URL": self.aws.queue_url,
            "DLQ_URL": self.aws.dlq_url,
            "STATE_TABLE_NAME": self.aws.table,
            "WEBHOOK_SECRET_ARN": self.aws.webhook_secret,
            "LD_TOKEN_SECRET_ARN": self.aws.token_secret,
            "LD_CLIENT_SIDE_ID": CLIENT_SIDE_ID,
            **self.powertools_env[function],
        }
        for name, value in {**base, **env}.items():
            self.monkeypatch.setenv(name, value)
        self.capsys.readouterr()  # what came before is not this function's
        module = load_function(function)
        # Powertools keeps metrics and dimensions in class-level state shared by every Metrics() of the process:
        # both functions (and what earlier tests left, the local stack's among them) would mix their `service`
        # dimensions. On Lambda each function has a process of its own: start from that.
        module.metrics.clear_metrics()
        # Powertools binds a service's log stream once per process, maybe to an earlier test's stdout, closed
        # by now (setStream would flush it): point it at this test's stdout.
        handler = module.logger.registered_handler
        assert isinstance(handler, logging.StreamHandler)
        previous, handler.stream = handler.stream, sys.stdout
        try:
            result: dict[str, Any] = module.lambda_handler(event, FakeLambdaContext(function, timeout_seconds=timeout))
        finally:
            handler.stream = previous
        self.observed.read(self.capsys.readouterr().out)
        return result

    def ingest(self, body: Any, secret: str = WEBHOOK, **env: str) -> int:
        status: int = self._run("ingest", api_event(body, secret=secret), 15, **env)["statusCode"]
        return status

    def sync(self, launchdarkly: RecordingServer, timeout: float = 30, **env: str) -> dict[str, Any]:
        event = self.aws.sqs_event()
        assert event["Records"], "nothing was queued"
        return self._run("sync", event, timeout, LD_BASE_URL=launchdarkly.url, **env)


@pytest.fixture
def observed(aws: Aws, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Observed]:
    functions = Functions(aws, monkeypatch, capsys)
    reset_now = {"X-Ratelimit-Reset": str(int(time.time() * 1000))}
    launchdarkly = RecordingServer(script=[Scripted(429, headers=reset_now)], default=Scripted(204))
    try:
        # ingest: 200 with events accepted (an add and a removal), skipped and rejected; 401; 503.
        events = [
            engage_event(user_id="added"),
            engage_event(user_id="removed", value=False),
            engage_event(user_id="computed-trait", computation_class="trait"),
            engage_event(user_id="invalid", value="maybe"),
        ]
        assert functions.ingest(events) == 200
        assert functions.ingest(events, secret="not-the-secret") == 401
        missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing"
        assert functions.ingest(events, WEBHOOK_SECRET_ARN=missing) == 503

        # sync: contexts added and removed, after a 429 and its retry.
        assert functions.sync(launchdarkly) == {"batchItemFailures": []}
        assert len(launchdarkly.requests) == 2

        # sync: LaunchDarkly refuses the only key of a chunk (dead-lettered), then fails (the change waits);
        # then the state table cannot be written (the record fails back to SQS).
        launchdarkly.default = Scripted(400, body={"code": "invalid_request", "message": "bad cohort"})
        assert functions.ingest([engage_event(user_id="refused", audience_id="aud_refused")]) == 200
        assert functions.sync(launchdarkly) == {"batchItemFailures": []}
        launchdarkly.default = Scripted(500, body={"code": "internal", "message": "down"})
        assert functions.ingest([engage_event(user_id="failing", audience_id="aud_failing")]) == 200
        assert functions.sync(launchdarkly, timeout=6) == {"batchItemFailures": []}
        assert functions.ingest([engage_event(user_id="unrecorded", audience_id="aud_unrecorded")]) == 200
        failed = functions.sync(launchdarkly, timeout=6, STATE_TABLE_NAME="no-such-table")["batchItemFailures"]
        assert len(failed) == 1
    finally:
        launchdarkly.close()
    yield functions.observed


# ------------------------------------------------------------------------------ the checks


def test_dashboard_and_alarms_show_only_metrics_the_functions_emit(observed: Observed) -> None:
    emitted = observed.metrics
    assert {namespace for namespace, _, _ in emitted} == {NAMESPACE}
    references = dashboard_references(TEMPLATE) + alarm_references(TEMPLATE)
    assert any(r.where.startswith("alarm") and r.namespace == NAMESPACE for r in references)
    problems = unemitted(references, emitted)
    names = sorted({f"{name} {dict(dimensions)}" for _, name, dimensions in emitted})
    assert not problems, "\n".join(problems) + "\nemitted:\n  " + "\n  ".join(names)

    # The check itself: a metric name, a dimension or a service name off by a little is caught.
    (alarm,) = [r for r in references if r.where == "alarm LaunchDarklyRateLimitedAlarm"]
    assert alarm.dimensions["status"] == "429"
    wrong = [
        Reference("renamed", NAMESPACE, "RecordFailed", {"service": "ld-audiences-sync"}),
        Reference("no service", NAMESPACE, "RecordsFailed", {}),
        Reference("other service", NAMESPACE, "RecordsFailed", {"service": "ld-audiences-ingest"}),
        Reference(
            "unseen status", NAMESPACE, "LaunchDarklyRequests", {"service": "ld-audiences-sync", "status": "418"}
        ),
    ]
    assert len(unemitted(wrong, emitted)) == len(wrong)


def test_every_emitted_metric_is_on_the_dashboard(observed: Observed) -> None:
    shown = dashboard_references(TEMPLATE)
    missing = sorted(
        f"{name} {dict(dimensions)}"
        for namespace, name, dimensions in observed.metrics
        if not any(r.matches((namespace, name, dimensions)) for r in shown)
    )
    assert not missing, "emitted, but on no dashboard widget (add them to the Dashboard in template.yaml):\n" + (
        "\n".join(missing)
    )


def test_dead_letter_widget_reads_the_line_sync_logs(observed: Observed) -> None:
    (widget,) = [w for w in dashboard_body(TEMPLATE)["widgets"] if w["type"] == "log"]
    query = widget["properties"]["query"]
    source = re.search(r"SOURCE '<([^>]+)>'", query)
    sync_log_group = target(TEMPLATE["Resources"]["SyncFunction"]["Properties"]["LoggingConfig"]["LogGroup"])
    assert source and source.group(1) == sync_log_group, query
    filters = dict(re.findall(r"(\w+) = '([^']*)'", query))
    (group_by,) = re.findall(r"\bby (\w+)", query)
    lines = [line for line in observed.log_lines if all(line.get(k) == v for k, v in filters.items())]
    assert len(lines) == 1, (
        f"the query {query!r} matches {len(lines)} of the lines sync logged, not the one dead letter"
    )
    assert lines[0]["correlation_id"].startswith("personas_")
    assert isinstance(lines[0].get(group_by), str) and lines[0][group_by], f"no {group_by!r} in {lines[0]}"
