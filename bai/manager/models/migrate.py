"""Create, upgrade and check the manager's schema with alembic, on SQLite and PostgreSQL.

Each function takes an open :class:`~bai.manager.db.Database` or a database
URL (opened for the call and closed again).  A migration runs in one
transaction: on both databases DDL is transactional, so a migration that
fails leaves the schema as it was.

* :func:`upgrade` / :func:`downgrade` move the schema to a revision
  (``"head"``, ``"base"``, a revision id, or a relative ``"-1"``).
* :func:`current_revision` and :func:`head_revision` say where the database
  and the code are.
* :func:`schema_differences` compares the live schema with the tables in
  :data:`bai.manager.models.metadata` (alembic's autogenerate comparison);
  an empty list means they match.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bai.manager.db import Database, create_database
from bai.manager.models.base import metadata

__all__ = [
    "ALEMBIC_DIR",
    "MIGRATION_TIMEOUT",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "schema_differences",
    "upgrade",
]

T = TypeVar("T")

#: Where env.py and the versions/ scripts live.
ALEMBIC_DIR: Final = Path(__file__).parent / "alembic"
#: Seconds one upgrade or downgrade may take.
MIGRATION_TIMEOUT: Final = 600.0


def alembic_config() -> Config:
    """An alembic :class:`~alembic.config.Config` for bai's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover  (the initial migration always exists)
        raise RuntimeError(f"no migration scripts in {ALEMBIC_DIR}")
    return head


@asynccontextmanager
async def _opened(target: Database | str) -> AsyncIterator[Database]:
    if isinstance(target, Database):
        yield target
        return
    async with create_database(target) as db:
        yield db


async def _in_transaction(
    target: Database | str, fn: Callable[[sa.Connection], T], *, write: bool
) -> T:
    async with _opened(target) as db:
        begin = db.begin() if write else db.begin_readonly()
        async with begin as conn:
            return await conn.run_sync(fn, timeout=MIGRATION_TIMEOUT)


def _alembic_command(run: Callable[[Config], None]) -> Callable[[sa.Connection], None]:
    def call(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        run(config)

    return call


async def upgrade(target: Database | str, revision: str = "head") -> None:
    """Upgrade the schema of *target* to *revision* (default: the newest).

    Creates every table on an empty database; does nothing on one that is
    already there.
    """
    await _in_transaction(
        target, _alembic_command(lambda config: command.upgrade(config, revision)), write=True
    )


async def downgrade(target: Database | str, revision: str = "base") -> None:
    """Downgrade the schema of *target* to *revision* (default: drop every table)."""
    await _in_transaction(
        target, _alembic_command(lambda config: command.downgrade(config, revision)), write=True
    )


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(target: Database | str) -> str | None:
    """The revision the schema of *target* is at, or ``None`` when it has none."""
    return await _in_transaction(target, _current, write=False)


def _compare(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "target_metadata": metadata}
    )
    return list(compare_metadata(context, metadata))


async def schema_differences(target: Database | str) -> list[Any]:
    """What alembic's autogenerate sees between the live schema and the code's tables.

    Each item is an autogenerate diff (``("add_table", Table)``, a list of
    column modifications...).  An empty list means the database matches the
    code exactly.
    """
    return await _in_transaction(target, _compare, write=False)
