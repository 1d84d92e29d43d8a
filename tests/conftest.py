"""Shared test configuration.

Tests that need a real service (PostgreSQL, Redis, Docker) call
:func:`require_service`.  On a developer machine without the service they are
skipped; with ``BAI_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing service
fails the test instead, so CI can never go green by skipping.

Under pytest-xdist (``pytest -n N``) each worker process gets a ``TMPDIR`` and an
``XDG_CONFIG_HOME`` of its own, inherited by every process its tests start: code
under test puts fixed-prefix folders in the temporary folder (``bai-ssh-*`` key
folders, which a test counts) and ``bai login`` keeps its keypair under the
config folder, so workers sharing them would see each other's.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from support.workers import worker_name

REQUIRE_SERVICES = os.environ.get("BAI_REQUIRE_SERVICES", "") not in ("", "0")

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


_WORKER_TMP = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    worker = worker_name()
    if not worker:
        return
    # Directly under /tmp and short: tests put Unix sockets below it (108 bytes at most).
    folder = Path(tempfile.mkdtemp(prefix=f"bai-{worker}-", dir="/tmp"))
    # Sticky and world-writable like /tmp: kernels run as an unprivileged user.
    folder.chmod(0o1777)
    (folder / "config").mkdir(mode=0o700)
    config.stash[_WORKER_TMP] = folder
    os.environ["TMPDIR"] = str(folder)
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_WORKER_TMP, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


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
