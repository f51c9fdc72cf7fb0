"""Every request of the bad-input corpus (corpus/cases.json, documented in corpus/README.md) through the real
ingest Lambda handler against moto: the expected status, code and per-event reasons, and nothing invalid
(nor anything unexpected) on the queue."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import IngestStack, api_event, decode_response, error_shape_ok, validate_queued

CORPUS_DIR = Path(__file__).parent / "corpus"
CORPUS = json.loads((CORPUS_DIR / "cases.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = CORPUS["cases"]

CURRENT = "corpus-current-secret-6c1d"
PREVIOUS = "corpus-previous-secret-0a9e"
SIGNING = "corpus-signing-key-2f47"
PLACEHOLDERS = {
    "${CURRENT}": CURRENT,
    "${PREVIOUS}": PREVIOUS,
    "${CURRENT_PREFIX}": CURRENT[:-1],
    "${BASIC_CURRENT}": base64.b64encode(f"{CURRENT}:".encode()).decode(),
    "${BASIC_PASSWORD_ONLY}": base64.b64encode(f":{CURRENT}".encode()).decode(),
}
SIGNING_KEYS = {"signing": SIGNING, "current": CURRENT}


def substitute(text: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return text


def body_text(case: dict[str, Any]) -> str | None:
    """The body as text, from whichever of `body`, `body_text` or `body_parts` the case uses."""
    if "body" in case:
        return json.dumps(case["body"], ensure_ascii=case.get("ensure_ascii", False))
    if "body_text" in case:
        return str(case["body_text"])
    if "body_parts" in case:
        return "".join(part if isinstance(part, str) else part[0] * part[1] for part in case["body_parts"])
    return None


def build_request(case: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway proxy event a case describes (see corpus/README.md for the fields)."""
    defaults = CORPUS["defaults"]
    text = body_text(case)
    if "body_base64" in case:
        raw: bytes | None = base64.b64decode(case["body_base64"])
    elif text is not None:
        raw = substitute(text).encode("utf-8", "surrogatepass")
    else:
        raw = None
    if raw is not None and case.get("gzip"):
        raw = gzip.compress(raw, mtime=0)
    is_base64 = bool(case.get("is_base64_encoded", "body_base64" in case or case.get("gzip", False)))

    sign = case.get("sign", {})
    signed = substitute(sign["over"]).encode("utf-8", "surrogatepass") if "over" in sign else (raw or b"")
    signature = hmac.new(SIGNING_KEYS[sign.get("key", "signing")].encode(), signed, hashlib.sha1).hexdigest()

    headers: dict[str, str] = {}
    for name, value in {**defaults["headers"], **case.get("headers", {})}.items():
        if value is not None:
            headers[name] = substitute(value).replace("${SIGNATURE}", signature)

    if raw is None:
        body = None
    elif is_base64 and "body_base64" not in case and not case.get("gzip"):
        body = text  # a body API Gateway wrongly flags as base64: sent as the text it is
    else:
        body = base64.b64encode(raw).decode() if is_base64 else raw.decode("utf-8", "surrogatepass")
    return api_event(
        body=body,
        headers=headers,
        is_base64=is_base64,
        method=case.get("method", defaults["method"]),
        path=case.get("path", defaults["path"]),
        query=case.get("query"),
    )


@pytest.fixture(scope="module")
def corpus_stack(ingest_stack: IngestStack) -> Iterator[IngestStack]:
    signed = json.dumps({"current": CURRENT, "previous": PREVIOUS, "signing": SIGNING})
    unsigned = json.dumps({"current": CURRENT, "previous": PREVIOUS})
    ingest_stack.base_env = {**CORPUS["environment"], "WEBHOOK_SECRET_ARN": ingest_stack.secret(signed)}
    ingest_stack.arns["unsigned"] = ingest_stack.secret(unsigned)
    yield ingest_stack


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_corpus_case(corpus_stack: IngestStack, case: dict[str, Any]) -> None:
    env = dict(case.get("env", {}))
    if case.get("signing") is False:
        env["WEBHOOK_SECRET_ARN"] = corpus_stack.arns["unsigned"]
    handler = corpus_stack.handler(env)
    corpus_stack.drain()  # nothing left over from an earlier case

    status, body = decode_response(corpus_stack.call(handler, build_request(case)))
    queued = validate_queued(corpus_stack.drain())
    expect = case["expect"]

    assert status == expect["status"], body
    assert error_shape_ok(status, body), body
    if "code" in expect:
        assert body["code"] == expect["code"], body
    for count in ("accepted", "skipped", "rejected"):
        if count in expect:
            assert body[count] == expect[count], body
    if "reasons" in expect:
        assert [e["reason"] for e in body["errors"]] == expect["reasons"], body
    if "fields" in expect:
        assert [e["field"] for e in body["errors"]] == expect["fields"], body
    if "skipped_reasons" in expect:
        assert body["skipped_reasons"] == expect["skipped_reasons"], body
    # Nothing is queued beyond what the answer reports as accepted, and only valid changes (validate_queued).
    assert len(queued) == expect.get("queued", 0) == (body.get("accepted") or 0)
    if "context_keys" in expect:
        assert sorted(c.context_key for c in queued) == sorted(expect["context_keys"])
    if "context_kinds" in expect:
        assert sorted(c.context_kind for c in queued) == sorted(expect["context_kinds"])
    # Answers never repeat a header value the caller sent (short ones could match by chance).
    answer = json.dumps(body, ensure_ascii=False)
    for value in case.get("headers", {}).values():
        if value and len(value) >= 6:
            assert substitute(value) not in answer, value


def test_corpus_is_large_and_documented() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) >= 40
    assert len(set(names)) == len(names), "case names must be unique"
    readme = (CORPUS_DIR / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z0-9]+(?:-[a-z0-9]+)+)` \|", readme, flags=re.MULTILINE))
    assert listed == set(names), f"README.md and cases.json disagree: {sorted(listed ^ set(names))}"
    for case in CASES:
        assert case.get("description"), case["name"]
        assert "status" in case["expect"], case["name"]
        assert "code" in case["expect"] or "reasons" in case["expect"] or case["expect"]["status"] == 200, case["name"]
