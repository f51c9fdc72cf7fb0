"""What cfn-lint and checkov cannot see in template.yaml, and the fixtures that go with it.

The checks are plain functions returning a list of problems, so each test asserts "no problems" on the
real template and a few self-tests assert that a deliberately broken copy *is* caught.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from ld_audiences import limits
from ld_audiences.change import MembershipChange
from ld_audiences.config import MAX_CHUNK_SIZE, IngestSettings, NormalizeSettings
from ld_audiences.normalize import format_time, parse_timestamp
from ld_audiences.state_table import table_definition
from ld_audiences_local.api_gateway import (
    BINARY_MEDIA_TYPES,
    INGEST_TIMEOUT,
    LAMBDA_MAX_REQUEST,
    MINIMUM_COMPRESSION_SIZE,
    is_binary,
)
from scripts.predeploy_check import CfnLoader as CfnLoader  # re-exported: other tests load with it
from scripts.predeploy_check import constraint_problems, load_template, read_environment

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
LAMBDA_EVENTS = EVENTS / "lambda"
SEGMENT_EVENTS = EVENTS / "segment"
CONFIG_PY = ROOT / "layers" / "shared" / "ld_audiences" / "config.py"

LOCAL_WEBHOOK_SECRET = "local-webhook-secret"  # docs/CONTRACTS.md, local stack defaults

# docs/CONTRACTS.md, "Environment variables": what each function reads.
BOTH_ENV = {
    "QUEUE_URL",  # ingest queues changes; sync queues deferred ones and reasserts again
    "SECRETS_MAX_AGE",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "POWERTOOLS_LOGGER_SAMPLE_RATE",
}
INGEST_ENV = BOTH_ENV | {
    "WEBHOOK_SECRET_ARN",
    "CONTEXT_KEY_POLICY",
    "DEFAULT_CONTEXT_KIND",
    "ALLOWED_CONTEXT_KINDS",
    "MAX_BODY_BYTES",
    "MAX_EVENTS_PER_REQUEST",
}
SYNC_ENV = BOTH_ENV | {
    "LD_TOKEN_SECRET_ARN",
    "LD_WRITER",
    "LD_CLIENT_SIDE_ID",
    "LD_PROJECT_KEY",
    "LD_ENVIRONMENT_KEY",
    "LD_BASE_URL",
    "LD_CHUNK_SIZE",
    "STATE_TABLE_NAME",
    "DLQ_URL",
    "LATE_APPLY_RECHECK_SECONDS",
    "SYNC_BATCH_SIZE",
}
CONTEXT_KEY_POLICIES = {
    "user_id_only",
    "user_id_then_email",
    "user_id_then_anonymousId",
    "user_id_then_email_then_anonymousId",
    "email_only",
}

# Least privilege, as a whitelist: action -> logical ids (or "*") it may apply to.
XRAY = {"xray:PutTraceSegments": {"*"}, "xray:PutTelemetryRecords": {"*"}}
INGEST_ALLOWED = {
    "sqs:SendMessage": {"Queue"},
    "secretsmanager:GetSecretValue": {"WebhookSecret"},
    "logs:CreateLogStream": {"IngestFunctionLogGroup"},
    "logs:PutLogEvents": {"IngestFunctionLogGroup"},
    **XRAY,
}
INGEST_REQUIRED = {
    ("sqs:SendMessage", "Queue"),
    ("secretsmanager:GetSecretValue", "WebhookSecret"),
    ("logs:CreateLogStream", "IngestFunctionLogGroup"),
    ("logs:PutLogEvents", "IngestFunctionLogGroup"),
}
SYNC_ALLOWED = {
    "sqs:ReceiveMessage": {"Queue"},
    "sqs:DeleteMessage": {"Queue"},
    "sqs:GetQueueAttributes": {"Queue"},
    "sqs:SendMessage": {"DeadLetterQueue", "Queue"},
    "secretsmanager:GetSecretValue": {"LaunchDarklyTokenSecret"},
    "dynamodb:GetItem": {"StateTable"},
    "dynamodb:BatchGetItem": {"StateTable"},
    "dynamodb:BatchWriteItem": {"StateTable"},
    "dynamodb:Query": {"StateTable", "<index pending-audiences>"},
    "dynamodb:UpdateItem": {"StateTable"},
    "logs:CreateLogStream": {"SyncFunctionLogGroup"},
    "logs:PutLogEvents": {"SyncFunctionLogGroup"},
    **XRAY,
}
SYNC_REQUIRED = {
    # what the SQS event source mapping needs (it polls with the function's role)
    ("sqs:ReceiveMessage", "Queue"),
    ("sqs:DeleteMessage", "Queue"),
    ("sqs:GetQueueAttributes", "Queue"),
    ("sqs:SendMessage", "DeadLetterQueue"),
    ("sqs:SendMessage", "Queue"),  # reasserts and ticks
    ("secretsmanager:GetSecretValue", "LaunchDarklyTokenSecret"),
    ("dynamodb:UpdateItem", "StateTable"),
    ("dynamodb:BatchGetItem", "StateTable"),
    ("dynamodb:BatchWriteItem", "StateTable"),  # the pending log and the context items
    ("dynamodb:Query", "StateTable"),  # an audience's pending log
    ("dynamodb:Query", "<index pending-audiences>"),  # the audiences with pending changes
    ("logs:CreateLogStream", "SyncFunctionLogGroup"),
    ("logs:PutLogEvents", "SyncFunctionLogGroup"),
}

NINE_DIGIT_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")
CHANGE_FIELDS = {
    "v",
    "audience_id",
    "audience_key",
    "context_kind",
    "context_key",
    "included",
    "event_time",
    "message_id",
}


# ------------------------------------------------------------------------------------------ loading


@pytest.fixture(scope="module")
def tpl() -> dict[str, Any]:
    return load_template(TEMPLATE)


# ------------------------------------------------------------------------------------------ helpers


def resources(t: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t["Resources"].items() if v["Type"] == type_}


def props(t: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return t["Resources"][logical_id].get("Properties", {})


def param_default(t: dict[str, Any], name: str) -> Any:
    return t["Parameters"][name]["Default"]


NO_VALUE = "<AWS::NoValue>"
# Pseudo parameters as a deployment in us-east-1 would see them (overridable like parameters).
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "ld-audiences",
    "AWS::URLSuffix": "amazonaws.com",
}


def resolve(t: dict[str, Any], node: Any, overrides: dict[str, Any] | None = None) -> Any:
    """Resolve Ref-to-parameter, pseudo parameters, Fn::FindInMap, conditions (Fn::If, Fn::Equals, Fn::Not)
    and Fn::Sub over those, with parameter defaults unless overridden. References to resources stay as they
    are; AWS::NoValue becomes NO_VALUE."""
    overrides = overrides or {}
    if isinstance(node, dict) and len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref" and value == "AWS::NoValue":
            return NO_VALUE
        if key == "Ref" and (value in t.get("Parameters", {}) or value in PSEUDO):
            default = param_default(t, value) if value in t.get("Parameters", {}) else PSEUDO[value]
            return overrides.get(value, default)
        if key == "Fn::FindInMap":
            mapping, top, second = (resolve(t, part, overrides) for part in value)
            return t["Mappings"][mapping][str(top)][second]
        if key == "Fn::If":
            condition, when_true, when_false = value
            return resolve(t, when_true if holds(t, condition, overrides) else when_false, overrides)
        if key == "Fn::Equals":
            left, right = (resolve(t, part, overrides) for part in value)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not resolve(t, value[0], overrides)
        if key == "Condition":
            return holds(t, value, overrides)
        if key == "Fn::Sub" and isinstance(value, str):

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                resolved = resolve(t, {"Ref": name}, overrides)
                return str(resolved) if resolved != {"Ref": name} else match.group(0)

            return re.sub(r"\$\{([A-Za-z0-9:]+)\}", substitute, value)
    return node


def holds(t: dict[str, Any], condition: str, overrides: dict[str, Any] | None = None) -> bool:
    """Whether a named condition holds with these parameter values."""
    return bool(resolve(t, t["Conditions"][condition], overrides))


def created(t: dict[str, Any], logical_id: str, overrides: dict[str, Any] | None = None) -> bool:
    condition = t["Resources"][logical_id].get("Condition")
    return condition is None or holds(t, condition, overrides)


def as_int(value: Any) -> int:
    return int(str(value))


def target(expr: Any) -> str:
    """The logical id an IAM Resource expression points at, "*" for everything, or a description."""
    if expr == "*":
        return "*"
    if isinstance(expr, dict) and len(expr) == 1:
        ((key, value),) = expr.items()
        if key == "Ref":
            return str(value)
        if key == "Fn::GetAtt":
            return str(value[0])
        if key == "Fn::Sub" and isinstance(value, str):
            match = re.fullmatch(r"\$\{([A-Za-z0-9]+)(?:\.Arn)?\}", value)
            if match:
                return match.group(1)
            match = re.fullmatch(r"\$\{StateTable\.Arn\}/index/([a-z-]+)", value)
            if match:
                return f"<index {match.group(1)}>"
    return f"<unrecognised {expr!r}>"


def listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def function_env(t: dict[str, Any], logical_id: str) -> dict[str, Any]:
    global_vars = t.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = props(t, logical_id).get("Environment", {}).get("Variables", {})
    return {**global_vars, **own}


def function_property(t: dict[str, Any], logical_id: str, name: str) -> Any:
    own = props(t, logical_id)
    if name in own:
        return own[name]
    return t.get("Globals", {}).get("Function", {}).get(name)


def role_statements(t: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    """Every statement of the function's execution role (an explicit role is required)."""
    fn = props(t, function_id)
    role_ref = fn.get("Role")
    assert isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref, (
        f"{function_id} must use an explicit role: a SAM-generated one gets AWSLambdaBasicExecutionRole "
        "(logs on *) and, with an SQS event, AWSLambdaSQSQueueExecutionRole (every queue)"
    )
    role = t["Resources"][role_ref["Fn::GetAtt"][0]]
    assert role["Type"] == "AWS::IAM::Role"
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in listify(policy["PolicyDocument"]["Statement"])
    ]


