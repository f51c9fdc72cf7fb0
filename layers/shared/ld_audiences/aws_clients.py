"""How every AWS client of the functions and tools is configured: one place.

botocore's defaults suit none of our calls: a 60 s read timeout (a DynamoDB transaction answers in
milliseconds, and a stuck connection must not eat a Lambda invocation), legacy retries, and a pool of
10 connections, fewer than the threads that share a client ("Connection pool is full" and a throw-away
connection per extra thread).
"""

from __future__ import annotations

from botocore.config import Config

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
# An SQS long poll holds the connection up to 20 s; the read timeout must outlast it.
LONG_POLL_READ_TIMEOUT = 25.0


def client_config(*, threads: int, read_timeout: float = READ_TIMEOUT) -> Config:
    """The Config for a client shared by `threads` threads."""
    return Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max(threads, 10),
        tcp_keepalive=True,
    )
