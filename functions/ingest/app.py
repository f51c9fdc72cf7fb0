"""Ingest Lambda: API Gateway (REST, proxy) → authenticate, validate, normalize → SQS.

Only wiring lives here; every decision is in `ld_audiences.ingest`.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from ld_audiences.auth import WebhookCredentials
from ld_audiences.aws_clients import client_config
from ld_audiences.config import INGEST_SEND_THREADS, IngestSettings
from ld_audiences.ingest import IngestReport, RequestError, handle
from ld_audiences.sqs_queue import SqsChangeQueue

settings = IngestSettings.from_env()
logger = Logger()
metrics = Metrics()
# debug=False, not left to POWERTOOLS_DEV: in debug mode the resolver prints every event, the Authorization
# header (the webhook secret) and the body (e-mail addresses) included.
app = APIGatewayRestResolver(debug=False)
# Made once per execution environment and reused: a 4,000-event request is 400 SendMessageBatch calls,
# sent several at once to answer within Segment's 10 s timeout.
send_pool = ThreadPoolExecutor(max_workers=INGEST_SEND_THREADS, thread_name_prefix="send")
queue = SqsChangeQueue(
    boto3.client("sqs", config=client_config(threads=INGEST_SEND_THREADS)), settings.queue_url, executor=send_pool
)
secrets = parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager", config=client_config(threads=1)))

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def webhook_credentials() -> WebhookCredentials:
    try:
        secret = secrets.get(settings.webhook_secret_id, max_age=settings.secrets_max_age)
        return WebhookCredentials.from_secret(str(secret))
    except (parameters.exceptions.GetParameterError, ValueError) as exc:
        # No traceback: a JSON error would carry the secret's text along with it.
        logger.error("webhook secret unavailable or malformed", error=type(exc).__name__)
        raise RequestError(503, "secret_unavailable", "credentials cannot be checked now; retry later") from None


@app.route("/events", method=ALL_METHODS)
@app.route("/v1/batch", method=ALL_METHODS)
def receive() -> Response[str]:
    event = app.current_event
    response, report = handle(
        method=event.http_method,
        headers={name.lower(): value for name, value in (event.headers or {}).items()},
        body=event.body,
        is_base64=bool(event.is_base64_encoded),
        settings=settings,
        credentials=webhook_credentials,
        queue=queue,
        received_at=received_at(event),
        # Every value of each parameter, so a repeated one is seen as such.
        query=event.multi_value_query_string_parameters or {k: [v] for k, v in event.query_string_parameters.items()},
    )
    if report is not None:
        record(report)
        log_events(report, api_request_id=event.request_context.request_id)
    logger.info(
        "request answered",
        status=response.status,
        code=response.body.get("code"),
        accepted=response.body.get("accepted"),
        skipped=response.body.get("skipped"),
        rejected=response.body.get("rejected"),
        reasons=sorted({e["reason"] for e in response.body.get("errors", [])}),
    )
    metrics.add_metric(name=f"Responses{response.status // 100}xx", unit=MetricUnit.Count, value=1)
    return Response(status_code=response.status, content_type="application/json", body=json.dumps(response.body))


def received_at(event: APIGatewayProxyEvent) -> datetime:
    """When API Gateway received the request (now, for an event that does not say)."""
    epoch_ms = event.request_context.get("requestTimeEpoch")
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if isinstance(epoch_ms, int) else datetime.now(UTC)


def record(report: IngestReport) -> None:
    metrics.add_metric(name="EventsAccepted", unit=MetricUnit.Count, value=report.accepted)
    metrics.add_metric(name="EventsSkipped", unit=MetricUnit.Count, value=sum(report.skipped.values()))
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=len(report.errors))


def log_events(report: IngestReport, api_request_id: str) -> None:
    """One line per event with its Segment messageId as correlation id, so one event can be followed
    through both functions: a WARNING per rejected event, DEBUG per queued one (POWERTOOLS_LOGGER_SAMPLE_RATE
    turns DEBUG on for a share of invocations)."""
    for error in report.errors:
        logger.warning(
            "event rejected",
            correlation_id=error["messageId"],
            api_request_id=api_request_id,
            index=error["index"],
            reason=error["reason"],
            field=error["field"],
        )
    if logger.log_level <= logging.DEBUG:  # checked once: a disabled call still costs ~2 µs an event
        for message_id in report.queued:
            logger.debug("event queued", correlation_id=message_id, api_request_id=api_request_id)


# log_event=False, not left to POWERTOOLS_LOGGER_LOG_EVENT: the event holds the Authorization header (the
# webhook secret) and the events' email addresses, and no setting may put them in a log line.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
