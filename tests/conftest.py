"""Shared test configuration.

Tests that need a real service (PostgreSQL, Redis, Docker) call
:func:`require_service`.  On a developer machine without the service they are
skipped; with ``BAI_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing service
fails the test instead, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import socket

import pytest

REQUIRE_SERVICES = os.environ.get("BAI_REQUIRE_SERVICES", "") not in ("", "0")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under ``BAI_REQUIRE_SERVICES=1``, fail) unless *host:port* accepts TCP."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and BAI_REQUIRE_SERVICES is set")
    pytest.skip(message)


@pytest.fixture
def redis_url() -> str:
    """URL of the real Redis the tests use; skips or fails when it is down."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def postgres_dsn() -> str:
    """DSN of the real PostgreSQL the tests use; skips or fails when it is down."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    return f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
