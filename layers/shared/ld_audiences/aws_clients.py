"""How every AWS client of the functions and tools is configured: one place.

botocore's defaults suit none of our calls: a 60 s read timeout (a DynamoDB transaction answers in
milliseconds, and a stuck connection must not eat a Lambda invocation), legacy retries, and a pool of
10 connections, fewer than the threads that share a client ("Connection pool is full" and a throw-away
connection per extra thread).

Client-side parameter validation is off: it walks every value of a request against the service model
before serializing it, and for the state store's 100-item transactions that was 45 % of the sync
function's CPU (measured: 278 µs of CPU per change for a claim and a confirm with it, 152 µs without;
bench/first_sync.py). Our requests are built by code, not from input, and AWS validates every request
itself: a malformed one still fails, with the service's ValidationException.
"""

from __future__ import annotations

import os

from botocore.config import Config

CONNECT_TIMEOUT = 2.0
# DynamoDB and SQS answer in milliseconds: 5 s means a dead connection. The local stack's moto answers one
# DynamoDB transaction at a time, in about half a second for 100 items, and sets this variable (as it sets
# AWS_ENDPOINT_URL) to wait longer; a deployment never sets it.
READ_TIMEOUT = 5.0
READ_TIMEOUT_VARIABLE = "LD_AUDIENCES_AWS_READ_TIMEOUT"
# An SQS long poll holds the connection up to 20 s; the read timeout must outlast it.
LONG_POLL_READ_TIMEOUT = 25.0


def client_config(*, threads: int, read_timeout: float | None = None) -> Config:
    """The Config for a client shared by `threads` threads."""
    return Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout or float(os.environ.get(READ_TIMEOUT_VARIABLE) or READ_TIMEOUT),
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max(threads, 10),
        tcp_keepalive=True,
        parameter_validation=False,
    )
