"""Real boto3 clients answered in process: a `before-send` handler answers each fully built (serialized,
signed) request, and botocore's retries wait on the simulation's clock."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def attach(
    client: Any,
    service: Any,
    *,
    latency: Callable[[str, dict[str, Any]], None] = lambda operation, request: None,
    uncounted: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Answer every request of a boto3 client from `service` (InProcessDynamoDB or InProcessSqs); the
    client's retries wait with `sleep` (the simulation's, to wait in virtual time)."""

    def before_send(request: Any, **_: Any) -> AWSResponse:
        with uncounted():
            target = request.headers.get("X-Amz-Target", b"")
            operation = (target.decode() if isinstance(target, bytes) else target).rpartition(".")[2]
            body = json.loads(request.body or b"{}")
            status, answer = service.answer(operation, body)
            payload = json.dumps(answer).encode()
        latency(operation, body)
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(payload))

    client.meta.events.register("before-send", before_send)
    _retries_wait_with(client, sleep)
    return client


def _retries_wait_with(client: Any, sleep: Callable[[float], None]) -> None:
    """botocore's retry handler only computes a backoff; the endpoint then waits it with time.sleep, which
    on the virtual clock would hold every task for real time and move no virtual time. The handler is
    wrapped to wait with `sleep` itself and leave the endpoint nothing to wait."""
    service = client.meta.service_model.service_id.hyphenize()
    unique_id = f"retry-config-{service}"
    # botocore keeps no public handle on it: its emitter's registry by unique id (botocore/hooks.py)
    registered = client.meta.events._emitter._unique_id_handlers.get(unique_id)
    if registered is None:  # retries off: nothing waits
        return
    compute = registered["handler"]

    def needs_retry(**kwargs: Any) -> Any:
        delay = compute(**kwargs)
        if isinstance(delay, int | float) and not isinstance(delay, bool):
            sleep(delay)
            return 0  # not None: retry, after a time.sleep(0)
        return delay

    event = f"needs-retry.{service}"
    client.meta.events.unregister(event, unique_id=unique_id)
    client.meta.events.register(event, needs_retry, unique_id=unique_id)
