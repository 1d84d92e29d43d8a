"""The PostgreSQL backend of the distributed mode: :class:`PostgresDatabase`.

It drives SQLAlchemy's ``AsyncEngine`` with the asyncpg driver through a
trio-asyncio loop that lives as long as the database object; this is the only
module of the manager's database layer that touches asyncio, and only through
that bridge.  Cancelling a statement cancels it on the server.  Read-only
transactions run ``READ ONLY``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import sqlalchemy as sa
import trio

from bai.common.errors import InvalidValue, sole_exception
from bai.manager.db.base import (
    CLEANUP_TIMEOUT,
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    Connection,
    Database,
    DatabaseClosed,
    DatabaseUnavailable,
    Parameters,
    Rows,
    _materialize,
)

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["PostgresDatabase"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _PostgresConnection(Connection):
    def __init__(self, db: PostgresDatabase, conn: AsyncConnection, *, readonly: bool) -> None:
        super().__init__(readonly=readonly, statement_timeout=db.statement_timeout)
        self._db = db
        self._conn = conn

    @property
    def dialect_name(self) -> Literal["postgresql"]:
        return "postgresql"

    async def _execute(self, statement: sa.Executable, parameters: Parameters) -> Rows:
        conn = self._conn

        async def run() -> Rows:
            return _materialize(await conn.execute(statement, parameters))

        return await self._db._aio(run)

    async def _run_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        conn = self._conn

        async def run() -> T:
            return await conn.run_sync(fn)

        return await self._db._aio(run)

    async def _commit_and_release(self) -> None:
        conn = self._conn

        async def run() -> None:
            await conn.commit()
            await conn.close()

        await self._db._aio(run)

    async def _rollback_and_release(self) -> None:
        conn = self._conn

        async def run() -> None:
            try:
                await conn.rollback()
            finally:
                await conn.close()

        await self._db._aio(run)

    def _discard(self) -> None:
        # Nothing can be awaited here; the pool reclaims the connection when it
        # is garbage-collected.
        self._conn = None  # type: ignore[assignment]

    def _release_slot(self) -> None:
        pass


class PostgresDatabase(Database):
    """The distributed mode's database: a PostgreSQL server reached with asyncpg.

    *url* is a SQLAlchemy or libpq-style URL (``postgresql://user:pw@host:5432/db``);
    the asyncpg driver is always used.  Up to *pool_size* transactions may be
    open at once.
    """

    def __init__(
        self,
        url: str | sa.URL,
        *,
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> None:
        super().__init__(statement_timeout=statement_timeout, acquire_timeout=acquire_timeout)
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError:
            raise InvalidValue("not a database URL", value=str(url), field="url") from None
        if parsed.get_backend_name() != "postgresql":
            raise InvalidValue("not a PostgreSQL URL", value=str(url), field="url")
        if pool_size < 1:
            raise InvalidValue("pool_size must be at least 1", value=pool_size, field="pool_size")
        self._sa_url = parsed.set(drivername="postgresql+asyncpg")
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: AsyncEngine | None = None
        self._read_engine: AsyncEngine | None = None

    @property
    def dialect_name(self) -> Literal["postgresql"]:
        return "postgresql"

    @property
    def url(self) -> str:
        return self._sa_url.render_as_string(hide_password=True)

    async def _aio(self, fn: Callable[[], Awaitable[T]]) -> T:
        import trio_asyncio

        loop = self._loop
        if loop is None:
            raise DatabaseClosed(f"{self.url} is not open")
        result: T = await trio_asyncio.aio_as_trio(fn, loop=loop)()
        return result

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        error: BaseException | None = None
        try:
            async with self._loop_and_engine():
                yield
        except BaseExceptionGroup as group:
            # trio-asyncio runs our body inside its own nurseries, which wrap
            # whatever the body raised; hand the caller the exception itself.
            error = sole_exception(group)
            if error is group:
                raise
        if error is not None:
            raise error

    @asynccontextmanager
    async def _loop_and_engine(self) -> AsyncIterator[None]:
        import trio_asyncio
        from sqlalchemy.ext.asyncio import create_async_engine

        async with trio_asyncio.open_loop() as loop:
            self._loop = loop
            options: dict[str, Any] = {
                "pool_size": self._pool_size,
                "max_overflow": 0,
                "pool_timeout": self.acquire_timeout,
            }
            engine = create_async_engine(
                self._sa_url, connect_args={"timeout": self._connect_timeout}, **options
            )
            # fetch() runs single statements on their own connections: in
            # autocommit on read-only sessions, the server still refuses writes
            # and no BEGIN/COMMIT round trips are needed.
            read_engine = create_async_engine(
                self._sa_url,
                isolation_level="AUTOCOMMIT",
                connect_args={
                    "timeout": self._connect_timeout,
                    "server_settings": {"default_transaction_read_only": "on"},
                },
                **options,
            )
            try:
                await self._probe(engine)
                self._engine = engine
                self._read_engine = read_engine
                yield
            finally:
                self._engine = self._read_engine = None
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
                    await self._aio(engine.dispose)
                    await self._aio(read_engine.dispose)
                if scope.cancelled_caught:
                    log.warning("closing %s took longer than %s s", self.url, CLEANUP_TIMEOUT)
                self._loop = None

    async def _probe(self, engine: AsyncEngine) -> None:
        async def probe() -> None:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")

        try:
            with trio.fail_after(self._connect_timeout):
                await self._aio(probe)
        except trio.TooSlowError:
            raise DatabaseUnavailable(
                f"{self.url} did not answer within {self._connect_timeout} s"
            ) from None
        except (OSError, sa.exc.DBAPIError) as exc:
            raise DatabaseUnavailable(f"cannot connect to {self.url}: {exc}") from exc

    async def _acquire(self, *, readonly: bool, serializable: bool) -> Connection:
        engine = self._engine
        if engine is None:
            raise DatabaseClosed(f"{self.url} is not open")
        options: dict[str, Any] = {}
        if readonly:
            options["postgresql_readonly"] = True
        if serializable:
            options["isolation_level"] = "SERIALIZABLE"

        async def connect() -> AsyncConnection:
            conn = await engine.connect()
            try:
                if options:
                    await conn.execution_options(**options)
                await conn.begin()
            except BaseException:
                await conn.close()
                raise
            return conn

        conn = await self._aio(connect)
        return _PostgresConnection(self, conn, readonly=readonly)

    async def _fetch(self, statement: sa.Executable, parameters: Parameters) -> Rows:
        engine = self._read_engine
        if engine is None:
            raise DatabaseClosed(f"{self.url} is not open")

        async def run() -> Rows:
            async with engine.connect() as conn:
                return _materialize(await conn.execute(statement, parameters))

        return await self._aio(run)
