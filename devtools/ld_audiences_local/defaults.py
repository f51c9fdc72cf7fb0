"""The local stack's names and defaults: docs/CONTRACTS.md ("Local stack defaults") and, where the
deployed stack has the same thing, template.yaml's values."""

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # noqa: S105 (local-only dummy value)
QUEUE_NAME = "ld-audiences-changes"
DLQ_NAME = "ld-audiences-changes-dlq"
TABLE_NAME = "ld-audiences-state"
TOKEN_SECRET_NAME = "ld-audiences/launchdarkly-token"  # noqa: S105 (local-only dummy value)
WEBHOOK_SECRET_NAME = "ld-audiences/webhook-secret"  # noqa: S105 (local-only dummy value)
DEFAULT_LD_TOKEN = "api-local-token"  # noqa: S105 (local-only dummy value)
DEFAULT_CLIENT_SIDE_ID = "local-client-side-id"
DEFAULT_WEBHOOK_SECRET = "local-webhook-secret"  # noqa: S105 (local-only dummy value)
DEFAULT_PORT = 3000
# The ports events/env.json points `sam local invoke` at: `ld-audiences local --aws-port 5000 --launchdarkly-port 8765`.
SAM_LOCAL_AWS_PORT = 5000
SAM_LOCAL_LAUNCHDARKLY_PORT = 8765
MAX_RECEIVE_COUNT = 5
DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCHING_WINDOW = 1.0
DEFAULT_SYNC_TIMEOUT = 10.0
# The queue's visibility timeout is this many times the sync function's timeout, as template.yaml sets it: a
# batch still being handled is never handed to a second poller, and a failed record returns a minute later.
VISIBILITY_TIMEOUT_FACTOR = 6
DEFAULT_VISIBILITY_TIMEOUT = VISIBILITY_TIMEOUT_FACTOR * int(DEFAULT_SYNC_TIMEOUT)
METRICS_NAMESPACE = "LdAudiences"
# Also their Powertools service names, as in template.yaml: each function logs through its own logger.
INGEST_FUNCTION = "ld-audiences-ingest"
SYNC_FUNCTION = "ld-audiences-sync"
