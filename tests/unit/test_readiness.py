"""`check`'s readings of what LaunchDarkly's API shows: roles and policies, instances, big segment stores."""

from __future__ import annotations

from ld_audiences_cli.readiness import instance_verdict, policy_allows, store_verdict, write_access_verdict

SEGMENT = "proj/p:env/e:segment/x"


def test_a_policy_allows_what_an_allow_matches_and_no_deny_does() -> None:
    allow = {"effect": "allow", "actions": ["createSegment", "updateIncluded"], "resources": ["proj/*:env/e:segment/*"]}
    assert policy_allows([allow], "createSegment", SEGMENT)
    assert not policy_allows([allow], "createSegment", "proj/p:env/other:segment/x")
    assert not policy_allows([allow], "deleteSegment", SEGMENT)
    deny = {"effect": "deny", "actions": ["*"], "resources": ["proj/p:env/e:segment/*"]}
    assert not policy_allows([allow, deny], "createSegment", SEGMENT)
    assert not policy_allows([], "createSegment", SEGMENT)
    everything_but = {"effect": "allow", "notActions": ["updateIncluded"], "resources": ["proj/*:env/*:segment/*"]}
    assert policy_allows([everything_but], "createSegment", SEGMENT)
    assert not policy_allows([everything_but], "updateIncluded", SEGMENT)
    tagged = {"effect": "allow", "actions": ["*"], "resources": ["proj/*:env/*;prod-tag:segment/*"]}
    assert policy_allows([tagged], "updateIncluded", SEGMENT)  # the tag is not checked: a warning says so


def test_write_access_from_the_built_in_role_or_the_custom_roles() -> None:
    assert write_access_verdict("writer", None, "p", "e").ok
    reader = write_access_verdict("reader", None, "p", "e")
    assert not reader.ok and "Writer role" in reader.message and "createSegment and updateIncluded" in reader.message
    custom = [
        {"effect": "allow", "actions": ["createSegment", "updateIncluded"], "resources": ["proj/p:env/e:segment/*"]}
    ]
    allowed = write_access_verdict("reader", custom, "p", "e")
    assert allowed.ok and not allowed.warn
    wrong_env = write_access_verdict("reader", custom, "p", "other")
    assert not wrong_env.ok and "createSegment, updateIncluded" in wrong_env.message
    unknown = write_access_verdict("someday-role", None, "p", "e")
    assert unknown.ok and unknown.warn


def test_synced_segments_are_not_offered_on_the_eu_and_federal_instances() -> None:
    for url, name in (("https://app.eu.launchdarkly.com", "EU"), ("https://app.launchdarkly.us/", "federal")):
        verdict = instance_verdict(url, "segment-audiences")
        assert not verdict.ok and name in verdict.message and "rest writer" in verdict.message
        assert instance_verdict(url, "rest").ok
    assert instance_verdict("https://app.launchdarkly.com", "segment-audiences").ok


def store(project: str = "p", environment: str = "e", on: bool = True, **status: object) -> dict[str, object]:
    return {
        "_id": "1",
        "_links": {},
        "integrationKey": "redis",
        "projectKey": project,
        "environmentKey": environment,
        "config": {},
        "on": on,
        "tags": [],
        "name": "Prod store",
        "version": 1,
        "_status": {"available": True, "potentiallyStale": False, **status},
    }


def test_a_store_of_the_environment_turned_on_and_in_sync_serves_sdks() -> None:
    assert store_verdict([store()], "p", "e").ok and not store_verdict([store()], "p", "e").warn
    for items in ([], [store(environment="other")], [store(on=False)]):
        verdict = store_verdict(items, "p", "e")
        assert verdict.warn and "Relay Proxy" in verdict.message and "never match" in verdict.message
    stale = store_verdict([store(available=False, potentiallyStale=True)], "p", "e")
    assert not stale.ok and "in sync" in stale.message