def grants(statements: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        for action in listify(statement["Action"]):
            for resource in listify(statement["Resource"]):
                yield action, target(resource)


# ------------------------------------------------------------------------------------------ checks


def check_visibility_timeout(t: dict[str, Any]) -> list[str]:
    problems = []
    queue = props(t, "Queue")
    sync_timeout_expr = props(t, "SyncFunction")["Timeout"]
    param = t["Parameters"].get("SyncTimeoutSeconds", {})
    candidates = [param.get("Default")]
    candidates += param.get("AllowedValues", [])
    if "MaxValue" in param:
        candidates.append(param["MaxValue"])
    for value in candidates:
        overrides = {"SyncTimeoutSeconds": value}
        try:
            visibility = as_int(resolve(t, queue["VisibilityTimeout"], overrides))
        except KeyError as exc:
            problems.append(f"SyncTimeoutSeconds={value}: no visibility timeout mapped ({exc})")
            continue
        timeout = as_int(resolve(t, sync_timeout_expr, overrides))
        if visibility < 6 * timeout:
            problems.append(f"SyncTimeoutSeconds={value}: visibility {visibility} < 6 x {timeout}")
        if visibility > 43200:
            problems.append(f"SyncTimeoutSeconds={value}: visibility {visibility} above the SQS maximum")
        if not 1 <= timeout <= 900:
            problems.append(f"sync timeout {timeout} outside Lambda's 1..900")
    return problems


def check_batching(t: dict[str, Any]) -> list[str]:
    problems = []
    events = [e for e in props(t, "SyncFunction")["Events"].values() if e["Type"] == "SQS"]
    if len(events) != 1:
        return [f"expected one SQS event on SyncFunction, found {len(events)}"]
    event = events[0]["Properties"]
    batch = as_int(resolve(t, event.get("BatchSize", 10)))
    window = as_int(resolve(t, event.get("MaximumBatchingWindowInSeconds", 0)))
    if not 1 <= batch <= 10000:
        problems.append(f"default batch size {batch} outside 1..10000")
    if batch > 10 and window < 1:
        problems.append(f"default batch size {batch} > 10 needs a batching window >= 1 s, got {window}")
    if window > 300:
        problems.append(f"batching window {window} above 300 s")
    for name, limit in (("SyncBatchSize", limits.MAX_SYNC_BATCH), ("SyncBatchingWindowSeconds", 300)):
        param = t["Parameters"][name]
        if as_int(param.get("MaxValue", 10**9)) > limit:
            problems.append(f"{name} MaxValue above {limit}")
    if "ReportBatchItemFailures" not in event.get("FunctionResponseTypes", []):
        problems.append("ReportBatchItemFailures missing")
    concurrency = resolve(t, event.get("ScalingConfig", {}).get("MaximumConcurrency"))
    if concurrency is None or not 2 <= as_int(concurrency) <= 1000:
        problems.append(f"ScalingConfig.MaximumConcurrency {concurrency!r} outside 2..1000")
    if target(event.get("Queue")) != "Queue":
        problems.append("the SQS event does not read the Queue resource")
    return problems


def check_least_privilege(
    t: dict[str, Any],
    function_id: str,
    allowed: dict[str, set[str]],
    required: set[tuple[str, str]],
) -> list[str]:
    problems = []
    statements = role_statements(t, function_id)
    role_id = props(t, function_id)["Role"]["Fn::GetAtt"][0]
    if props(t, role_id).get("ManagedPolicyArns"):
        problems.append(f"{role_id} attaches managed policies (unscoped permissions)")
    if "Policies" in props(t, function_id):
        problems.append(f"{function_id} has SAM Policies next to an explicit Role")
    for statement in statements:
        for key in ("NotAction", "NotResource", "NotPrincipal"):
            if key in statement:
                problems.append(f"{function_id}: {key} in a statement")
    granted = set(grants(statements))
    for action, resource in sorted(granted):
        if "*" in action:
            problems.append(f"{function_id}: wildcard action {action}")
        elif action not in allowed:
            problems.append(f"{function_id}: unexpected action {action} on {resource}")
        elif resource not in allowed[action]:
            problems.append(f"{function_id}: {action} on {resource}, only {sorted(allowed[action])} allowed")
    for action, resource in sorted(required - granted):
        problems.append(f"{function_id}: missing {action} on {resource}")
    return problems


def check_env(t: dict[str, Any]) -> list[str]:
    problems = []
    for function_id, expected, forbidden in (
        ("IngestFunction", INGEST_ENV, SYNC_ENV - BOTH_ENV),
        ("SyncFunction", SYNC_ENV, INGEST_ENV - BOTH_ENV),
    ):
        env = function_env(t, function_id)
        for name in sorted(expected - env.keys()):
            problems.append(f"{function_id}: {name} not set")
        for name in sorted(forbidden & env.keys()):
            problems.append(f"{function_id}: gets {name}, which only the other function needs")
    return problems


# An unbatched first sync: Engage sends one request per member when the destination does not batch.
FIRST_SYNC_MEMBERS = 1_000_000
FIRST_SYNC_INTAKE_SECONDS = 20 * 60
# template.yaml, the comments on IngestFunction and the throttle parameters.
INGEST_SECONDS_PER_REQUEST = 0.2  # warm budget of a one-event request (secret cached, one SendMessageBatch)
LAMBDA_ACCOUNT_CONCURRENCY = 1000  # what a region's account starts with
LAMBDA_NEW_ENVIRONMENTS_AT_ONCE = 1000  # Lambda's scaling rate: 1,000 environments per function every 10 s
APIGW_ACCOUNT_RATE = 10000  # API Gateway's account throttle per region, shared with the account's other APIs


def stage_throttle(t: dict[str, Any], overrides: dict[str, Any] | None = None) -> tuple[int, int]:
    (settings,) = [s for s in props(t, "Api")["MethodSettings"] if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    rate = as_int(resolve(t, settings["ThrottlingRateLimit"], overrides))
    burst = as_int(resolve(t, settings["ThrottlingBurstLimit"], overrides))
    return rate, burst


def ingest_concurrency(t: dict[str, Any], overrides: dict[str, Any] | None = None) -> int:
    """Executions ingest may hold: its reserved concurrency, or else the account's pool less what sync may take."""
    reserved = props(t, "IngestFunction").get("ReservedConcurrentExecutions")
    if reserved is not None:
        return as_int(resolve(t, reserved, overrides))
    scaling = props(t, "SyncFunction")["Events"]["Changes"]["Properties"]["ScalingConfig"]
    return LAMBDA_ACCOUNT_CONCURRENCY - as_int(resolve(t, scaling["MaximumConcurrency"], overrides))


def check_intake(t: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    """The defaults let an unbatched 1,000,000-member first sync in within 20 minutes, and each link of the
    intake (stage throttle, burst, ingest's concurrency) admits what the one before it lets through."""
    problems = []
    rate, burst = stage_throttle(t, overrides)
    if FIRST_SYNC_MEMBERS / rate > FIRST_SYNC_INTAKE_SECONDS:
        problems.append(f"rate {rate}/s takes {FIRST_SYNC_MEMBERS / rate / 60:.0f} min for an unbatched first sync")
    if rate > APIGW_ACCOUNT_RATE:
        problems.append(f"rate {rate}/s is above API Gateway's account throttle")
    if burst < rate:
        problems.append(f"burst {burst} below the rate {rate}: a second's worth of requests cannot arrive together")
    if burst > LAMBDA_NEW_ENVIRONMENTS_AT_ONCE:
        problems.append(f"burst {burst}: more cold requests at once than Lambda adds environments for (5xx)")
    concurrency = ingest_concurrency(t, overrides)
    if concurrency / INGEST_SECONDS_PER_REQUEST < rate:
        problems.append(
            f"ingest concurrency {concurrency} serves {concurrency / INGEST_SECONDS_PER_REQUEST:.0f} requests/s "
            f"at {INGEST_SECONDS_PER_REQUEST} s each, below the stage rate {rate}/s"
        )
    if "ProvisionedConcurrencyConfig" in props(t, "IngestFunction"):
        problems.append("provisioned concurrency bills every hour; the comment on IngestFunction says why not")
    return problems


# ------------------------------------------------------------------------------------------ template


def test_template_is_sam(tpl: dict[str, Any]) -> None:
    assert tpl["Transform"] == "AWS::Serverless-2016-10-31"
    assert set(resources(tpl, "AWS::Serverless::Function")) == {"IngestFunction", "SyncFunction"}


def test_runtime_python313_arm64(tpl: dict[str, Any]) -> None:
    for function_id in ("IngestFunction", "SyncFunction"):
        assert function_property(tpl, function_id, "Runtime") == "python3.13"
        assert function_property(tpl, function_id, "Architectures") == ["arm64"]
        assert function_property(tpl, function_id, "Tracing") == "Active"
        assert function_property(tpl, function_id, "Handler") == "app.lambda_handler"
        assert function_property(tpl, function_id, "Layers") == [{"Ref": "SharedLayer"}]
    layer = tpl["Resources"]["SharedLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/shared"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert props(tpl, "IngestFunction")["CodeUri"].rstrip("/") == "functions/ingest"
    assert props(tpl, "SyncFunction")["CodeUri"].rstrip("/") == "functions/sync"


def test_layer_build_precompiles_for_the_runtime() -> None:
    makefile = (ROOT / "layers" / "shared" / "Makefile").read_text()
    assert re.search(r"^build-SharedLayer:", makefile, re.MULTILINE)
    assert "--invalidation-mode unchecked-hash" in makefile
    assert "--python-version 3.13" in makefile
    assert "aarch64" in makefile
    requirements = (ROOT / "layers" / "shared" / "requirements.txt").read_text()
    pins = {
        re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0].lower(): line
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"aws-lambda-powertools", "pydantic", "requests"} <= pins.keys()
    assert "boto3" not in pins, "boto3 comes with the Lambda runtime"
    # the layer and the dev environment must run the same Powertools
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev_pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("aws-lambda-powertools")]
    assert dev_pins and dev_pins[0].split("==")[1] == pins["aws-lambda-powertools"].split("==")[1]


# SAM refuses these in Globals: each function must say them.
NOT_ALLOWED_IN_GLOBALS = {"AutoPublishAliasAllProperties"}


def repeated_function_settings(t: dict[str, Any]) -> list[str]:
    """Settings both functions give the same value, or one repeats from Globals: they belong in Globals."""
    functions = [props(t, f) for f in resources(t, "AWS::Serverless::Function")]
    shared = set.intersection(*(set(f) for f in functions)) - NOT_ALLOWED_IN_GLOBALS
    problems = [
        f"both functions set {name}" for name in sorted(shared) if all(f[name] == functions[0][name] for f in functions)
    ]
    global_settings = t.get("Globals", {}).get("Function", {})
    for function_id in resources(t, "AWS::Serverless::Function"):
        for name, value in props(t, function_id).items():
            if global_settings.get(name) == value:
                problems.append(f"{function_id} repeats {name} from Globals")
    return problems


def test_function_settings_are_said_once(tpl: dict[str, Any]) -> None:
    assert repeated_function_settings(tpl) == []
    broken = copy.deepcopy(tpl)
    broken["Resources"]["IngestFunction"]["Properties"]["MemorySize"] = 512
    broken["Resources"]["SyncFunction"]["Properties"]["Timeout"] = 15
    assert repeated_function_settings(broken) == [
        "both functions set Timeout",
        "IngestFunction repeats MemorySize from Globals",
    ]


def test_every_deploy_moves_the_live_alias(tpl: dict[str, Any]) -> None:
    for function_id in ("IngestFunction", "SyncFunction"):
        assert function_property(tpl, function_id, "AutoPublishAlias") == "live"
        # A layer or setting change publishes a version too, not only a code change.
        assert function_property(tpl, function_id, "AutoPublishAliasAllProperties") is True
    assert "DeploymentPreference" not in props(tpl, "SyncFunction")


def test_ingest_deploys_gradually_and_rolls_back_on_its_alarms(tpl: dict[str, Any]) -> None:
    preference = props(tpl, "IngestFunction")["DeploymentPreference"]
    deployment_type = resolve(tpl, preference["Type"])
    assert deployment_type.startswith(("Canary", "Linear")), "the default shifts traffic gradually"
    assert "AllAtOnce" in tpl["Parameters"]["IngestDeploymentType"]["AllowedValues"]  # for a test stack
    watched = [
        (props(tpl, alarm_id)["MetricName"], dimension["Value"])
        for alarm_id in (target(a) for a in preference["Alarms"])
        for dimension in props(tpl, alarm_id)["Dimensions"]
    ]
    assert ("Errors", {"Ref": "IngestFunction"}) in watched
    assert ("5XXError", props(tpl, "Api")["Name"]) in watched


def test_tags_propagate_from_globals(tpl: dict[str, Any]) -> None:
    assert tpl["Globals"]["Function"]["PropagateTags"] is True
    assert tpl["Globals"]["Function"]["Tags"]
    for function_id in ("IngestFunction", "SyncFunction"):
        assert "Tags" not in props(tpl, function_id)


def test_visibility_timeout_is_at_least_six_times_the_sync_timeout(tpl: dict[str, Any]) -> None:
    assert check_visibility_timeout(tpl) == []
    # every allowed timeout is mapped, and nothing else is
    param = tpl["Parameters"]["SyncTimeoutSeconds"]
    assert {str(v) for v in param["AllowedValues"]} == set(tpl["Mappings"]["SyncTimeouts"])
    assert param["Default"] in param["AllowedValues"]
    assert as_int(resolve(tpl, props(tpl, "Queue")["VisibilityTimeout"])) == 360


def test_batching(tpl: dict[str, Any]) -> None:
    assert check_batching(tpl) == []
    assert param_default(tpl, "SyncBatchSize") == 1000
    assert param_default(tpl, "SyncBatchingWindowSeconds") == 1
    assert param_default(tpl, "SyncMaximumConcurrency") == 5


def test_rule_rejects_large_batches_without_window(tpl: dict[str, Any]) -> None:
    rule = tpl["Rules"]["BatchesAboveTenNeedAWindow"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SyncBatchingWindowSeconds"}, "0"]}
    (assertion,) = rule["Assertions"]
    allowed, ref = assertion["Assert"]["Fn::Contains"]
    assert ref == {"Ref": "SyncBatchSize"}
    assert sorted(allowed, key=int) == [str(n) for n in range(1, 11)]


def test_writer_rules(tpl: dict[str, Any]) -> None:
    rules = tpl["Rules"]
    seg = rules["SegmentAudiencesWriterNeedsClientSideId"]
    assert seg["RuleCondition"] == {"Fn::Equals": [{"Ref": "LaunchDarklyWriter"}, "segment-audiences"]}
    rest = json.dumps(rules["RestWriterNeedsProjectAndEnvironment"])
    assert "LaunchDarklyProjectKey" in rest
    assert "LaunchDarklyEnvironmentKey" in rest


def test_queue_and_dead_letter_queue(tpl: dict[str, Any]) -> None:
    queue, dlq = props(tpl, "Queue"), props(tpl, "DeadLetterQueue")
    redrive = queue["RedrivePolicy"]
    assert target(redrive["deadLetterTargetArn"]) == "DeadLetterQueue"
    max_receive = tpl["Parameters"]["MaxReceiveCount"]
    assert 1 <= as_int(resolve(tpl, redrive["maxReceiveCount"])) <= 10
    assert as_int(max_receive["MinValue"]) >= 1
    assert as_int(max_receive["MaxValue"]) <= 1000  # bounded: SQS allows 1..1000
    for encrypted in (queue, dlq):
        assert resolve(tpl, encrypted["SqsManagedSseEnabled"]) is True
        assert resolve(tpl, encrypted["KmsMasterKeyId"]) == NO_VALUE
    assert queue["MessageRetentionPeriod"] == 4 * 86400
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert "FifoQueue" not in queue


def test_state_table(tpl: dict[str, Any]) -> None:
    table = props(tpl, "StateTable")
    # The local stack and the tests create the table from state_table.py: the same layout as deployed.
    definition = table_definition("any")
    assert table["KeySchema"] == definition["KeySchema"]
    assert table["AttributeDefinitions"] == definition["AttributeDefinitions"]
    assert table["BillingMode"] == definition["BillingMode"]
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_secrets(tpl: dict[str, Any]) -> None:
    webhook = props(tpl, "WebhookSecret")
    generated = webhook["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    assert generated["ExcludePunctuation"] is True
    # a plain string, not JSON: no template key
    assert "SecretStringTemplate" not in generated
    token = props(tpl, "LaunchDarklyTokenSecret")
    assert "put-secret-value" in token["Description"]


def test_every_env_var_the_functions_read_is_set(tpl: dict[str, Any]) -> None:
    assert check_env(tpl) == []
    ingest, sync = function_env(tpl, "IngestFunction"), function_env(tpl, "SyncFunction")
    assert ingest["POWERTOOLS_METRICS_NAMESPACE"] == "LdAudiences"
    assert ingest["POWERTOOLS_SERVICE_NAME"] != sync["POWERTOOLS_SERVICE_NAME"]
    assert target(ingest["QUEUE_URL"]) == "Queue"
    assert target(ingest["WEBHOOK_SECRET_ARN"]) == "WebhookSecret"
    assert target(sync["LD_TOKEN_SECRET_ARN"]) == "LaunchDarklyTokenSecret"
    assert target(sync["DLQ_URL"]) == "DeadLetterQueue"
    assert target(sync["STATE_TABLE_NAME"]) == "StateTable"
    assert ingest["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}


def test_env_vars_read_by_config_are_set(tpl: dict[str, Any]) -> None:
    if not CONFIG_PY.exists():
        pytest.skip("layers/shared/ld_audiences/config.py not written yet")
    source = CONFIG_PY.read_text()
    read = set(re.findall(r"(?:_env|_int_env|_choice|environ\.get|getenv)\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", source))
    assert read, "found no environment variable reads in config.py"
    set_somewhere = function_env(tpl, "IngestFunction").keys() | function_env(tpl, "SyncFunction").keys()
    assert read - set_somewhere == set()


def test_parameters(tpl: dict[str, Any]) -> None:
    params = tpl["Parameters"]
    assert set(params["ContextKeyPolicy"]["AllowedValues"]) == CONTEXT_KEY_POLICIES
    assert params["ContextKeyPolicy"]["Default"] == "user_id_only"
    assert params["LaunchDarklyWriter"]["AllowedValues"] == ["segment-audiences", "rest"]
    assert params["LaunchDarklyWriter"]["Default"] == "segment-audiences"
    assert params["LaunchDarklyBaseUrl"]["Default"] == "https://app.launchdarkly.com"
    assert params["DefaultContextKind"]["Default"] == "user"
    assert params["ChunkSize"]["Default"] == 1000
    assert params["AlarmEmail"]["Default"] == ""
    assert params["AllowedContextKinds"]["Default"] == ""  # the default kind only
    for name, spec in params.items():
        assert spec.get("Description"), f"parameter {name} has no description"


def test_request_limits_are_ones_lambda_lets_the_function_see(tpl: dict[str, Any]) -> None:
    params = tpl["Parameters"]
    body, events = params["MaxBodyBytes"], params["MaxEventsPerRequest"]
    runtime = IngestSettings(queue_url="q", webhook_secret_id="w", normalize=NormalizeSettings())
    assert as_int(body["MaxValue"]) == limits.MAX_BODY_BYTES <= LAMBDA_MAX_REQUEST - 1024 * 1024
    assert as_int(body["Default"]) == runtime.max_body_bytes
    assert as_int(events["MaxValue"]) == limits.MAX_EVENTS_PER_REQUEST
    assert as_int(events["Default"]) == runtime.max_events


def test_chunk_size_is_bounded_like_the_runtime_config(tpl: dict[str, Any]) -> None:
    chunk = tpl["Parameters"]["ChunkSize"]
    assert (as_int(chunk["MinValue"]), as_int(chunk["MaxValue"])) == (1, MAX_CHUNK_SIZE)


def test_the_local_stack_times_out_ingest_like_the_template(tpl: dict[str, Any]) -> None:
    timeout = props(tpl, "IngestFunction").get("Timeout") or tpl["Globals"]["Function"]["Timeout"]
    assert as_int(timeout) == INGEST_TIMEOUT


def test_parameters_match_the_runtime_config(tpl: dict[str, Any]) -> None:
    config = pytest.importorskip("ld_audiences.config")
    params = tpl["Parameters"]
    assert {p.value for p in config.ContextKeyPolicy} == set(params["ContextKeyPolicy"]["AllowedValues"])
    assert {w.value for w in config.WriterMode} == set(params["LaunchDarklyWriter"]["AllowedValues"])
    assert params["LaunchDarklyBaseUrl"]["Default"] == config.DEFAULT_LD_BASE_URL
    assert params["ChunkSize"]["Default"] == config.DEFAULT_CHUNK_SIZE


def test_ingest_least_privilege(tpl: dict[str, Any]) -> None:
    assert check_least_privilege(tpl, "IngestFunction", INGEST_ALLOWED, INGEST_REQUIRED) == []
    granted = set(grants(role_statements(tpl, "IngestFunction")))
    assert not any(resource == "LaunchDarklyTokenSecret" for _, resource in granted)
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
    assert not any(action in consume for action, _ in granted)
    assert not any(resource == "StateTable" for _, resource in granted)


def test_sync_least_privilege(tpl: dict[str, Any]) -> None:
    assert check_least_privilege(tpl, "SyncFunction", SYNC_ALLOWED, SYNC_REQUIRED) == []
    granted = set(grants(role_statements(tpl, "SyncFunction")))
    assert not any(resource == "WebhookSecret" for _, resource in granted)
    assert not any(action in {"dynamodb:Scan", "dynamodb:DeleteItem"} for action, _ in granted)


def test_wildcard_resources_only_for_xray(tpl: dict[str, Any]) -> None:
    for function_id in ("IngestFunction", "SyncFunction"):
        for action, resource in grants(role_statements(tpl, function_id)):
            if resource == "*":
                assert action in XRAY, f"{function_id}: {action} on *"


def test_functions_log_where_their_role_may_write(tpl: dict[str, Any]) -> None:
    for function_id in ("IngestFunction", "SyncFunction"):
        log_group = target(props(tpl, function_id)["LoggingConfig"]["LogGroup"])
        assert tpl["Resources"][log_group]["Type"] == "AWS::Logs::LogGroup"
        assert ("logs:PutLogEvents", log_group) in set(grants(role_statements(tpl, function_id)))
        assert "RetentionInDays" in props(tpl, log_group)


def test_api(tpl: dict[str, Any]) -> None:
    api = props(tpl, "Api")
    settings = [s for s in api["MethodSettings"] if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert len(settings) == 1
    rate = as_int(resolve(tpl, settings[0]["ThrottlingRateLimit"]))
    burst = as_int(resolve(tpl, settings[0]["ThrottlingBurstLimit"]))
    assert 0 < rate <= burst
    assert api["TracingEnabled"] is True
    # The local stack models this API: the same binary media types ("~1" is "/" in SAM) and compression.
    assert [t.replace("~1", "/") for t in api.get("BinaryMediaTypes", [])] == list(BINARY_MEDIA_TYPES)
    assert api["MinimumCompressionSize"] == MINIMUM_COMPRESSION_SIZE
    logging_on, logging_off = api["AccessLogSetting"]["Fn::If"][1:]
    assert "$context.requestId" in logging_on["Format"]
    assert "Authorization" not in logging_on["Format"]
    assert logging_off == {"Ref": "AWS::NoValue"}
    events = props(tpl, "IngestFunction")["Events"].values()
    routes = {(e["Properties"]["Path"], e["Properties"]["Method"].upper()) for e in events if e["Type"] == "Api"}
    assert routes == {("/events", "ANY"), ("/v1/batch", "ANY")}
    assert all(target(e["Properties"]["RestApiId"]) == "Api" for e in events)
    assert props(tpl, "IngestFunction")["Timeout"] <= 29  # API Gateway's integration limit
    # access logging needs the account's CloudWatch role before the stage exists
    assert tpl["Resources"]["Api"]["DependsOn"] == "ApiGatewayAccountReady"
    handle = tpl["Resources"]["ApiGatewayAccountReady"]["Metadata"]["AccountSetting"]
    assert handle == {"Fn::If": ["CreateApiGatewayLoggingRole", {"Ref": "ApiGatewayAccount"}, ""]}
    assert tpl["Resources"]["ApiGatewayAccount"]["DeletionPolicy"] == "Retain"


def test_make_delete_says_what_the_stack_keeps(tpl: dict[str, Any]) -> None:
    retained = {name for name, r in tpl["Resources"].items() if r.get("DeletionPolicy") == "Retain"}
    assert retained == {"ApiGatewayAccount", "ApiGatewayCloudWatchRole"}  # what `make delete` says it keeps
    said = " ".join(re.findall(r'@echo "(.*)"', (ROOT / "Makefile.infra").read_text()))
    assert "Kept: the API Gateway account's CloudWatch role" in said
    assert "DeletionProtectionEnabled" not in props(tpl, "StateTable")  # sam delete could not remove it
    assert props(tpl, "StateTable")["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert "system backup of the table for 35 days" in said
    assert props(tpl, "EncryptionKey")["PendingWindowInDays"] == 30
    assert "scheduled for deletion in 30 days" in said


def test_no_account_wide_setting_changes_unless_asked(tpl: dict[str, Any]) -> None:
    # API Gateway's CloudWatch role is one per account and region, shared by every API: a stack may set it
    # only when told to, and without it the stage must not ask for access logs (API Gateway would refuse it).
    assert param_default(tpl, "CreateApiGatewayLoggingRole") == "false"
    assert param_default(tpl, "ApiAccessLogging") == "false"
    for account_wide in ("ApiGatewayAccount", "ApiGatewayCloudWatchRole"):
        assert tpl["Resources"][account_wide]["Condition"] == "CreateApiGatewayLoggingRole"
    access_logs = {
        "Fn::Or": [{"Condition": "CreateApiGatewayLoggingRole"}, {"Fn::Equals": [{"Ref": "ApiAccessLogging"}, "true"]}]
    }
    assert tpl["Conditions"]["HasApiAccessLogs"] == access_logs
    assert props(tpl, "Api")["AccessLogSetting"]["Fn::If"][0] == "HasApiAccessLogs"
    assert tpl["Resources"]["ApiAccessLogGroup"]["Condition"] == "HasApiAccessLogs"


def test_api_lets_anyone_call_the_ingest_routes_and_nothing_else(tpl: dict[str, Any]) -> None:
    """The resource policy states the open endpoint (the function authenticates every request), which also
    keeps `sam deploy --guided` from asking whether the missing API Gateway authorizer is okay."""
    (statement,) = props(tpl, "Api")["Auth"]["ResourcePolicy"]["CustomStatements"]
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Allow", "*", "execute-api:Invoke")
    events = props(tpl, "IngestFunction")["Events"].values()
    routes = {e["Properties"]["Path"] for e in events if e["Type"] == "Api"}
    assert set(statement["Resource"]) == {f"execute-api:/*/*{path}" for path in routes}


def test_an_unbatched_first_sync_gets_in_within_20_minutes(tpl: dict[str, Any]) -> None:
    assert check_intake(tpl) == []
    assert stage_throttle(tpl) == (1000, 1000)
    assert "ReservedConcurrentExecutions" not in props(tpl, "IngestFunction")
    assert "ReservedConcurrentExecutions" not in tpl["Globals"]["Function"]


def test_endpoint_url_is_declared_empty_for_sam_local_only(
    tpl: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for function_id in ("IngestFunction", "SyncFunction"):
        assert function_env(tpl, function_id)["AWS_ENDPOINT_URL"] == ""
    # What the empty value does on Lambda: boto3 takes it as unset and calls AWS's own endpoints.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    for service in ("sqs", "secretsmanager", "dynamodb"):
        client = boto3.client(service, region_name="eu-west-1")
        assert client.meta.endpoint_url == f"https://{service}.eu-west-1.amazonaws.com"


def check_samconfig(t: dict[str, Any], config: dict[str, Any]) -> list[str]:
    problems = []
    stacks = set()
    for env in ("default", "dev", "prod"):
        if env not in config:
            problems.append(f"no [{env}] environment")
            continue
        stacks.add(config[env]["global"]["parameters"]["stack_name"])
        if config[env]["build"]["parameters"].get("cached", False):
            problems.append(f"[{env}] caches builds: a changed constraints.txt would not rebuild the layer")
        deploy = config[env]["deploy"]["parameters"]
        if deploy.get("capabilities") != "CAPABILITY_IAM" or deploy.get("resolve_s3") is not True:
            problems.append(f"[{env}] deploy needs capabilities CAPABILITY_IAM and resolve_s3")
        # What make deploy's check refuses in a value (scripts/predeploy_check.py), its Rules aside: a first
        # deploy gives the LaunchDarkly parameters on the command line or answers them in the guided questions.
        for name, value in read_environment(config, env).overrides.items():
            if name not in t["Parameters"]:
                problems.append(f"[{env}] overrides {name}, which the template does not have")
            else:
                problems += [f"[{env}] {p.message}" for p in constraint_problems(name, t["Parameters"][name], value)]
    if len(stacks) != 3:
        problems.append(f"the environments share stacks: {sorted(stacks)}")
    return problems


def test_samconfig_has_one_stack_per_environment(tpl: dict[str, Any]) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert check_samconfig(tpl, config) == []
    broken = copy.deepcopy(config)
    broken["prod"]["global"]["parameters"]["stack_name"] = "ld-audiences"
    broken["dev"]["deploy"]["parameters"]["parameter_overrides"] = ["LogRetentionInDays=8", "AwsEndpointUrl=x"]
    problems = check_samconfig(tpl, broken)
    assert any("share stacks" in p for p in problems)
    assert any("LogRetentionInDays=8" in p for p in problems)
    assert any("AwsEndpointUrl" in p for p in problems)


def test_alarms(tpl: dict[str, Any]) -> None:
    alarms = [a["Properties"] for a in resources(tpl, "AWS::CloudWatch::Alarm").values()]

    def watching(namespace: str, metric: str, dimension: str) -> list[dict[str, Any]]:
        found = []
        for alarm in alarms:
            if (alarm["Namespace"], alarm["MetricName"]) != (namespace, metric):
                continue
            values = [d["Value"] for d in alarm["Dimensions"]]
            if any(target(v) == dimension or v == dimension for v in values):
                found.append(alarm)
        return found

    assert watching("AWS/SQS", "ApproximateNumberOfMessagesVisible", "DeadLetterQueue")
    assert watching("AWS/SQS", "ApproximateAgeOfOldestMessage", "Queue")
    for function_id in ("IngestFunction", "SyncFunction"):
        assert watching("AWS/Lambda", "Errors", function_id)
        assert watching("AWS/Lambda", "Throttles", function_id)
    # The service dimension's value is sync's POWERTOOLS_SERVICE_NAME (tests/integration/test_dashboard_metrics.py
    # checks the code emits exactly these).
    sync_service = function_env(tpl, "SyncFunction")["POWERTOOLS_SERVICE_NAME"]
    (rate_limited,) = watching("LdAudiences", "LaunchDarklyRequests", sync_service)
    assert {d["Name"]: d["Value"] for d in rate_limited["Dimensions"]}["status"] == "429"
    assert watching("LdAudiences", "RecordsFailed", sync_service)
    (api_alarm,) = [a for a in alarms if (a["Namespace"], a["MetricName"]) == ("AWS/ApiGateway", "5XXError")]
    dims = {d["Name"]: d["Value"] for d in api_alarm["Dimensions"]}
    # the alarm must watch the API and stage this template creates
    assert dims["ApiName"] == props(tpl, "Api")["Name"]
    assert dims["Stage"] == props(tpl, "Api")["StageName"]
    for alarm in alarms:
        assert [target(a) for a in alarm["AlarmActions"]] == ["AlarmTopic"]
    subscription = tpl["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert tpl["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def dashboard_widgets(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's widgets, each ${...} of its Fn::Sub replaced by a parameter's default or by its name."""
    body = props(t, "Dashboard")["DashboardBody"]["Fn::Sub"]

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return str(param_default(t, name)) if name in t["Parameters"] else f"<{name}>"

    widgets: list[dict[str, Any]] = json.loads(re.sub(r"\$\{([^}]+)\}", value, body))["widgets"]
    return widgets


def widget_showing(t: dict[str, Any], metric: str) -> dict[str, Any]:
    (widget,) = [
        w["properties"]
        for w in dashboard_widgets(t)
        if w["type"] == "metric" and any(metric in entry for entry in w["properties"]["metrics"])
    ]
    return widget


def sync_metric_alarm(t: dict[str, Any], logical_id: str, metric: str) -> dict[str, Any]:
    alarm = props(t, logical_id)
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        t["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"],
        metric,
    )
    assert alarm["Dimensions"] == [
        {"Name": "service", "Value": function_env(t, "SyncFunction")["POWERTOOLS_SERVICE_NAME"]}
    ]
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm.get("DatapointsToAlarm", 1)) == (300, 1, 1)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert [target(a) for a in alarm["OKActions"]] == ["AlarmTopic"]
    return alarm


def test_nothing_waits_silently_for_launchdarkly(tpl: dict[str, Any]) -> None:
    alarm = sync_metric_alarm(tpl, "PendingAgeAlarm", "OldestPendingSeconds")
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Threshold"] == {"Ref": "PendingAgeAlarmSeconds"}
    assert param_default(tpl, "PendingAgeAlarmSeconds") == 900
    # Sync reports the value every minute (a schedule invokes it when the queue is idle): no value for 5 minutes
    # means sync is not running, which must alarm too.
    assert alarm["TreatMissingData"] == "breaching"
    widget = widget_showing(tpl, "OldestPendingSeconds")
    assert (widget["stat"], widget["period"]) == ("Maximum", 60)
    assert [a["value"] for a in widget["annotations"]["horizontal"]] == [900]


def test_slow_changes_alarm_on_their_95th_percentile(tpl: dict[str, Any]) -> None:
    alarm = sync_metric_alarm(tpl, "ChangeAgeAlarm", "ChangeAgeSeconds")
    assert alarm["ExtendedStatistic"] == "p95" and "Statistic" not in alarm
    assert alarm["Threshold"] == {"Ref": "ChangeAgeAlarmSeconds"}
    assert param_default(tpl, "ChangeAgeAlarmSeconds") == 600
    # No value: nothing was written; PendingAgeAlarm covers changes that wait.
    assert alarm["TreatMissingData"] == "notBreaching"
    widget = widget_showing(tpl, "ChangeAgeSeconds")
    assert [entry[-1]["stat"] for entry in widget["metrics"]] == ["p50", "p95", "p99"]
    assert [a["value"] for a in widget["annotations"]["horizontal"]] == [600]


def test_the_age_widgets_sit_with_the_sync_widgets(tpl: dict[str, Any]) -> None:
    rows: dict[int, list[str]] = {}
    for widget in dashboard_widgets(tpl):
        rows.setdefault(widget["y"], []).append(widget["properties"].get("title", ""))
    ordered = [titles for _, titles in sorted(rows.items())]
    ages = next(i for i, titles in enumerate(ordered) if any("Oldest change not yet" in t for t in titles))
    assert any("Change age" in t for t in ordered[ages])
    assert all("(sync)" in t for t in ordered[ages - 1])
    assert any("LaunchDarkly" in t and "(sync)" in t for t in ordered[ages + 1])


def test_outputs(tpl: dict[str, Any]) -> None:
    outputs = tpl["Outputs"]
    required = {
        "EndpointUrl",
        "BatchEndpointUrl",
        "QueueUrl",
        "DeadLetterQueueUrl",
        "StateTableName",
        "WebhookSecretArn",
        "LaunchDarklyTokenSecretArn",
        "SharedLayerArn",
        "DashboardUrl",
    }
    assert required <= outputs.keys()
    assert "${Dashboard}" in outputs["DashboardUrl"]["Value"]["Fn::Sub"]
    assert tpl["Resources"]["Dashboard"]["Type"] == "AWS::CloudWatch::Dashboard"
    stage = props(tpl, "Api")["StageName"]
    assert outputs["EndpointUrl"]["Value"]["Fn::Sub"].endswith(f"/{stage}/events")
    assert outputs["BatchEndpointUrl"]["Value"]["Fn::Sub"].endswith(f"/{stage}/v1/batch")
    assert "${Api}" in outputs["EndpointUrl"]["Value"]["Fn::Sub"]
    assert target(outputs["QueueUrl"]["Value"]) == "Queue"
    assert target(outputs["DeadLetterQueueUrl"]["Value"]) == "DeadLetterQueue"
    assert target(outputs["LaunchDarklyTokenSecretArn"]["Value"]) == "LaunchDarklyTokenSecret"
    assert target(outputs["SharedLayerArn"]["Value"]) == "SharedLayer"


# ------------------------------------------------------------------------------------------ encryption key

CMK = {"CustomerManagedKey": "true"}
ENCRYPTED = ("WebhookSecret", "LaunchDarklyTokenSecret", "Queue", "DeadLetterQueue", "StateTable")


def encryption_key(t: dict[str, Any], logical_id: str, overrides: dict[str, Any] | None = None) -> str:
    """The logical id of the KMS key encrypting a resource, or the AWS managed mechanism it uses."""
    properties = props(t, logical_id)
    kind = t["Resources"][logical_id]["Type"]
    if kind == "AWS::SecretsManager::Secret":
        key = resolve(t, properties.get("KmsKeyId", {"Ref": "AWS::NoValue"}), overrides)
        return "aws/secretsmanager" if key == NO_VALUE else target(key)
    if kind == "AWS::SQS::Queue":
        key = resolve(t, properties.get("KmsMasterKeyId", {"Ref": "AWS::NoValue"}), overrides)
        sse_sqs = resolve(t, properties.get("SqsManagedSseEnabled", False), overrides) is True
        assert (key == NO_VALUE) == sse_sqs, f"{logical_id}: exactly one of SSE-SQS and a KMS key"
        return "SSE-SQS" if sse_sqs else target(key)
    sse = properties["SSESpecification"]
    assert sse["SSEEnabled"] is True
    key = resolve(t, sse.get("KMSMasterKeyId", {"Ref": "AWS::NoValue"}), overrides)
    return "aws/dynamodb" if key == NO_VALUE else target(key)


def role_arn(t: dict[str, Any], role_id: str, overrides: dict[str, Any] | None = None) -> str:
    """The ARN CloudFormation gives a role without RoleName: its path, then <stack>-<logical id>-<suffix>."""
    path = resolve(t, props(t, role_id).get("Path", "/"), overrides)
    stack = resolve(t, {"Ref": "AWS::StackName"}, overrides)
    return f"arn:aws:iam::123456789012:role{path}{stack}-{role_id}-1A2B3C4D5E6F"


def key_grants(t: dict[str, Any], principal_arn: str, overrides: dict[str, Any] | None = None) -> set[tuple[str, str]]:
    """(action, service) pairs the key policy itself grants a principal of this account, IAM aside: the
    statements with Principal "*", each of which must be narrowed by the principal's ARN, the account and
    the services."""
    account = resolve(t, {"Ref": "AWS::AccountId"}, overrides)
    granted = set()
    for statement in props(t, "EncryptionKey")["KeyPolicy"]["Statement"]:
        if statement["Effect"] != "Allow" or statement["Principal"] != {"AWS": "*"}:
            continue
        condition = statement["Condition"]
        pattern = resolve(t, condition["ArnLike"]["aws:PrincipalArn"], overrides)
        assert resolve(t, condition["StringEquals"]["kms:CallerAccount"], overrides) == account
        services = [resolve(t, s, overrides) for s in listify(condition["StringEquals"]["kms:ViaService"])]
        if fnmatch.fnmatchcase(principal_arn, pattern):
            granted |= {(a, s.split(".")[0]) for a in listify(statement["Action"]) for s in services}
    return granted


def test_encryption_is_aws_managed_by_default(tpl: dict[str, Any]) -> None:
    assert param_default(tpl, "CustomerManagedKey") == "false"
    assert not created(tpl, "EncryptionKey") and not created(tpl, "EncryptionKey", {"CustomerManagedKey": "false"})
    assert {r: encryption_key(tpl, r) for r in ENCRYPTED} == {
        "WebhookSecret": "aws/secretsmanager",
        "LaunchDarklyTokenSecret": "aws/secretsmanager",
        "Queue": "SSE-SQS",
        "DeadLetterQueue": "SSE-SQS",
        "StateTable": "aws/dynamodb",
    }


def test_a_customer_managed_key_encrypts_the_secrets_the_queues_and_the_table(tpl: dict[str, Any]) -> None:
    assert created(tpl, "EncryptionKey", CMK)
    assert {r: encryption_key(tpl, r, CMK) for r in ENCRYPTED} == dict.fromkeys(ENCRYPTED, "EncryptionKey")
    key = props(tpl, "EncryptionKey")
    assert key["EnableKeyRotation"] is True
    # Restorable for as long as the dead-letter queue keeps what the key encrypted.
    assert key["PendingWindowInDays"] * 86400 >= props(tpl, "DeadLetterQueue")["MessageRetentionPeriod"]
    assert tpl["Outputs"]["EncryptionKeyArn"]["Condition"] == "UseCustomerManagedKey"


def test_the_key_policy_lets_each_function_role_use_the_key_only_for_its_own_resources(
    tpl: dict[str, Any],
) -> None:
    ingest, sync = role_arn(tpl, "IngestFunctionRole", CMK), role_arn(tpl, "SyncFunctionRole", CMK)
    # A producer of encrypted SQS messages needs GenerateDataKey and Decrypt; a consumer or a secret reader
    # Decrypt; a table user what DynamoDB documents for customer managed keys.
    assert key_grants(tpl, ingest, CMK) == {
        ("kms:Decrypt", "sqs"),
        ("kms:GenerateDataKey", "sqs"),
        ("kms:Decrypt", "secretsmanager"),
        ("kms:GenerateDataKey", "secretsmanager"),
    }
    table_use = {"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant"}
    assert key_grants(tpl, sync, CMK) >= {
        ("kms:Decrypt", "sqs"),
        ("kms:GenerateDataKey", "sqs"),
        ("kms:Decrypt", "secretsmanager"),
        *((action, "dynamodb") for action in table_use | {"kms:DescribeKey"}),
    }
    assert not any(service == "dynamodb" for _, service in key_grants(tpl, ingest, CMK))
    # The roles of the same stack in another region, or of another stack, get nothing from this key.
    elsewhere = {**CMK, "AWS::Region": "eu-west-1"}
    other_stack = {**CMK, "AWS::StackName": "ld-audiences-staging"}
    for role_id in ("IngestFunctionRole", "SyncFunctionRole"):
        for other in (elsewhere, other_stack):
            assert key_grants(tpl, role_arn(tpl, role_id, other), CMK) == set()
    assert key_grants(tpl, "arn:aws:iam::123456789012:role/admin", CMK) == set()


def test_other_principals_use_the_key_only_through_iam_and_the_stacks_services(tpl: dict[str, Any]) -> None:
    crypto = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt", "kms:GenerateDataKey", "kms:CreateGrant")
    root = {"AWS": "arn:aws:iam::123456789012:root"}
    for statement in props(tpl, "EncryptionKey")["KeyPolicy"]["Statement"]:
        principal = {name: resolve(tpl, value, CMK) for name, value in statement["Principal"].items()}
        assert principal in (root, {"AWS": "*"}), statement["Sid"]
        if principal != root or statement["Effect"] != "Allow":
            continue
        uses = [a for a in listify(statement["Action"]) if a.startswith(crypto) or a in ("kms:*", "*")]
        if uses:
            services = {resolve(tpl, s, CMK) for s in statement["Condition"]["StringEquals"]["kms:ViaService"]}
            assert services == {f"{s}.us-east-1.amazonaws.com" for s in ("secretsmanager", "sqs", "dynamodb")}


def dependencies(t: dict[str, Any]) -> dict[str, set[str]]:
    """Resource -> resources it references (Ref, Fn::GetAtt, Fn::Sub, DependsOn), whatever the conditions."""

    def references(node: Any) -> set[str]:
        if isinstance(node, list):
            return set().union(*map(references, node)) if node else set()
        if not isinstance(node, dict):
            return set()
        found: set[str] = set()
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                found |= references(value if isinstance(value, str) else value[1])
            else:
                found |= references(value)
        return found

    graph = {}
    for logical_id, resource in t["Resources"].items():
        # SAM moves a function's DeploymentPreference (its rollback alarms) to the CodeDeploy deployment group
        # it generates: those references are not the function's.
        properties = {k: v for k, v in resource.get("Properties", {}).items() if k != "DeploymentPreference"}
        named = references(properties) | set(listify(resource.get("DependsOn", [])))
        graph[logical_id] = {name for name in named if name in t["Resources"]}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One dependency cycle, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_key_creates_no_dependency_cycle(tpl: dict[str, Any]) -> None:
    assert cycle(dependencies(tpl)) is None
    # Naming a role's ARN in the key policy would: the roles' policies name the encrypted resources.
    broken = copy.deepcopy(tpl)
    statement = props(broken, "EncryptionKey")["KeyPolicy"]["Statement"][-1]
    statement["Principal"] = {"AWS": {"Fn::GetAtt": ["SyncFunctionRole", "Arn"]}}
    assert cycle(dependencies(broken)) is not None


# ------------------------------------------------------------------------------------------ web ACL

WAF = {"IpRateLimitPerMinute": 600}


def test_no_web_acl_by_default(tpl: dict[str, Any]) -> None:
    assert param_default(tpl, "IpRateLimitPerMinute") == 0
    assert not created(tpl, "WebAcl") and not created(tpl, "WebAclAssociation")


def test_the_web_acl_limits_each_ip_address_and_answers_like_a_throttle(tpl: dict[str, Any]) -> None:
    assert created(tpl, "WebAcl", WAF) and created(tpl, "WebAclAssociation", WAF)
    acl = props(tpl, "WebAcl")
    assert acl["Scope"] == "REGIONAL" and acl["DefaultAction"] == {"Allow": {}}
    (rule,) = acl["Rules"]
    rate = rule["Statement"]["RateBasedStatement"]
    assert rate["AggregateKeyType"] == "IP"
    assert resolve(tpl, rate["Limit"], WAF) == 600
    assert rate["EvaluationWindowSec"] in (60, 120, 300, 600)
    # 429 with the function's error shape: Segment retries it instead of dropping the events.
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429
    body = acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]
    assert body["ContentType"] == "APPLICATION_JSON"
    assert {"code", "message"} <= json.loads(body["Content"]).keys()
    association = props(tpl, "WebAclAssociation")
    assert target(association["WebACLArn"]) == "WebAcl"
    stage = association["ResourceArn"]["Fn::Sub"]
    assert stage.endswith("::/restapis/${Api}/stages/${Api.Stage}") and ":apigateway:" in stage
    # AWS WAF refuses limits below 10: a rule stops such a deploy before anything is created.
    rule = tpl["Rules"]["WafRateLimitsStartAtTen"]
    (assertion,) = rule["Assertions"]
    refused, ref = assertion["Assert"]["Fn::Not"][0]["Fn::Contains"]
    assert ref == {"Ref": "IpRateLimitPerMinute"} and sorted(refused, key=int) == [str(n) for n in range(1, 10)]


# ------------------------------------------------------------------------------------------ self-tests


def test_checks_catch_a_short_visibility_timeout(tpl: dict[str, Any]) -> None:
    broken = copy.deepcopy(tpl)
    broken["Mappings"]["SyncTimeouts"]["120"]["VisibilityTimeout"] = 600
    assert any("SyncTimeoutSeconds=120" in p for p in check_visibility_timeout(broken))
    unmapped = copy.deepcopy(tpl)
    unmapped["Parameters"]["SyncTimeoutSeconds"]["AllowedValues"].append(45)
    assert any("no visibility timeout mapped" in p for p in check_visibility_timeout(unmapped))


def test_checks_catch_large_batches_without_window(tpl: dict[str, Any]) -> None:
    broken = copy.deepcopy(tpl)
    broken["Parameters"]["SyncBatchingWindowSeconds"]["Default"] = 0
    assert any("needs a batching window" in p for p in check_batching(broken))
    huge = copy.deepcopy(tpl)
    huge["Parameters"]["SyncBatchSize"]["MaxValue"] = 10000
    assert any("SyncBatchSize MaxValue" in p for p in check_batching(huge))
    no_partial = copy.deepcopy(tpl)
    no_partial["Resources"]["SyncFunction"]["Properties"]["Events"]["Changes"]["Properties"][
        "FunctionResponseTypes"
    ] = []
    assert "ReportBatchItemFailures missing" in check_batching(no_partial)


def test_checks_catch_broad_permissions(tpl: dict[str, Any]) -> None:
    broken = copy.deepcopy(tpl)
    statements = broken["Resources"]["SyncFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    statements["Statement"].append(
        {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": {"Fn::GetAtt": ["WebhookSecret", "Arn"]}}
    )
    statements["Statement"].append({"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": "*"})
    problems = check_least_privilege(broken, "SyncFunction", SYNC_ALLOWED, SYNC_REQUIRED)
    assert any("sqs:SendMessage on WebhookSecret" in p for p in problems)
    assert any("dynamodb:Scan" in p for p in problems)


def test_checks_catch_a_missing_env_var(tpl: dict[str, Any]) -> None:
    broken = copy.deepcopy(tpl)
    del broken["Resources"]["SyncFunction"]["Properties"]["Environment"]["Variables"]["DLQ_URL"]
    broken["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"]["LD_TOKEN_SECRET_ARN"] = "x"
    problems = check_env(broken)
    assert "SyncFunction: DLQ_URL not set" in problems
    assert any("IngestFunction: gets LD_TOKEN_SECRET_ARN" in p for p in problems)


def test_checks_catch_a_slow_intake(tpl: dict[str, Any]) -> None:
    assert any("93 min" in p for p in check_intake(tpl, {"ApiThrottlingRateLimit": 180}))
    assert any("below the rate" in p for p in check_intake(tpl, {"ApiThrottlingBurstLimit": 500}))
    assert any("more cold requests" in p for p in check_intake(tpl, {"ApiThrottlingBurstLimit": 2000}))
    reserved = copy.deepcopy(tpl)
    reserved["Resources"]["IngestFunction"]["Properties"]["ReservedConcurrentExecutions"] = 100
    assert any("serves 500 requests/s" in p for p in check_intake(reserved))


# ------------------------------------------------------------------------------------------ fixtures


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def request_events(payload: Any) -> list[dict[str, Any]]:
    """The events of one Segment request body, whichever of the three shapes it has."""
    if isinstance(payload, list):
        return payload
    assert isinstance(payload, dict)
    if "batch" in payload:
        assert isinstance(payload["batch"], list)
        return payload["batch"]
    return [payload]


def check_segment_event(event: dict[str, Any]) -> None:
    assert event["type"] in {"identify", "track"}
    assert isinstance(event.get("messageId"), str) and event["messageId"]
    assert event.get("userId") or event.get("anonymousId")
    personas = event.get("context", {}).get("personas")
    if personas is None:
        return  # a non-audience event: skipped by ingest
    assert {"computation_class", "computation_id", "computation_key", "space_id"} <= personas.keys()
    assert re.fullmatch(r"personas_[0-9A-Za-z]{27}", event["messageId"])
    assert NINE_DIGIT_UTC.match(event["timestamp"])
    assert "sentAt" in event and event["sentAt"] is None
    key = personas["computation_key"]
    if personas["computation_class"] not in {"audience", "journey_step"}:
        return
    holder = event["traits"] if event["type"] == "identify" else event["properties"]
    value = holder[key]
    assert value in (True, False) or str(value).lower() in {"true", "false"}
    if event["type"] == "track":
        assert event["event"] in {"Audience Entered", "Audience Exited"}
        assert "@" in event["context"]["traits"]["email"]
    else:
        assert "@" in event["traits"]["email"]


INGEST_FIXTURES = sorted(LAMBDA_EVENTS.glob("ingest_*.json"))


def test_ingest_fixtures_exist() -> None:
    names = {p.name for p in INGEST_FIXTURES}
    assert {"ingest_track.json", "ingest_identify_batch.json", "ingest_gzip.json", "ingest_bad_auth.json"} <= names


@pytest.mark.parametrize("path", INGEST_FIXTURES, ids=lambda p: p.name)
def test_ingest_fixture_is_an_api_gateway_proxy_event(path: Path, tpl: dict[str, Any]) -> None:
    event = load_json(path)
    for key in ("resource", "path", "httpMethod", "headers", "multiValueHeaders", "requestContext", "body"):
        assert key in event, key
    assert event["httpMethod"] == "POST"
    routes = {e["Properties"]["Path"] for e in props(tpl, "IngestFunction")["Events"].values()}
    assert event["resource"] in routes and event["path"] == event["resource"]
    context = event["requestContext"]
    stage = props(tpl, "Api")["StageName"]
    assert context["stage"] == stage
    assert context["path"] == f"/{stage}{event['path']}"
    assert context["resourcePath"] == event["resource"]
    assert context["httpMethod"] == "POST"
    assert {k: [v] for k, v in event["headers"].items()} == event["multiValueHeaders"]
    assert isinstance(event["isBase64Encoded"], bool)

    # As the deployed API delivers it (the local stack's model of it): base64 only for a binary media type;
    # a gzip body already inflated.
    assert event["isBase64Encoded"] == is_binary(event["headers"]["Content-Type"])
    raw = base64.b64decode(event["body"], validate=True) if event["isBase64Encoded"] else event["body"].encode()
    assert int(event["headers"]["Content-Length"]) > 0
    events = request_events(json.loads(raw))
    assert events
    # Received after its events: ingest refuses event times more than MAX_FUTURE_SKEW after the request time.
    received = datetime.fromtimestamp(context["requestTimeEpoch"] / 1000, UTC)
    assert context["requestTime"] == received.strftime("%d/%b/%Y:%H:%M:%S +0000")
    latest = format_time(received + limits.MAX_FUTURE_SKEW)
    for segment_event in events:
        check_segment_event(segment_event)
        assert (parse_timestamp(segment_event["timestamp"]) or "") <= latest, segment_event["messageId"]

    auth = event["headers"]["Authorization"]
    valid = {
        f"Bearer {LOCAL_WEBHOOK_SECRET}",
        "Basic " + base64.b64encode(f"{LOCAL_WEBHOOK_SECRET}:".encode()).decode(),
    }
    if "bad_auth" in path.name:
        assert auth not in valid
    else:
        assert auth in valid
    if path.name == "ingest_identify_batch.json":
        assert event["path"] == "/v1/batch" and auth.startswith("Basic ")
        assert "batch" in json.loads(raw)
    if path.name == "ingest_gzip.json":
        assert isinstance(json.loads(raw), list)


def test_sync_fixture_is_an_sqs_batch() -> None:
    records = load_json(LAMBDA_EVENTS / "sync_batch.json")["Records"]
    assert 1 < len(records) <= 10000
    assert len({r["messageId"] for r in records}) == len(records)
    for record in records:
        assert record["eventSource"] == "aws:sqs"
        assert re.fullmatch(r"arn:aws:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+", record["eventSourceARN"])
        assert record["receiptHandle"]
        assert record["attributes"]["ApproximateReceiveCount"].isdigit()
        assert record["attributes"]["SentTimestamp"].isdigit()
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324
        change = json.loads(record["body"])
        assert set(change) == CHANGE_FIELDS
        assert change["v"] == 1
        assert isinstance(change["included"], bool)
        assert NINE_DIGIT_UTC.match(change["event_time"])
        assert all(isinstance(change[k], str) and change[k] for k in CHANGE_FIELDS - {"v", "included"})


def test_sync_fixture_matches_the_change_model() -> None:
    change_module = pytest.importorskip("ld_audiences.change")
    for record in load_json(LAMBDA_EVENTS / "sync_batch.json")["Records"]:
        change_module.MembershipChange.from_message(record["body"])


def test_env_json_names_exactly_what_the_template_sets(tpl: dict[str, Any]) -> None:
    env = load_json(EVENTS / "env.json")
    assert set(env) == set(resources(tpl, "AWS::Serverless::Function"))
    for function_id, values in env.items():
        assert set(values) == set(function_env(tpl, function_id)), function_id
        assert all(isinstance(v, str) for v in values.values()), "sam local passes strings"
        assert values["AWS_ENDPOINT_URL"].startswith("http://host.docker.internal:")
    ingest, sync = env["IngestFunction"], env["SyncFunction"]
    # local stack defaults (docs/CONTRACTS.md)
    assert ingest["QUEUE_URL"].endswith("/ld-audiences-changes")
    assert ingest["WEBHOOK_SECRET_ARN"] == "ld-audiences/webhook-secret"
    assert sync["LD_TOKEN_SECRET_ARN"] == "ld-audiences/launchdarkly-token"
    assert sync["LD_CLIENT_SIDE_ID"] == "local-client-side-id"
    assert sync["STATE_TABLE_NAME"] == "ld-audiences-state"
    assert sync["DLQ_URL"].endswith("/ld-audiences-changes-dlq")
    assert ingest["CONTEXT_KEY_POLICY"] in CONTEXT_KEY_POLICIES


SEGMENT_FIXTURES = sorted(SEGMENT_EVENTS.glob("*.json"))


def test_segment_fixtures_cover_every_shape() -> None:
    shapes = set()
    for path in SEGMENT_FIXTURES:
        payload = load_json(path)
        shapes.add("array" if isinstance(payload, list) else "batch" if "batch" in payload else "single")
    assert shapes == {"array", "batch", "single"}
    readme = (SEGMENT_EVENTS / "README.md").read_text()
    for path in SEGMENT_FIXTURES:
        assert path.name in readme, f"{path.name} is not described in events/segment/README.md"


@pytest.mark.parametrize("path", SEGMENT_FIXTURES, ids=lambda p: p.name)
def test_segment_fixture_is_valid_engage_traffic(path: Path) -> None:
    events = request_events(load_json(path))
    assert events
    for event in events:
        check_segment_event(event)


def test_the_largest_batch_size_fits_lambdas_event() -> None:
    """A typical record as Lambda's SQS event carries it (the bundled fixture's envelope with a receipt handle
    of SQS's real length and a change keyed by an e-mail address): SyncBatchSize's maximum of them fits 6 MB."""
    record = load_json(EVENTS / "lambda" / "sync_batch.json")["Records"][0]
    change = MembershipChange.from_message(record["body"]).model_copy(
        update={"context_key": "firstname.lastname+segment@example-company.com", "message_id": "personas_" + "x" * 27}
    )
    record = {**record, "receiptHandle": "A" * 400, "body": change.to_message()}
    assert limits.MAX_SYNC_BATCH * len(json.dumps(record)) <= limits.LAMBDA_PAYLOAD_BYTES
