"""URL helpers shared by the CLI and the status page."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit


def loopback_origin(url: str) -> str | None:
    """`scheme://host:port` of an http(s) URL on this machine (127.0.0.0/8, ::1, localhost), else None."""
    split = urlsplit(url)
    host = split.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return f"{split.scheme}://{split.netloc}" if loopback and split.scheme in ("http", "https") else None


def without_credentials(url: str) -> str:
    """The URL without a `user:password@` part."""
    split = urlsplit(url)
    if split.username is None and split.password is None:
        return url
    host = split.hostname or ""
    return urlunsplit(split._replace(netloc=f"{host}:{split.port}" if split.port else host))
