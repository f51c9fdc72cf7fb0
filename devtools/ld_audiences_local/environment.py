"""The process environment the functions read while the local stack runs, put back as it was afterwards."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ld_audiences_local.defaults import ACCESS_KEY, REGION, SECRET_KEY

_AWS_VARIABLES_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class EnvironmentOverlay:
    """Sets variables (None removes one) and restores each one's previous value, or its absence."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            _put(name, value)

    def restore(self) -> None:
        for name, value in self._saved.items():
            _put(name, value)
        self._saved = {}


def aws_environment(endpoint_url: str) -> dict[str, str | None]:
    """Every AWS SDK client in the process talks to `endpoint_url` with dummy credentials."""
    env: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    env.update(dict.fromkeys(_AWS_VARIABLES_CLEARED))
    # Service-specific endpoints would win over AWS_ENDPOINT_URL.
    env.update(dict.fromkeys(name for name in os.environ if name.startswith("AWS_ENDPOINT_URL_")))
    return env


def _put(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
