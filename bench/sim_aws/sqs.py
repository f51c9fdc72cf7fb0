"""SQS's sending side answered in process: the messages the product sends are handed to the simulation."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class SentMessage:
    queue_url: str
    body: str
    delay_seconds: int
    message_id: str


class InProcessSqs:
    """SendMessage(Batch) and ChangeMessageVisibilityBatch, handed to the simulation's queues."""

    def __init__(
        self,
        on_send: Callable[[SentMessage], None],
        on_visibility: Callable[[str, str, int], None] = lambda url, handle, seconds: None,
    ) -> None:
        self._on_send, self._on_visibility = on_send, on_visibility
        self.calls: Counter[str] = Counter()

    def answer(self, operation: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls[operation] += 1
        url = request.get("QueueUrl", "")
        if operation == "SendMessage":
            message_id = self._send(url, request["MessageBody"], request.get("DelaySeconds", 0))
            return 200, {"MessageId": message_id, "MD5OfMessageBody": _md5(request["MessageBody"])}
        if operation == "SendMessageBatch":
            successful = [
                {
                    "Id": entry["Id"],
                    "MessageId": self._send(url, entry["MessageBody"], entry.get("DelaySeconds", 0)),
                    "MD5OfMessageBody": _md5(entry["MessageBody"]),
                }
                for entry in request["Entries"]
            ]
            return 200, {"Successful": successful, "Failed": []}
        if operation == "ChangeMessageVisibilityBatch":
            for entry in request["Entries"]:
                self._on_visibility(url, entry["ReceiptHandle"], entry["VisibilityTimeout"])
            return 200, {"Successful": [{"Id": e["Id"]} for e in request["Entries"]], "Failed": []}
        return 400, {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": operation}

    def _send(self, url: str, body: str, delay: int) -> str:
        message_id = str(uuid.uuid4())
        self._on_send(SentMessage(url, body, int(delay), message_id))
        return message_id


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
