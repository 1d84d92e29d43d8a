"""The manager's database executors: one interface, SQLite and PostgreSQL behind it.

The manager talks to its database only through :class:`Database` and the
:class:`Connection` a transaction hands out::

    async with create_database(config.db) as db:      # or: await nursery.start(db.serve)
        async with db.begin() as conn:                # one read-write transaction
            rows = await conn.execute(sa.select(sessions).where(...))
        async with db.begin_readonly() as conn:       # one read-only transaction
            ...
        result = await db.transaction(fn)             # fn(conn) retried on conflicts

Guarantees, the same for both implementations:

* A transaction commits when its ``async with`` block ends normally and rolls
  back when the block raises or is cancelled; either way the connection goes
  back to the pool in a clean state and the next transaction can use it.
* :meth:`Connection.execute` returns :class:`Rows`, fully fetched: no cursor
  or lazy result ever crosses a thread or event-loop boundary.
* Every wait is bounded: taking a connection by ``acquire_timeout``, each
  statement and the commit by ``statement_timeout`` (overridable per call),
  and the rollback after a failure by :data:`CLEANUP_TIMEOUT`.  A deadline
  that passes raises :class:`DatabaseTimeout` and rolls the transaction back
  (a commit cut off by its deadline may still have been applied, as with any
  database over a network).
* Read-only transactions reject writes (SQLite ``query_only``, PostgreSQL
  ``READ ONLY``).
* Statements are SQLAlchemy Core; errors are SQLAlchemy's
  (:class:`sqlalchemy.exc.IntegrityError` for a duplicate key on both).

The implementations:

* :class:`SqliteDatabase` (the embedded default) drives SQLAlchemy's sync
  engine in a worker thread through ``trio.to_thread.run_sync`` with a
  one-thread limiter, so the database file is only ever touched by one
  thread at a time.  The file is in WAL mode, so readers never wait for the
  writer; write transactions are serialised by a Trio lock before they start
  (``BEGIN IMMEDIATE``), so two writers never wait on each other inside
  SQLite.  A cancelled statement is stopped by SQLite's progress handler
  within a few thousand VM steps.
  Because a write transaction holds the lock until it ends, never wait on
  anything but the database inside one.
* :class:`PostgresDatabase` drives SQLAlchemy's ``AsyncEngine`` with the
  asyncpg driver through a trio-asyncio loop that lives as long as the
  database object.  Cancelling a statement cancels it on the server.
"""

from __future__ import annotations

import abc
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar, overload

import sqlalchemy as sa
import trio
from sqlalchemy import event
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from bai.common.errors import BaiError, InvalidValue, sole_exception

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from bai.common.config import DbConfig

