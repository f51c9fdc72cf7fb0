"""Verify LaunchDarkly credentials before deploying: the API access token and the client-side ID.

* token: `GET {base}/api/v2/versions` with the token (200 valid, 401/403 rejected);
* client-side ID: `HEAD {clientsdk}/sdk/goals/{id}` (200 valid, 404 unknown).

No verdict, error or exception text ever contains the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import requests

DEFAULT_BASE_URL = "https://app.launchdarkly.com"
DEFAULT_CLIENTSDK_URL = "https://clientsdk.launchdarkly.com"
API_VERSION = "20240415"
TIMEOUT = (3.05, 10.0)


@dataclass(frozen=True)
class Verdict:
    subject: str  # "access token" or "client-side ID"
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.subject}: {self.message}"


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("code") or body.get("message")):
        return f"{body.get('code', '')}: {body.get('message', '')}".strip(": ")
    return response.reason or ""


def check_token(base_url: str, token: str, *, session: requests.Session | None = None) -> Verdict:
    url = f"{base_url.rstrip('/')}/api/v2/versions"
    http = session or requests.Session()
    try:
        response = http.get(
            url, headers={"Authorization": token, "LD-API-Version": API_VERSION}, timeout=TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as exc:
        return Verdict("access token", False, f"could not reach {url} ({type(exc).__name__})")
    status = response.status_code
    if status == 200:
        return Verdict("access token", True, f"accepted by {base_url} (GET /api/v2/versions → 200)")
    detail = _redact(_error_text(response), token)
    if status in (401, 403):
        return Verdict("access token", False, f"rejected by {base_url} ({status} {detail}); check the token")
    if status == 429:
        return Verdict("access token", False, f"rate limited by {base_url} (429); try again shortly")
    return Verdict("access token", False, f"unexpected answer from {url}: {status} {detail}".rstrip())


def check_client_side_id(
    clientsdk_url: str, client_side_id: str, *, session: requests.Session | None = None
) -> Verdict:
    url = f"{clientsdk_url.rstrip('/')}/sdk/goals/{quote(client_side_id, safe='')}"
    http = session or requests.Session()
    try:
        response = http.head(url, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return Verdict("client-side ID", False, f"could not reach {url} ({type(exc).__name__})")
    status = response.status_code
    if status == 200:
        return Verdict("client-side ID", True, f"{client_side_id} is a valid environment (HEAD → 200)")
    if status == 404:
        return Verdict("client-side ID", False, f"{client_side_id} is unknown to {clientsdk_url} (404)")
    return Verdict("client-side ID", False, f"unexpected answer from {url}: {status} {response.reason or ''}".rstrip())


def check(
    *,
    token: str,
    client_side_id: str | None,
    base_url: str = DEFAULT_BASE_URL,
    clientsdk_url: str = DEFAULT_CLIENTSDK_URL,
) -> list[Verdict]:
    with requests.Session() as session:
        verdicts = [check_token(base_url, token, session=session)]
        if client_side_id:
            verdicts.append(check_client_side_id(clientsdk_url, client_side_id, session=session))
    return [Verdict(v.subject, v.ok, _redact(v.message, token)) for v in verdicts]
