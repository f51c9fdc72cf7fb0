"""Settings the functions refuse at start, before any event is read."""

from __future__ import annotations

import pytest

from ld_audiences.config import MAX_CHUNK_SIZE, ConfigError, LaunchDarklySettings


def test_a_chunk_holds_at_most_what_peers_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_CLIENT_SIDE_ID", "client-side-id")
    monkeypatch.setenv("LD_CHUNK_SIZE", str(MAX_CHUNK_SIZE))
    assert LaunchDarklySettings.from_env().chunk_size == MAX_CHUNK_SIZE == 1000
    monkeypatch.setenv("LD_CHUNK_SIZE", str(MAX_CHUNK_SIZE + 1))
    with pytest.raises(ConfigError, match="LD_CHUNK_SIZE must be between 1 and 1000"):
        LaunchDarklySettings.from_env()
