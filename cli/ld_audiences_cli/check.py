"""Verify LaunchDarkly settings before deploying: the API access token, the client-side ID (the
segment-audiences writer) and the project and environment (the rest writer).

* token: `GET {base}/api/v2/versions` with the token (200 valid, 401/403 rejected);
* client-side ID: `HEAD {clientsdk}/sdk/goals/{id}` (200 valid, 404 unknown);
* project and environment: `GET {base}/api/v2/projects/{project}/environments/{environment}` with the
  token (200: both exist and the token can read them; 403: the token's role cannot; 404: one is unknown,
  and `GET {base}/api/v2/projects/{project}` tells which);
* whether segments written there can be evaluated (readiness.py): write access, the instance, a big segment store.

No verdict, error or exception text ever contains the token (nor the environment's SDK key, which the
environment's representation holds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote

import requests

from ld_audiences.config import DEFAULT_LD_BASE_URL

DEFAULT_CLIENTSDK_URL = "https://clientsdk.launchdarkly.com"
API_VERSION = "20240415"
TIMEOUT = (3.05, 10.0)


@dataclass(frozen=True)
class Verdict:
    subject: str  # "access token", "client-side ID", "project and environment", or one of readiness.py's
    ok: bool
    message: str
    warn: bool = False  # not decided by what LaunchDarkly's API shows: the message says what to check by hand
    # No usable answer (unreachable, rate limited, an unexpected status): not ok, but nothing is known to be wrong.
    unknown: bool = False

    @property
    def status(self) -> str:
        """One of STATUSES: what `check --output json` says of the verdict."""
        return "unknown" if self.unknown else "fail" if not self.ok else "warn" if self.warn else "ok"

    def line(self) -> str:
        return f"{'FAIL' if not self.ok else 'WARN' if self.warn else 'OK  '}  {self.subject}: {self.message}"


STATUSES = ("ok", "warn", "fail", "unknown", "skip")  # "skip": a check whose settings were not given


def no_answer(subject: str, message: str) -> Verdict:
    return Verdict(subject, False, message, unknown=True)


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
        return no_answer("access token", f"could not reach {url} ({type(exc).__name__})")
    status = response.status_code
    if status == 200:
        return Verdict("access token", True, f"accepted by {base_url} (GET /api/v2/versions → 200)")
    detail = _redact(_error_text(response), token)
    if status in (401, 403):
        return Verdict("access token", False, f"rejected by {base_url} ({status} {detail}); check the token")
    if status == 429:
        return no_answer("access token", f"rate limited by {base_url} (429); try again shortly")
    return no_answer("access token", f"unexpected answer from {url}: {status} {detail}".rstrip())


def check_client_side_id(
    clientsdk_url: str, client_side_id: str, *, session: requests.Session | None = None
) -> Verdict:
    url = f"{clientsdk_url.rstrip('/')}/sdk/goals/{quote(client_side_id, safe='')}"
    http = session or requests.Session()
    try:
        response = http.head(url, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return no_answer("client-side ID", f"could not reach {url} ({type(exc).__name__})")
    status = response.status_code
    if status == 200:
        return Verdict("client-side ID", True, f"{client_side_id} is a valid environment (HEAD → 200)")
    if status == 404:
        return Verdict("client-side ID", False, f"{client_side_id} is unknown to {clientsdk_url} (404)")
    return no_answer("client-side ID", f"unexpected answer from {url}: {status} {response.reason or ''}".rstrip())


def check_environment(
    base_url: str, token: str, project_key: str, environment_key: str, *, session: requests.Session | None = None
) -> Verdict:
    subject = "project and environment"
    where = f"{project_key}/{environment_key}"
    base = base_url.rstrip("/")
    project_url = f"{base}/api/v2/projects/{quote(project_key, safe='')}"
    url = f"{project_url}/environments/{quote(environment_key, safe='')}"
    http = session or requests.Session()
    headers = {"Authorization": token, "LD-API-Version": API_VERSION}
    project_exists = False
    try:
        response = http.get(url, headers=headers, timeout=TIMEOUT, allow_redirects=False)
        status = response.status_code
        if status == 404:  # which of the two is unknown?
            project = http.get(project_url, headers=headers, timeout=TIMEOUT, allow_redirects=False)
            project_exists = project.status_code == 200
    except requests.RequestException as exc:
        return no_answer(subject, f"could not reach {url} ({type(exc).__name__})")
    if status == 200:
        return Verdict(subject, True, f"{where} exists and this token can read it (GET → 200)")
    if status == 404:
        if project_exists:
            return Verdict(subject, False, f"project {project_key} has no environment {environment_key} (404)")
        return Verdict(subject, False, f"project {project_key} does not exist at {base_url} (404)")
    if status == 401:
        return Verdict(subject, False, f"the token is rejected by {base_url} (401); check the token")
    if status == 403:
        return Verdict(
            subject,
            False,
            f"this token may not read {where} (403): its role needs viewProject on proj/{project_key}, and "
            f"createSegment and updateIncluded on proj/{project_key}:env/{environment_key}:segment/*",
        )
    if status == 429:
        return no_answer(subject, f"rate limited by {base_url} (429); try again shortly")
    return no_answer(subject, f"unexpected answer from {url}: {status} {_error_text(response)}".rstrip())


def check(
    *,
    token: str,
    client_side_id: str | None,
    base_url: str = DEFAULT_LD_BASE_URL,
    clientsdk_url: str = DEFAULT_CLIENTSDK_URL,
    project_key: str | None = None,
    environment_key: str | None = None,
    writer: str | None = None,
) -> list[Verdict]:
    from ld_audiences_cli.readiness import readiness

    with requests.Session() as session:
        verdicts = [check_token(base_url, token, session=session)]
        if client_side_id:
            verdicts.append(check_client_side_id(clientsdk_url, client_side_id, session=session))
        if project_key and environment_key:
            verdicts.append(check_environment(base_url, token, project_key, environment_key, session=session))
        if writer and verdicts[0].ok:
            # Write access and the store are asked about only of an environment that was found.
            found = project_key and environment_key and verdicts[-1].ok
            verdicts += readiness(
                base_url, token, writer, *((project_key, environment_key) if found else (None, None)), session
            )
    return [replace(v, message=_redact(v.message, token)) for v in verdicts]
