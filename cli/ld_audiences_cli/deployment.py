"""Where a deployment's queue, dead-letter queue and state table are, and AWS clients to reach them.

Two ways to name them, for `status`, `resync`, `retire`, `audit` and `redrive`:
* a deployed stack by name: CloudFormation's DescribeStacks gives the outputs StateTableName, QueueUrl
  and DeadLetterQueueUrl, and the template parameters (which writer, project and environment keys);
* explicit names (`--table`, `--queue-url`, `--dlq-url`), which also override a stack's outputs.

Credentials, region and endpoint come from the options or boto3's own chain (environment, profile): nothing
here knows a particular endpoint, so an AWS stand-in (the local stack's moto) is named like any other, with
`--endpoint-url` and the credentials in the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences.aws_clients import LONG_POLL_READ_TIMEOUT, client_config

OUTPUTS = {"table": "StateTableName", "queue_url": "QueueUrl", "dlq_url": "DeadLetterQueueUrl"}


class DeploymentError(Exception):
    """The deployment cannot be found, or lacks what the command needs."""


@dataclass(frozen=True)
class Deployment:
    table: str | None = None
    queue_url: str | None = None
    dlq_url: str | None = None
    endpoint_url: str | None = None  # None: AWS's own endpoints
    region: str | None = None  # None: boto3's own configuration chain
    parameters: dict[str, str] = field(default_factory=dict)  # the stack's template parameters
    profile: str | None = None  # a named profile of the AWS configuration (None: boto3's default chain)

    def client(self, service: str, *, threads: int = 1) -> Any:
        # The tools long-poll SQS (redrive, the DLQ peek): a read timeout longer than a long poll.
        kwargs: dict[str, Any] = {"config": client_config(threads=threads, read_timeout=LONG_POLL_READ_TIMEOUT)}
        if self.region:
            kwargs["region_name"] = self.region
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        session: Any = boto3.session.Session(profile_name=self.profile)  # Any: `service` is any service's name
        return session.client(service, **kwargs)

    def need(self, *names: str) -> None:
        """Raise DeploymentError naming each of `names` ("table", "queue_url", "dlq_url") that is unknown."""
        options = {"table": "--table", "queue_url": "--queue-url", "dlq_url": "--dlq-url"}
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            flags = " and ".join(options[name] for name in missing)
            raise DeploymentError(f"give --stack-name, or {flags}")


def _region_of(queue_url: str | None) -> str | None:
    """The region an AWS queue URL names (https://sqs.<region>.amazonaws.com/...)."""
    if not queue_url:
        return None
    parts = queue_url.split("//", 1)[-1].split("/", 1)[0].split(".")
    return parts[1] if len(parts) >= 4 and parts[0] == "sqs" else None


def find(
    *,
    stack_name: str | None = None,
    table: str | None = None,
    queue_url: str | None = None,
    dlq_url: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
) -> Deployment:
    """The deployment the options name (see the module docstring); explicit names win over the stack's
    outputs. Raises DeploymentError when the stack cannot be read."""
    parameters: dict[str, str] = {}
    if stack_name:
        cloudformation = Deployment(endpoint_url=endpoint_url, region=region, profile=profile)
        outputs, parameters = _describe_stack(cloudformation.client("cloudformation"), stack_name)
        table = table or outputs[OUTPUTS["table"]]
        queue_url = queue_url or outputs[OUTPUTS["queue_url"]]
        dlq_url = dlq_url or outputs[OUTPUTS["dlq_url"]]
    region = region or _region_of(queue_url) or _region_of(dlq_url)
    return Deployment(table, queue_url, dlq_url, endpoint_url, region, parameters, profile)


def _describe_stack(cloudformation: Any, stack_name: str) -> tuple[dict[str, str], dict[str, str]]:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message") or str(exc)
        raise DeploymentError(f"cannot describe stack {stack_name}: {message}") from None
    except BotoCoreError as exc:
        raise DeploymentError(f"cannot describe stack {stack_name}: {exc}") from None
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    missing = [name for name in OUTPUTS.values() if name not in outputs]
    if missing:
        raise DeploymentError(f"stack {stack_name} has no output {', '.join(missing)}: is it an ld-audiences stack?")
    return outputs, parameters