__all__ = [
    "CLEANUP_TIMEOUT",
    "DEFAULT_ACQUIRE_TIMEOUT",
    "DEFAULT_STATEMENT_TIMEOUT",
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

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds one statement (or a commit) may take unless the call says otherwise.
DEFAULT_STATEMENT_TIMEOUT: Final = 30.0
#: Seconds :meth:`Database.begin` may wait for a free connection (and, on SQLite, the write lock).
DEFAULT_ACQUIRE_TIMEOUT: Final = 30.0
#: Seconds a rollback after a failure or cancellation may take before the connection is dropped.
CLEANUP_TIMEOUT: Final = 5.0
#: Seconds SQLite waits for a lock held by another process before failing (``busy_timeout``).
SQLITE_BUSY_TIMEOUT: Final = 10.0

#: Bind parameters for one statement, or a list of them for an executemany.
Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class DatabaseError(BaiError):
    """Base of the errors the executors raise themselves."""


class DatabaseTimeout(DatabaseError, TimeoutError):
    """A database call did not finish before its deadline; its transaction was rolled back."""


class DatabaseUnavailable(DatabaseError):
    """The database could not be opened or reached."""


class DatabaseClosed(DatabaseError):
    """The database object is not open (never entered, or already closed)."""


#: What a call raises when the database is down, unreachable, locked or too slow
#: (the executors' own errors and the driver's): a later try may succeed.
UNAVAILABLE_ERRORS: Final = (DatabaseError, sa.exc.OperationalError, sa.exc.InterfaceError)


class Rows(Sequence[Row[Any]]):
    """The fully fetched result of one statement.

    A sequence of SQLAlchemy :class:`~sqlalchemy.engine.Row` objects (named
    tuples: ``row.status`` or ``row[0]``) plus the driver's ``rowcount``, which
    counts matched rows for ``UPDATE``/``DELETE`` and is not meaningful for
    ``SELECT``.
    """

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Row[Any]], rowcount: int = -1) -> None:
        self._rows = rows
        self.rowcount = rowcount

    @overload
    def __getitem__(self, index: int) -> Row[Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Row[Any]]: ...
    def __getitem__(self, index: int | slice) -> Row[Any] | Sequence[Row[Any]]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Row[Any]]:
        return iter(self._rows)

    def __repr__(self) -> str:
        return f"Rows({self._rows!r}, rowcount={self.rowcount})"

    def all(self) -> list[Row[Any]]:
        """Every row, as a new list."""
        return list(self._rows)

    def first(self) -> Row[Any] | None:
        """The first row, or ``None`` when there is none."""
        return self._rows[0] if self._rows else None

    def one(self) -> Row[Any]:
        """The only row; :class:`sqlalchemy.exc.NoResultFound` or
        :class:`~sqlalchemy.exc.MultipleResultsFound` otherwise."""
        row = self.one_or_none()
        if row is None:
            raise sa.exc.NoResultFound("no row was found when one was required")
        return row

    def one_or_none(self) -> Row[Any] | None:
        """The only row or ``None``; :class:`~sqlalchemy.exc.MultipleResultsFound` for more."""
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound("multiple rows were found when one was required")
        return self.first()

    def scalar(self) -> Any:
        """The first column of the first row, or ``None`` when there is no row."""
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        """The first column of the only row (see :meth:`one`)."""
        return self.one()[0]

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self._rows]

    def mappings(self) -> list[RowMapping]:
        """Every row as a read-only ``{column name: value}`` mapping."""
        return [row._mapping for row in self._rows]


def _materialize(result: sa.CursorResult[Any]) -> Rows:
    rows = list(result.all()) if result.returns_rows else []
    return Rows(rows, result.rowcount)


def _execute_sync(conn: sa.Connection, statement: sa.Executable, parameters: Parameters) -> Rows:
    return _materialize(conn.execute(statement, parameters))


def is_retryable(exc: BaseException) -> bool:
    """Whether *exc* is a conflict that running the same transaction again may resolve.

    PostgreSQL serialization failures and deadlocks (SQLSTATE 40001, 40P01)
    and SQLite ``SQLITE_BUSY``/``SQLITE_LOCKED`` (another process held the
    database too long) are; constraint violations and everything else are not.
    """
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in ("40001", "40P01"):
        return True
    errorcode = getattr(orig, "sqlite_errorcode", None)
    return isinstance(errorcode, int) and errorcode & 0xFF in (5, 6)


