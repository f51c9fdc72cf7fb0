"""Which URLs the CLI treats as the local stack's, and what the status page shows of a URL."""

from __future__ import annotations

import pytest

from ld_audiences_local.urls import loopback_origin, without_credentials


@pytest.mark.parametrize(
    "url, origin",
    [
        ("http://127.0.0.1:45351/123456789012/ld-audiences-changes", "http://127.0.0.1:45351"),
        ("http://localhost:5000/123456789012/q", "http://localhost:5000"),
        ("http://[::1]:5000/123456789012/q", "http://[::1]:5000"),
        ("http://127.8.9.10/q", "http://127.8.9.10"),
        ("https://sqs.us-east-1.amazonaws.com/123456789012/q", None),
        ("http://10.0.0.5:5000/123456789012/q", None),
        ("http://localhost.example.com/q", None),
        ("ftp://127.0.0.1/q", None),
        ("not a url", None),
    ],
)
def test_only_this_machines_urls_are_local(url: str, origin: str | None) -> None:
    assert loopback_origin(url) == origin


def test_credentials_never_show() -> None:
    assert without_credentials("http://user:s3cret@127.0.0.1:8765/x") == "http://127.0.0.1:8765/x"
    assert without_credentials("https://token@app.launchdarkly.com") == "https://app.launchdarkly.com"
    assert without_credentials("https://app.launchdarkly.com/api") == "https://app.launchdarkly.com/api"
