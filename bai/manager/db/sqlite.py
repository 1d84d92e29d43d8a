"""The embedded SQLite backend: :class:`SqliteDatabase`.

It drives SQLAlchemy's sync engine in a worker thread through
``trio.to_thread.run_sync`` with a one-thread limiter, so the database file is
only ever touched by one thread at a time.  The file is in WAL mode, so
readers never wait for the writer; write transactions are serialised by a
Trio lock before they start (``BEGIN IMMEDIATE``), so two writers never wait
on each other inside SQLite.  A cancelled statement is stopped by SQLite's
progress handler within a few thousand VM steps.  Because a write transaction
holds the lock until it ends, never wait on anything but the database inside
one.  Read-only transactions run with ``query_only``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import sqlalchemy as sa
import trio
from sqlalchemy import event
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from bai.common.errors import InvalidValue
from bai.manager.db.base import (
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

__all__ = ["SQLITE_BUSY_TIMEOUT", "SqliteDatabase"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds SQLite waits for a lock held by another process before failing (``busy_timeout``).
SQLITE_BUSY_TIMEOUT: Final = 10.0

#: VM steps between two checks of a connection's abort flag.
_PROGRESS_STEPS: Final = 10_000


def _execute_sync(conn: sa.Connection, statement: sa.Executable, parameters: Parameters) -> Rows:
    return _materialize(conn.execute(statement, parameters))


def _abort_flag(conn: sa.Connection) -> threading.Event:
    """The flag that, once set, makes SQLite abort the connection's running statement."""
    flag: threading.Event = conn.connection.info["bai_abort"]
    return flag


def _sqlite_release(conn: sa.Connection, *, readonly: bool) -> None:
    """Give a connection whose transaction ended back to the pool, writable again."""
    try:
        if readonly:
            conn.exec_driver_sql("PRAGMA query_only = OFF")
    finally:
        conn.close()


