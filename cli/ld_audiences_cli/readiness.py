"""`check`'s answers on whether segments written to an environment can be evaluated (docs/LAUNCHDARKLY.md,
"Ready to evaluate"):

* may the token write segments there: `getCallerIdentity` names the token, `getToken` gives its built-in role
  and custom roles, `getCustomRole` their policies, evaluated for `createSegment` and `updateIncluded` on
  `proj/{p}:env/{e}:segment/*`. LaunchDarkly offers no "may I" call, so this is our reading of its policy
  rules, not its verdict;
* does the instance offer what the writer needs: synced segments are not offered on the EU and federal
  instances (decided from the API's host);
* can server-side SDKs evaluate them: only through a big segment store, filled by a persistent store
  integration (`getBigSegmentStoreIntegrations` shows those) or by a Relay Proxy (which the API does not show).

A verdict that cannot be decided from what the API shows is a warning, with what to check by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from ld_audiences_cli.check import API_VERSION, TIMEOUT, Verdict, _error_text, no_answer

WRITE_ACTIONS = ("createSegment", "updateIncluded")  # what both writers need [SEG]
WRITING_ROLES = frozenset({"writer", "admin", "owner"})
READ_ONLY_ROLES = frozenset({"reader", "no_access"})
# Hosts of the instances without synced segments (DESIGN.md; LaunchDarkly's instance docs).
NO_SYNCED_SEGMENTS = {"app.eu.launchdarkly.com": "EU", "app.launchdarkly.us": "federal"}
STORE_DOCS = "https://launchdarkly.com/docs/home/flags/segment-config"
Statement = Mapping[str, Any]


# ----------------------------------------------------------------------------------------- pure


def _matches(patterns: Iterable[str], value: str) -> bool:
    # A resource specifier's tag condition (`;tag`) is dropped: the environment's tags are not read, so a
    # tag-scoped statement is taken to apply (the answer then errs towards "may write": a warning says so).
    return any(fnmatchcase(value, ":".join(part.split(";")[0] for part in p.split(":"))) for p in patterns)


def _applies(statement: Statement, action: str, resource: str) -> bool:
    if statement.get("notActions"):
        action_ok = not _matches(statement["notActions"], action)
    else:
        action_ok = _matches(statement.get("actions") or [], action)
    if statement.get("notResources"):
        resource_ok = not _matches(statement["notResources"], resource)
    else:
        resource_ok = _matches(statement.get("resources") or [], resource)
    return action_ok and resource_ok


def policy_allows(statements: list[Statement], action: str, resource: str) -> bool:
    """LaunchDarkly's rule: a matching deny wins over any allow; nothing matching is a deny."""
    applying = [s for s in statements if _applies(s, action, resource)]
    return any(s.get("effect") == "allow" for s in applying) and not any(s.get("effect") == "deny" for s in applying)


def write_access_verdict(
    role: str | None, statements: list[Statement] | None, project_key: str, environment_key: str
) -> Verdict:
    """`statements`: the custom roles' and inline policies' statements, None when the token has neither."""
    subject = "write access"
    resource = f"proj/{project_key}:env/{environment_key}:segment/ld-audiences-check"
    need = f"{' and '.join(WRITE_ACTIONS)} on proj/{project_key}:env/{environment_key}:segment/*"
    if statements is not None:
        denied = [a for a in WRITE_ACTIONS if not policy_allows(statements, a, resource)]
        if not denied:
            return Verdict(subject, True, f"the token's custom role(s) allow {need}", warn=_tagged(statements))
        if role in WRITING_ROLES:
            return Verdict(
                subject,
                True,
                f"built-in role {role!r}, but its custom role(s) do not allow {', '.join(denied)}: how LaunchDarkly "
                "combines the two is not documented; check in Account settings > Authorization",
                warn=True,
            )
        return Verdict(subject, False, f"the token's role(s) do not allow {', '.join(denied)}: grant {need}")
    if role in WRITING_ROLES:
        return Verdict(subject, True, f"built-in role {role!r} may write segments in {project_key}/{environment_key}")
    if role in READ_ONLY_ROLES:
        return Verdict(
            subject,
            False,
            f"built-in role {role!r} cannot write: the sync's writes are refused (403); give the token the Writer "
            f"role or a custom role with {need} (a read-only token is enough only for status and audit)",
        )
    return Verdict(subject, True, f"role {role!r} is not one check knows: make sure it grants {need}", warn=True)


def _tagged(statements: list[Statement]) -> bool:
    return any(";" in r for s in statements for r in [*(s.get("resources") or []), *(s.get("notResources") or [])])


def instance_verdict(base_url: str, writer: str) -> Verdict:
    subject = "instance"
    host = (urlsplit(base_url).hostname or "").lower()
    name = NO_SYNCED_SEGMENTS.get(host)
    if writer == "segment-audiences":
        if name:
            return Verdict(
                subject,
                False,
                f"{host} is LaunchDarkly's {name} instance, which does not offer synced segments: deploy with the "
                "rest writer (LaunchDarklyWriter=rest, with the project and environment keys)",
            )
        return Verdict(subject, True, f"{host} offers synced segments (only the EU and federal instances do not)")
    return Verdict(subject, True, f"big segments (the rest writer) are written through the REST API of {host}")