class Connection(abc.ABC):
    """One transaction's connection, valid only inside its ``async with`` block.

    Use it from one task at a time: statements on one connection run in order.
    """

    def __init__(self, *, readonly: bool, statement_timeout: float) -> None:
        self._readonly = readonly
        self._statement_timeout = statement_timeout
        self._open = True

    @property
    @abc.abstractmethod
    def dialect_name(self) -> Literal["sqlite", "postgresql"]:
        """``"sqlite"`` or ``"postgresql"``, for the rare statement that must differ."""

    @property
    def readonly(self) -> bool:
        """Whether this is a read-only transaction."""
        return self._readonly

    async def execute(self, statement: sa.Executable, parameters: Parameters = None) -> Rows:
        """Run one Core statement (``select``, ``insert``, ``text``...) and fetch all its rows.

        *parameters* is a mapping of bind values, or a list of mappings to run
        the statement once per mapping.  Raises :class:`DatabaseTimeout` after
        the database's ``statement_timeout``; for a shorter bound, wrap the call
        in ``trio.fail_after`` (the transaction then rolls back as for any
        cancellation).
        """
        return await self._bounded(self._execute(statement, parameters), None)

    async def scalar(self, statement: sa.Executable, parameters: Parameters = None) -> Any:
        """Run *statement* and return the first column of its first row (``None`` if no row)."""
        return (await self.execute(statement, parameters)).scalar()

    async def run_sync(
        self,
        fn: Callable[[sa.Connection], T],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (must be able to extend the default)
    ) -> T:
        """Call ``fn(sync_connection)`` inside this transaction and return its result.

        For code written against SQLAlchemy's synchronous API, such as alembic
        migrations and schema comparison.  *fn* must not keep the connection.
        *timeout* replaces the ``statement_timeout`` bound (longer for migrations).
        """
        return await self._bounded(self._run_sync(fn), timeout)

    async def _bounded(self, call: Awaitable[T], limit_s: float | None) -> T:
        if not self._open:
            close = getattr(call, "close", None)
            if close is not None:
                close()
            raise DatabaseClosed("this transaction has already ended")
        limit = self._statement_timeout if limit_s is None else limit_s
        try:
            with trio.fail_after(limit):
                return await call
        except trio.TooSlowError:
            raise DatabaseTimeout(f"a database call took longer than {limit} s") from None

    async def _end(self, *, commit: bool) -> None:
        """Commit (or roll back) and give the connection back, whatever happens."""
        self._open = False
        try:
            if commit:
                try:
                    limit = self._statement_timeout
                    with trio.fail_after(limit):
                        await self._commit_and_release()
                    return
                except trio.TooSlowError:
                    await self._abort()
                    raise DatabaseTimeout(f"a commit took longer than {limit} s") from None
                except BaseException:
                    await self._abort()
                    raise
            await self._abort()
        finally:
            self._release_slot()

    async def _abort(self) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
            try:
                await self._rollback_and_release()
            except Exception:
                log.warning("rollback failed; dropping the connection", exc_info=True)
                self._discard()
                return
        if scope.cancelled_caught:
            log.warning("rollback took longer than %s s; dropping the connection", CLEANUP_TIMEOUT)
            self._discard()

    @abc.abstractmethod
    async def _execute(self, statement: sa.Executable, parameters: Parameters) -> Rows: ...

    @abc.abstractmethod
    async def _run_sync(self, fn: Callable[[sa.Connection], T]) -> T: ...

    @abc.abstractmethod
    async def _commit_and_release(self) -> None: ...

    @abc.abstractmethod
    async def _rollback_and_release(self) -> None: ...

    @abc.abstractmethod
    def _discard(self) -> None:
        """Forget a connection whose cleanup failed, without waiting."""

    @abc.abstractmethod
    def _release_slot(self) -> None:
        """Give back what the database lent this transaction (locks, pool slots)."""


