"""Every setting the functions read, with its environment variable and default, in one place.

The SAM template, `events/env.json` and the local stack all set these same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from ld_audiences import limits

DEFAULT_LD_BASE_URL = "https://app.launchdarkly.com"
# LaunchDarkly documents no per-request maximum, and every peer (RudderStack, Amplitude) sends at most 1,000
# identifiers a request: larger requests are untried, so 1,000 is the most as well as the default.
# template.yaml's ChunkSize MaxValue is the same number (tests/unit/test_template.py).
MAX_CHUNK_SIZE = 1000
DEFAULT_CHUNK_SIZE = MAX_CHUNK_SIZE
# Audiences a sync invocation reconciles at once (each request still waits for the shared rate-limit
# window), and the threads that run one audience's state-table calls at once.
SEGMENTS_AT_ONCE = 4
STATE_THREADS = 16
# SendMessageBatch calls one ingest invocation makes at once.
INGEST_SEND_THREADS = 8
# What template.yaml deploys in the token secret until the operator puts the real token there.
TOKEN_PLACEHOLDER = "REPLACE_ME"  # noqa: S105 - a placeholder, not a credential


class WriterMode(StrEnum):
    SEGMENT_AUDIENCES = "segment-audiences"
    REST = "rest"


class ContextKeyPolicy(StrEnum):
    USER_ID_ONLY = "user_id_only"
    USER_ID_THEN_EMAIL = "user_id_then_email"
    USER_ID_THEN_ANONYMOUS_ID = "user_id_then_anonymousId"
    USER_ID_THEN_EMAIL_THEN_ANONYMOUS_ID = "user_id_then_email_then_anonymousId"
    EMAIL_ONLY = "email_only"


E = TypeVar("E", bound=StrEnum)


class ConfigError(ValueError):
    """A setting is missing or has a value the functions cannot work with."""


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"environment variable {name} is required")
    return default


def _int_env(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _seconds_list(name: str, default: tuple[int, ...], minimum: int, maximum: int) -> tuple[int, ...]:
    raw = _env(name, ",".join(map(str, default)))
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated whole seconds, got {raw!r}") from None
    if not values or not all(minimum <= v <= maximum for v in values):
        raise ConfigError(f"{name} must be between {minimum} and {maximum} seconds each, got {raw!r}")
    return values


def _choice(name: str, enum: type[E], default: E) -> E:
    raw = _env(name, default.value)
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ConfigError(f"{name} must be one of {allowed}, got {raw!r}") from None


def _context_kind(name: str, kind: str) -> str:
    if defect := limits.context_kind_defect(kind):
        raise ConfigError(f"{name}: context kind {kind!r} {defect}")
    return kind


@dataclass(frozen=True, slots=True)
class NormalizeSettings:
    """What decides how a Segment event becomes a membership change."""

    policy: ContextKeyPolicy = ContextKeyPolicy.USER_ID_ONLY
    context_kind: str = "user"

    @classmethod
    def from_env(cls) -> NormalizeSettings:
        return cls(
            policy=_choice("CONTEXT_KEY_POLICY", ContextKeyPolicy, ContextKeyPolicy.USER_ID_ONLY),
            context_kind=_context_kind("DEFAULT_CONTEXT_KIND", _env("DEFAULT_CONTEXT_KIND", "user")),
        )


@dataclass(frozen=True, slots=True)
class IngestSettings:
    queue_url: str
    webhook_secret_id: str
    normalize: NormalizeSettings
    secrets_max_age: int = 300
    # As large as Lambda lets a body be (limits.py); Segment's Tracking API sends at most 500 KB, Webhooks
    # (Actions) up to 4,000 events (about 3.5 MB of Engage events).
    max_body_bytes: int = limits.MAX_BODY_BYTES
    max_events: int = 4000
    # Kinds a request may choose with `?context_kind=`, besides the default kind (always allowed).
    other_context_kinds: frozenset[str] = frozenset()

    @property
    def context_kinds(self) -> frozenset[str]:
        return self.other_context_kinds | {self.normalize.context_kind}

    @classmethod
    def from_env(cls) -> IngestSettings:
        listed = (kind.strip() for kind in _env("ALLOWED_CONTEXT_KINDS", "").split(","))
        return cls(
            queue_url=_env("QUEUE_URL"),
            webhook_secret_id=_env("WEBHOOK_SECRET_ARN"),
            normalize=NormalizeSettings.from_env(),
            secrets_max_age=_int_env("SECRETS_MAX_AGE", 300, 0, 86400),
            max_body_bytes=_int_env("MAX_BODY_BYTES", limits.MAX_BODY_BYTES, 1024, limits.MAX_BODY_BYTES),
            max_events=_int_env("MAX_EVENTS_PER_REQUEST", 4000, 1, limits.MAX_EVENTS_PER_REQUEST),
            other_context_kinds=frozenset(_context_kind("ALLOWED_CONTEXT_KINDS", kind) for kind in listed if kind),
        )


@dataclass(frozen=True, slots=True)
class LaunchDarklySettings:
    writer: WriterMode
    client_side_id: str
    base_url: str = DEFAULT_LD_BASE_URL
    project_key: str = ""
    environment_key: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if self.writer is WriterMode.SEGMENT_AUDIENCES and not self.client_side_id:
            raise ConfigError("LD_CLIENT_SIDE_ID is required with the segment-audiences writer")
        if self.writer is WriterMode.REST and not (self.project_key and self.environment_key):
            raise ConfigError("LD_PROJECT_KEY and LD_ENVIRONMENT_KEY are required with the rest writer")

    @classmethod
    def from_env(cls) -> LaunchDarklySettings:
        return cls(
            writer=_choice("LD_WRITER", WriterMode, WriterMode.SEGMENT_AUDIENCES),
            client_side_id=_env("LD_CLIENT_SIDE_ID", ""),
            base_url=_env("LD_BASE_URL", DEFAULT_LD_BASE_URL).rstrip("/"),
            project_key=_env("LD_PROJECT_KEY", ""),
            environment_key=_env("LD_ENVIRONMENT_KEY", ""),
            chunk_size=_int_env("LD_CHUNK_SIZE", DEFAULT_CHUNK_SIZE, 1, MAX_CHUNK_SIZE),
        )


@dataclass(frozen=True, slots=True)
class SyncSettings:
    token_secret_id: str
    launchdarkly: LaunchDarklySettings
    state_table: str
    queue_url: str  # deferred records and reasserts are queued here again
    dlq_url: str
    secrets_max_age: int = 300
    batch_size: int = 1000  # the SQS event source's (SyncBatchSize): a batch that full means a backlog
    # Seconds after the lease of a write with an unknown outcome ends when its contexts are written again.
    late_apply_rechecks: tuple[int, ...] = (30, 900)

    @classmethod
    def from_env(cls) -> SyncSettings:
        return cls(
            token_secret_id=_env("LD_TOKEN_SECRET_ARN"),
            launchdarkly=LaunchDarklySettings.from_env(),
            state_table=_env("STATE_TABLE_NAME"),
            queue_url=_env("QUEUE_URL"),
            dlq_url=_env("DLQ_URL"),
            secrets_max_age=_int_env("SECRETS_MAX_AGE", 300, 0, 86400),
            batch_size=_int_env("SYNC_BATCH_SIZE", 1000, 1, 10000),
            late_apply_rechecks=_seconds_list("LATE_APPLY_RECHECK_SECONDS", (30, 900), 1, 900),
        )
