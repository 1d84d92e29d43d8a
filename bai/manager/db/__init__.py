"""The manager's database executors: one interface, SQLite and PostgreSQL behind it.

:func:`create_database` picks the backend from a URL or the manager's ``[db]``
config; everything else lives in the modules below and is re-exported here:

* :mod:`~bai.manager.db.base`: the backend-neutral :class:`Database` and
  :class:`Connection` interface, transactions and their retry, timeouts,
  errors and :class:`Rows`; the guarantees every backend keeps.
* :mod:`~bai.manager.db.sqlite`: :class:`SqliteDatabase`, the embedded default.
* :mod:`~bai.manager.db.postgres`: :class:`PostgresDatabase`, the distributed
  mode's database (the only module that touches asyncio, via trio-asyncio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.manager.db.base import (
    CLEANUP_TIMEOUT,
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    UNAVAILABLE_ERRORS,
    Connection,
    Database,
    DatabaseClosed,
    DatabaseError,
    DatabaseTimeout,
    DatabaseUnavailable,
    Parameters,
    Rows,
    is_retryable,
)
from bai.manager.db.postgres import PostgresDatabase
from bai.manager.db.sqlite import SQLITE_BUSY_TIMEOUT, SqliteDatabase

if TYPE_CHECKING:
    from bai.common.config import DbConfig

__all__ = [
    "CLEANUP_TIMEOUT",
    "DEFAULT_ACQUIRE_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT",
    "UNAVAILABLE_ERRORS",
    "Connection",
    "Database",
    "DatabaseClosed",
    "DatabaseError",
    "DatabaseTimeout",
    "DatabaseUnavailable",
    "Parameters",
    "PostgresDatabase",
    "Rows",
    "SqliteDatabase",
    "create_database",
    "is_retryable",
]


def create_database(target: str | DbConfig, **options: Any) -> Database:
    """Build the database described by a URL or by the manager's ``[db]`` config.

    URLs: ``sqlite://`` (in memory), ``sqlite:///relative/path.db``,
    ``sqlite:////absolute/path.db``, ``postgresql://user:password@host:port/name``
    (any ``postgresql+driver://`` too).  *options* go to the implementation's
    constructor (``statement_timeout``, ``pool_size``...).  The result is not
    open yet.
    """
    if isinstance(target, str):
        try:
            url = sa.make_url(target)
        except sa.exc.ArgumentError:
            raise InvalidValue("not a database URL", value=target, field="url") from None
        backend = url.get_backend_name()
        if backend == "sqlite":
            return SqliteDatabase(url.database or None, **options)
        if backend == "postgresql":
            return PostgresDatabase(url, **options)
        raise InvalidValue("the database must be sqlite or postgresql", value=target, field="url")
    if target.type == "sqlite":
        return SqliteDatabase(target.path, pool_size=target.pool_size, **options)
    url = sa.URL.create(
        "postgresql+asyncpg",
        username=target.user,
        password=target.password or None,
        host=target.addr.host,
        port=target.addr.port,
        database=target.name,
    )
    return PostgresDatabase(
        url,
        pool_size=target.pool_size,
        connect_timeout=float(target.connect_timeout),
        **options,
    )