class Database(abc.ABC):
    """A database the manager runs transactions on.

    Open it with ``async with`` (from one task) or run :meth:`serve` in a
    nursery; any task may then start transactions until it closes.
    """

    def __init__(
        self,
        *,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
    ) -> None:
        if statement_timeout <= 0 or acquire_timeout <= 0:
            raise InvalidValue(
                "database timeouts must be positive",
                value=(statement_timeout, acquire_timeout),
            )
        self.statement_timeout = statement_timeout
        self.acquire_timeout = acquire_timeout
        self._is_open = False
        self._lifespan_cm: AbstractAsyncContextManager[None] | None = None

    @property
    @abc.abstractmethod
    def dialect_name(self) -> Literal["sqlite", "postgresql"]:
        """``"sqlite"`` or ``"postgresql"``."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where the database is, with any password hidden (for logs and messages)."""

    @property
    def is_open(self) -> bool:
        """Whether transactions may be started now."""
        return self._is_open

    async def __aenter__(self) -> Self:
        if self._lifespan_cm is not None:
            raise DatabaseError(f"{self.url} is already open")
        lifespan = self._lifespan()
        await lifespan.__aenter__()
        self._lifespan_cm = lifespan
        self._is_open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._is_open = False
        lifespan, self._lifespan_cm = self._lifespan_cm, None
        if lifespan is not None:
            await lifespan.__aexit__(exc_type, exc, tb)

    async def serve(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, report it with ``task_status.started(self)``, and keep it
        open until cancelled; then close it."""
        async with self:
            task_status.started(self)
            await trio.sleep_forever()

    def begin(self, *, serializable: bool = False) -> AbstractAsyncContextManager[Connection]:
        """A read-write transaction: ``async with db.begin() as conn: ...``.

        Commits when the block ends normally, rolls back when it raises or is
        cancelled.  *serializable* asks PostgreSQL for ``SERIALIZABLE``
        isolation (SQLite transactions always are); such transactions may
        fail with a conflict that :meth:`transaction` retries.
        """
        return self._transaction(readonly=False, serializable=serializable)

    def begin_readonly(self) -> AbstractAsyncContextManager[Connection]:
        """A read-only transaction; writing in it raises a database error."""
        return self._transaction(readonly=True, serializable=False)

    async def fetch(self, statement: sa.Executable, parameters: Parameters = None) -> Rows:
        """Run one read-only statement in a transaction of its own and return its rows.

        The same as ``begin_readonly()`` plus one ``execute``, in a single
        round trip to the worker thread or the driver: the fast path for
        look-ups.  Bounded by ``acquire_timeout + statement_timeout``.
        """
        if not self._is_open:
            raise DatabaseClosed(f"{self.url} is not open")
        limit = self.acquire_timeout + self.statement_timeout
        try:
            with trio.fail_after(limit):
                return await self._fetch(statement, parameters)
        except trio.TooSlowError:
            raise DatabaseTimeout(f"a read took longer than {limit} s") from None

    async def transaction(
        self,
        fn: Callable[[Connection], Awaitable[T]],
        *,
        readonly: bool = False,
        serializable: bool = False,
        attempts: int = 3,
    ) -> T:
        """Run ``await fn(conn)`` in a transaction and return its result.

        When the transaction fails with a conflict (:func:`is_retryable`), it
        is rolled back and *fn* runs again in a new transaction, up to
        *attempts* times in all, with a short growing pause between tries.
        *fn* must therefore have no effects outside the database.
        """
        if attempts < 1:
            raise InvalidValue("attempts must be at least 1", value=attempts, field="attempts")
        for attempt in range(1, attempts + 1):
            try:
                async with self._transaction(readonly=readonly, serializable=serializable) as conn:
                    return await fn(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                log.info("retrying a transaction after a conflict (attempt %d): %s", attempt, exc)
                await trio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def _transaction(
        self, *, readonly: bool, serializable: bool
    ) -> AsyncIterator[Connection]:
        if not self._is_open:
            raise DatabaseClosed(f"{self.url} is not open")
        try:
            with trio.fail_after(self.acquire_timeout):
                conn = await self._acquire(readonly=readonly, serializable=serializable)
        except trio.TooSlowError:
            raise DatabaseTimeout(
                f"no database connection became free within {self.acquire_timeout} s"
            ) from None
        try:
            yield conn
        except BaseException:
            await conn._end(commit=False)
            raise
        await conn._end(commit=True)

    @abc.abstractmethod
    def _lifespan(self) -> AbstractAsyncContextManager[None]:
        """Open the database on entry, close it on exit; cleanup must be bounded and shielded."""

    @abc.abstractmethod
    async def _acquire(self, *, readonly: bool, serializable: bool) -> Connection:
        """Take a connection and begin a transaction on it; undo both if cancelled."""

    @abc.abstractmethod
    async def _fetch(self, statement: sa.Executable, parameters: Parameters) -> Rows:
        """Connect, begin read-only, execute, commit and release in one call."""


# ---------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------


#: VM steps between two checks of a connection's abort flag.
_PROGRESS_STEPS: Final = 10_000


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


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


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
