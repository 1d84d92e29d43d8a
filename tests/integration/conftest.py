"""Fixtures for the integration tests: scratch databases on SQLite and on the real PostgreSQL.

``db_url`` is an empty database at the newest schema, once per backend;
``empty_db_url`` a database without tables (for migration tests); ``db`` the
``db_url`` one, open; ``backends`` each deployment mode of the API tests
(``support.api_session``) and ``deployment`` one running on them;
``kernel`` a ready client of the module's ``runner`` (a kernel runner process).
PostgreSQL needs the service at 127.0.0.1:5432 (see
``tests/conftest.py``: skipped on a laptop without it, a failure in CI).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
import trio
import trio_asyncio

from bai.kernel.client import RunnerClient, RunnerProcess
from bai.manager.db import Database, create_database
from bai.manager.models import metadata, migrate

from support.api_session import (
    MODES,
    Backends,
    Deployment,
    backends_for,
    running_deployment,
)
from support.workers import worker_name

BACKENDS = ["sqlite", "postgresql"]


def _pg_admin(dsn: str, *statements: str) -> None:
    """Run statements that cannot be inside a transaction (CREATE/DROP DATABASE)."""

    async def run() -> None:
        async with trio_asyncio.open_loop() as loop:
            conn = await trio_asyncio.aio_as_trio(asyncpg.connect, loop=loop)(dsn, timeout=10)
            try:
                for statement in statements:
                    await trio_asyncio.aio_as_trio(conn.execute, loop=loop)(statement)
            finally:
                await trio_asyncio.aio_as_trio(conn.close, loop=loop)()

    trio.run(run)


def _with_database(dsn: str, name: str) -> str:
    return sa.make_url(dsn).set(database=name).render_as_string(hide_password=False)


class _Templates:
    """Migrated databases made once per test session and removed at its end.

    SQLite tests get a copy of a migrated file.  PostgreSQL tests share one
    migrated database that is emptied (TRUNCATE) before each test, which is
    much faster than creating a database per test.  Its name holds the
    process id, so each xdist worker (a process of its own, with a session of
    its own) and each concurrent run has its own; the worker's name is there
    for whoever finds one left behind.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sqlite: Path | None = None
        self.postgres: tuple[str, str] | None = None  # (admin dsn, database name)

    def sqlite_copy(self, dest: Path) -> str:
        if self.sqlite is None:
            path = self.tmp / "template.sqlite3"
            trio.run(migrate.upgrade, f"sqlite:///{path}")
            self.sqlite = path
        shutil.copyfile(self.sqlite, dest)
        return f"sqlite:///{dest}"

    def postgres_emptied(self, dsn: str) -> str:
        if self.postgres is None:
            name = f"bai_test_shared_{worker_name() or 'main'}_{os.getpid()}"
            _pg_admin(
                dsn,
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'CREATE DATABASE "{name}"',
            )
            self.postgres = (dsn, name)
            trio.run(migrate.upgrade, _with_database(dsn, name))
        url = _with_database(dsn, self.postgres[1])
        tables = ", ".join(f'"{name}"' for name in metadata.tables)
        _pg_admin(url, "SET lock_timeout = '5s'", f"TRUNCATE {tables} CASCADE")
        return url

    def drop(self) -> None:
        if self.postgres is not None:
            dsn, name = self.postgres
            _pg_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("db-templates"))
    yield templates
    templates.drop()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, db_templates: _Templates) -> str:
    """URL of an empty database at the newest schema, one per backend.

    Tests must leave its schema as they found it (use ``empty_db_url`` to
    test migrations).
    """
    if request.param == "sqlite":
        return db_templates.sqlite_copy(tmp_path / "bai.sqlite3")
    return db_templates.postgres_emptied(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def pg_url(postgres_dsn: str, db_templates: _Templates) -> str:
    """URL of an emptied PostgreSQL database at the newest schema (for separate processes)."""
    return db_templates.postgres_emptied(postgres_dsn)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a new, empty database (no tables at all), one per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    dsn = request.getfixturevalue("postgres_dsn")
    name = f"bai_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    _pg_admin(dsn, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(dsn, name)
    finally:
        _pg_admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """The scratch database of ``db_url``, open, with short deadlines."""
    async with create_database(db_url, statement_timeout=5.0, acquire_timeout=5.0) as database:
        yield database


@pytest.fixture(params=MODES)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Backends:
    return backends_for(request.param, tmp_path, request)


@pytest.fixture
async def deployment(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path) as running:
        yield running


@pytest.fixture
def kernel(runner: RunnerProcess) -> Iterator[RunnerClient]:
    with runner.client() as client:
        client.wait_ready()
        yield client
