"""The backend-neutral database interface: :class:`Database`, :class:`Connection`, :class:`Rows`.

The manager talks to its database only through :class:`Database` and the
:class:`Connection` a transaction hands out::

    async with create_database(config.db) as db:      # or: await nursery.start(db.serve)
        async with db.begin() as conn:                # one read-write transaction
            rows = await conn.execute(sa.select(sessions).where(...))
        async with db.begin_readonly() as conn:       # one read-only transaction
            ...
        result = await db.transaction(fn)             # fn(conn) retried on conflicts

This module holds what every backend shares: the transaction lifecycle
(commit, rollback, bounded cleanup), the retry loop of :meth:`Database.transaction`,
the timeouts, the errors and the fully fetched :class:`Rows`.  It imports no
backend.  Guarantees, the same for every implementation:

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
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar, overload

import sqlalchemy as sa
import trio
from sqlalchemy.engine import Row, RowMapping

from bai.common.errors import BaiError, InvalidValue

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
    "Rows",
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
