"""Move records that can never succeed to the dead-letter queue, with the reason as message attributes,
so they stop looping and an operator sees why (`ld-audiences redrive` sends them back)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ld_audiences.outcomes import QueuedRecord

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

logger = logging.getLogger(__name__)

REASON_ATTRIBUTE = "failure_reason"
DETAIL_ATTRIBUTE = "failure_detail"
# The SQS message a record came in (an unreadable one), or Segment's messageId for a change LaunchDarkly refused
# (its record was acknowledged when it was recorded).
SOURCE_ID_ATTRIBUTE = "source_message_id"


class SqsDeadLetters:
    def __init__(self, client: SQSClient, dlq_url: str) -> None:
        self._client = client
        self._dlq_url = dlq_url

    def send(self, record: QueuedRecord, reason: str, detail: str) -> bool:
        def text(value: str) -> MessageAttributeValueTypeDef:
            return {"DataType": "String", "StringValue": value[:1000] or "-"}

        try:
            self._client.send_message(
                QueueUrl=self._dlq_url,
                MessageBody=record.body,
                MessageAttributes={
                    REASON_ATTRIBUTE: text(reason),
                    DETAIL_ATTRIBUTE: text(detail),
                    SOURCE_ID_ATTRIBUTE: text(record.record_id),
                },
            )
        except (ClientError, BotoCoreError):
            logger.exception("could not move a record to the dead-letter queue")
            return False
        return True
