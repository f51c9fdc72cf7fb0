"""Who may post events: the webhook shared secret (two at once while rotating) and optional signing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebhookCredentials:
    """Accepted bearer/basic secrets and, when set, the key for the `X-Signature` HMAC."""

    accepted: tuple[str, ...]
    signing_key: str | None = None

    @classmethod
    def from_secret(cls, value: str) -> WebhookCredentials:
        """A plain string is the one accepted secret; JSON `{"current", "previous", "signing"}` allows
        rotation without downtime and enables request signing."""
        value = value.strip()
        if value.startswith("{"):
            data = json.loads(value)
            accepted = tuple(s for s in (data.get("current"), data.get("previous")) if isinstance(s, str) and s)
            signing = data.get("signing")
            return cls(accepted=accepted, signing_key=signing if isinstance(signing, str) and signing else None)
        return cls(accepted=(value,) if value else ())


def presented_secret(headers: Mapping[str, str]) -> str | None:
    """The secret in `Authorization: Bearer <s>` or `Basic base64("<s>:")` (Segment's write-key form)."""
    header = headers.get("authorization", "")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer":
        return credential or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or characters outside ASCII
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None


def is_authorized(headers: Mapping[str, str], credentials: WebhookCredentials) -> bool:
    presented = presented_secret(headers)
    if presented is None:
        return False
    # Compare against every accepted secret, so timing reveals neither a match nor which one.
    matches = [hmac.compare_digest(_utf8(presented), _utf8(secret)) for secret in credentials.accepted]
    return any(matches)


def signature_valid(body: bytes, headers: Mapping[str, str], signing_key: str) -> bool:
    """Segment's classic webhook signs with the lowercase hex HMAC-SHA1 of the body."""
    presented = headers.get("x-signature", "").strip().lower()
    expected = hmac.new(_utf8(signing_key), body, hashlib.sha1).hexdigest()
    return hmac.compare_digest(_utf8(presented), expected.encode())


def _utf8(text: str) -> bytes:
    # A header can hold a lone surrogate (API Gateway events are JSON, and JSON can escape one): it must
    # fail the comparison, not raise UnicodeEncodeError.
    return text.encode("utf-8", "surrogatepass")