class _SqliteConnection(Connection):
    def __init__(
        self, db: SqliteDatabase, conn: sa.Connection, *, readonly: bool, holds_write_lock: bool
    ) -> None:
        super().__init__(readonly=readonly, statement_timeout=db.statement_timeout)
        self._db = db
        self._conn = conn
        self._stop = _abort_flag(conn)
        self._holds_write_lock = holds_write_lock

    @property
    def dialect_name(self) -> Literal["sqlite"]:
        return "sqlite"

    async def _interruptible(self, fn: Callable[[], T]) -> T:
        try:
            return await trio.to_thread.run_sync(
                fn, limiter=self._db._limiter, abandon_on_cancel=True
            )
        except trio.Cancelled:
            # The abandoned call keeps the one-thread limiter until it ends, so
            # the rollback that follows waits for it; the abort flag makes that short.
            self._stop.set()
            raise

    async def _execute(self, statement: sa.Executable, parameters: Parameters) -> Rows:
        return await self._interruptible(
            functools.partial(_execute_sync, self._conn, statement, parameters)
        )

    async def _run_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        return await self._interruptible(functools.partial(fn, self._conn))

    async def _commit_and_release(self) -> None:
        await self._db._in_thread(self._commit_sync)

    async def _rollback_and_release(self) -> None:
        await self._db._in_thread(self._rollback_sync)

    def _commit_sync(self) -> None:
        self._conn.commit()
        _sqlite_release(self._conn, readonly=self._readonly)

    def _rollback_sync(self) -> None:
        # The statement the flag was meant to stop has ended (same limiter).
        self._stop.clear()
        try:
            self._conn.rollback()
        finally:
            _sqlite_release(self._conn, readonly=self._readonly)

    def _discard(self) -> None:
        try:
            if not self._conn.closed:
                self._conn.invalidate()
        except Exception:
            log.warning("could not drop a SQLite connection", exc_info=True)

    def _release_slot(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            self._db._write_lock.release()
        self._db._slots.release()


class SqliteDatabase(Database):
    """The embedded database: one SQLite file (or memory) driven from a worker thread.

    *path* ``None`` (or ``":memory:"``) gives a private in-memory database,
    which has exactly one connection, so its transactions run one at a time.
    A file database keeps up to *pool_size* connections: that many
    transactions may be open at once, of which one may write.
    ``synchronous=NORMAL`` is used with WAL: a crash never corrupts the file,
    though a power loss may drop the last commits.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        pool_size: int = 8,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> None:
        super().__init__(statement_timeout=statement_timeout, acquire_timeout=acquire_timeout)
        if pool_size < 1:
            raise InvalidValue("pool_size must be at least 1", value=pool_size, field="pool_size")
        if busy_timeout < 5:
            raise InvalidValue(
                "busy_timeout must be at least 5 seconds", value=busy_timeout, field="busy_timeout"
            )
        self._memory = path is None or str(path) == ":memory:"
        self._path = None if self._memory else Path(path)  # type: ignore[arg-type]
        self._pool_size = 1 if self._memory else pool_size
        self._busy_timeout = busy_timeout
        self._engine: sa.Engine | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._write_lock = trio.Lock()
        self._slots = trio.Semaphore(self._pool_size)

    @property
    def dialect_name(self) -> Literal["sqlite"]:
        return "sqlite"

    @property
    def url(self) -> str:
        return "sqlite://" if self._path is None else f"sqlite:///{self._path}"

    @property
    def path(self) -> Path | None:
        """The database file, or ``None`` for an in-memory database."""
        return self._path

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        engine = await self._in_thread(self._create_engine)
        try:
            await self._in_thread(functools.partial(self._probe, engine))
            self._engine = engine
            yield
        finally:
            self._engine = None
            with trio.CancelScope(shield=True):
                # Waits for any abandoned statement first (same one-thread limiter).
                await self._in_thread(engine.dispose)

    def _create_engine(self) -> sa.Engine:
        connect_args = {"check_same_thread": False, "timeout": self._busy_timeout}
        engine: sa.Engine
        if self._path is None:
            engine = sa.create_engine(
                "sqlite+pysqlite://", connect_args=connect_args, poolclass=StaticPool
            )
        else:
            engine = sa.create_engine(
                f"sqlite+pysqlite:///{self._path}",
                connect_args=connect_args,
                pool_size=self._pool_size,
                max_overflow=0,
            )
        event.listen(engine, "connect", self._on_connect)
        return engine

    def _on_connect(self, dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        # Transactions are begun explicitly (BEGIN / BEGIN IMMEDIATE), not by
        # the driver's implicit and statement-dependent begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            if self._path is not None:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()
        # Cancellation sets this flag from the Trio thread; SQLite polls it while
        # a statement runs, so even a statement that had not started yet stops.
        abort = threading.Event()
        record.info["bai_abort"] = abort
        dbapi_conn.set_progress_handler(abort.is_set, _PROGRESS_STEPS)

    @staticmethod
    def _probe(engine: sa.Engine) -> None:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.DBAPIError as exc:
            raise DatabaseUnavailable(f"cannot open the SQLite database: {exc.orig}") from exc

    async def _acquire(self, *, readonly: bool, serializable: bool) -> Connection:
        engine = self._engine
        if engine is None:
            raise DatabaseClosed(f"{self.url} is not open")
        await self._slots.acquire()
        holds_write_lock = False
        try:
            if not readonly:
                await self._write_lock.acquire()
                holds_write_lock = True
            # Not abandoned on cancel: a connection checked out by an abandoned
            # thread would never be returned to the pool.
            conn = await self._in_thread(functools.partial(self._begin_sync, engine, readonly))
        except BaseException:
            if holds_write_lock:
                self._write_lock.release()
            self._slots.release()
            raise
        return _SqliteConnection(self, conn, readonly=readonly, holds_write_lock=holds_write_lock)

    async def _fetch(self, statement: sa.Executable, parameters: Parameters) -> Rows:
        engine = self._engine
        if engine is None:
            raise DatabaseClosed(f"{self.url} is not open")
        await self._slots.acquire()
        try:
            stop = threading.Event()
            flags: list[threading.Event] = []

            def run() -> Rows:
                conn = self._begin_sync(engine, True)
                flag = _abort_flag(conn)
                flags.append(flag)
                if stop.is_set():
                    flag.set()
                try:
                    rows = _execute_sync(conn, statement, parameters)
                    conn.commit()
                    return rows
                except BaseException:
                    flag.clear()
                    conn.rollback()
                    raise
                finally:
                    _sqlite_release(conn, readonly=True)

            try:
                # Abandoning is safe: run() always gives its connection back, and
                # the one-thread limiter keeps others waiting until it has.
                return await trio.to_thread.run_sync(
                    run, limiter=self._limiter, abandon_on_cancel=True
                )
            except trio.Cancelled:
                # Either we see the flag, or run() has yet to take it and sees `stop`.
                stop.set()
                for flag in flags:
                    flag.set()
                raise
        finally:
            self._slots.release()

    @staticmethod
    def _begin_sync(engine: sa.Engine, readonly: bool) -> sa.Connection:
        conn = engine.connect()
        try:
            _abort_flag(conn).clear()
            if readonly:
                conn.exec_driver_sql("PRAGMA query_only = ON")
            # IMMEDIATE takes the write lock now, so a writer never fails half-way
            # because another process wrote first.
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
        except BaseException:
            conn.close()
            raise
        return conn