def store_verdict(integrations: list[Mapping[str, Any]], project_key: str, environment_key: str) -> Verdict:
    """From `getBigSegmentStoreIntegrations`' items: those of the environment, turned on, in sync."""
    subject = "big segment store"
    where = f"{project_key}/{environment_key}"
    mine = [
        i for i in integrations if i.get("projectKey") == project_key and i.get("environmentKey") == environment_key
    ]
    on = [i for i in mine if i.get("on") is True]
    relay = (
        "server-side SDKs evaluate synced and big segments only through a big segment store; without one, flags "
        "targeting them never match on the server"
    )
    if not on:
        found = f"{len(mine)} turned off" if mine else "none"
        return Verdict(
            subject,
            True,
            f"no persistent store integration is on for {where} ({found}): unless a Relay Proxy fills your SDKs' "
            f"store, {relay}. Add a Redis or DynamoDB integration to the environment and configure the SDKs' "
            f"big segments store ({STORE_DOCS})",
            warn=True,
        )
    names = ", ".join(f"{i.get('name')!r} ({i.get('integrationKey')})" for i in on)
    status = [i.get("_status") or {} for i in on]
    if any(s.get("available") is True and s.get("potentiallyStale") is not True for s in status):
        return Verdict(subject, True, f"{names} is on for {where} and in sync: server-side SDKs using it can evaluate")
    return Verdict(
        subject,
        False,
        f"{names} is on for {where} but LaunchDarkly does not report it in sync (available is not true, or "
        "potentially stale): check its errors in Integrations; until then SDKs may evaluate stale memberships",
    )


# ----------------------------------------------------------------------------------------- reads


class _Api:
    def __init__(self, base_url: str, token: str, session: requests.Session) -> None:
        self._base, self._session = base_url.rstrip("/"), session
        self._headers = {"Authorization": token, "LD-API-Version": API_VERSION}

    def get(self, path: str, version: str = API_VERSION) -> requests.Response:
        headers = {**self._headers, "LD-API-Version": version}
        return self._session.get(self._base + path, headers=headers, timeout=TIMEOUT, allow_redirects=False)


def _object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _unsure(subject: str, what: str, response: requests.Response, then: str) -> Verdict:
    return Verdict(
        subject, True, f"cannot tell: {what} answered {response.status_code} {_error_text(response)}; {then}", warn=True
    )


def check_write_access(
    base_url: str, token: str, project_key: str, environment_key: str, session: requests.Session
) -> Verdict:
    api = _Api(base_url, token, session)
    by_hand = (
        f"check in Account settings > Authorization that the token may {' and '.join(WRITE_ACTIONS)} on "
        f"proj/{project_key}:env/{environment_key}:segment/*"
    )
    identity = api.get("/api/v2/caller-identity")
    token_id = _object(identity).get("tokenId") if identity.status_code == 200 else None
    if not isinstance(token_id, str) or not token_id:
        return _unsure("write access", "GET /api/v2/caller-identity", identity, by_hand)
    answer = api.get(f"/api/v2/tokens/{quote(token_id, safe='')}")
    if answer.status_code != 200:
        return _unsure("write access", "GET /api/v2/tokens/{id}", answer, by_hand)
    details = _object(answer)
    role = details.get("role") if isinstance(details.get("role"), str) else None
    statements: list[Statement] | None = None
    inline = [s for s in details.get("inlineRole") or [] if isinstance(s, dict)]
    custom = [r for r in details.get("customRoleIds") or [] if isinstance(r, str)]
    if inline or custom:
        statements = list(inline)
        for role_id in custom:
            found = api.get(f"/api/v2/roles/{quote(role_id, safe='')}")
            if found.status_code != 200:
                return _unsure("write access", f"GET /api/v2/roles/{role_id}", found, by_hand)
            statements += [s for s in _object(found).get("policy") or [] if isinstance(s, dict)]
    return write_access_verdict(role, statements, project_key, environment_key)


def check_store(
    base_url: str, token: str, project_key: str, environment_key: str, session: requests.Session
) -> Verdict:
    # A beta API: LaunchDarkly serves it only to `LD-API-Version: beta` ("Persistent store integrations (beta)").
    answer = _Api(base_url, token, session).get("/api/v2/integration-capabilities/big-segment-store", "beta")
    if answer.status_code != 200:
        return _unsure(
            "big segment store",
            "GET /api/v2/integration-capabilities/big-segment-store",
            answer,
            "check the environment's persistent store integrations (Integrations > Redis or DynamoDB) by hand, or "
            f"that a Relay Proxy fills the SDKs' big segments store ({STORE_DOCS})",
        )
    items: list[Mapping[str, Any]] = [i for i in _object(answer).get("items") or [] if isinstance(i, dict)]
    return store_verdict(items, project_key, environment_key)


def readiness(
    base_url: str,
    token: str,
    writer: str,
    project_key: str | None,
    environment_key: str | None,
    session: requests.Session,
) -> list[Verdict]:
    verdicts = [instance_verdict(base_url, writer)]
    if not (project_key and environment_key):
        return verdicts
    try:
        verdicts.append(check_write_access(base_url, token, project_key, environment_key, session))
        verdicts.append(check_store(base_url, token, project_key, environment_key, session))
    except requests.RequestException as exc:
        verdicts.append(no_answer("readiness", f"could not reach {base_url} ({type(exc).__name__})"))
    return verdicts
