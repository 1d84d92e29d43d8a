"""Column types, result rows, URLs and small validators of the data layer (SQLite in memory)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
import trio

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import SessionStatus
from bai.manager.db import (
    DatabaseClosed,
    PostgresDatabase,
    Rows,
    SqliteDatabase,
    create_database,
    is_retryable,
)
from bai.manager.models.base import ResourceSlotType, UTCDateTime, enum_type
from bai.manager.models.shared_config import check_config_key

_md = sa.MetaData()
probe = sa.Table(
    "probe",
    _md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slots", ResourceSlotType, nullable=True),
    sa.Column("at", UTCDateTime, nullable=True),
    sa.Column("status", enum_type(SessionStatus, "probe_status"), nullable=True),
)


@pytest.fixture
async def memdb() -> AsyncIterator[SqliteDatabase]:
    async with SqliteDatabase() as database:
        async with database.begin() as conn:
            await conn.run_sync(_md.create_all)
        yield database


async def stored(db: SqliteDatabase, **values: object) -> sa.Row[object]:
    async with db.begin() as conn:
        await conn.execute(sa.insert(probe).values(id=1, **values))
        return (await conn.execute(sa.select(probe))).one()


async def test_resource_slots_round_trip_exactly(memdb: SqliteDatabase) -> None:
    slots = ResourceSlot({"cpu": Decimal("0.5"), "mem": 17179869184, "cuda.device": 2})
    row = await stored(memdb, slots=slots)
    assert row.slots == slots
    assert row.slots["cpu"] == Decimal("0.5")
    async with memdb.begin_readonly() as conn:
        raw = await conn.scalar(sa.text("SELECT slots FROM probe"))
    assert '"0.5"' in raw and '"17179869184"' in raw  # decimals are stored as strings


async def test_resource_slots_accept_their_json_form(memdb: SqliteDatabase) -> None:
    row = await stored(memdb, slots={"cpu": "2", "mem": 1024})
    assert row.slots == ResourceSlot({"cpu": 2, "mem": 1024})


async def test_resource_slots_reject_other_values(memdb: SqliteDatabase) -> None:
    with pytest.raises(sa.exc.StatementError) as info:
        await stored(memdb, slots=["cpu"])
    assert isinstance(info.value.orig, InvalidValue)


async def test_timestamps_are_aware_utc(memdb: SqliteDatabase) -> None:
    seoul = timezone(timedelta(hours=9))
    local = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=seoul)
    row = await stored(memdb, at=local)
    assert row.at == local
    assert row.at.tzinfo is UTC and row.at.hour == 22


async def test_naive_timestamps_are_rejected(memdb: SqliteDatabase) -> None:
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"):
        await stored(memdb, at=datetime(2030, 1, 1))


async def test_enums_come_back_as_members_and_unknown_values_fail(memdb: SqliteDatabase) -> None:
    row = await stored(memdb, status="RUNNING")
    assert row.status is SessionStatus.RUNNING
    with pytest.raises(sa.exc.StatementError):
        async with memdb.begin() as conn:
            await conn.execute(sa.insert(probe).values(id=2, status="SLEEPING"))


async def test_memory_database_runs_transactions_one_at_a_time(memdb: SqliteDatabase) -> None:
    order: list[str] = []

    async def reader(name: str) -> None:
        async with memdb.begin_readonly() as conn:
            order.append(f"{name}-in")
            await conn.execute(sa.select(probe))
            await trio.sleep(0.01)
            order.append(f"{name}-out")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader, "a")
        nursery.start_soon(reader, "b")
    assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])


async def test_closed_database_refuses_transactions() -> None:
    database = SqliteDatabase()
    with pytest.raises(DatabaseClosed):
        async with database.begin():
            pass


def test_empty_rows() -> None:
    rows = Rows([], 0)
    assert rows.first() is None and rows.scalar() is None and rows.one_or_none() is None
    assert rows.all() == [] and rows.scalars() == [] and rows.rowcount == 0
    with pytest.raises(sa.exc.NoResultFound):
        rows.one()


async def test_rows_from_a_real_query(memdb: SqliteDatabase) -> None:
    async with memdb.begin_readonly() as conn:
        rows = await conn.execute(sa.select(sa.literal(1).label("a"), sa.literal("x").label("b")))
    assert len(rows) == 1 and rows.one() == (1, "x")
    assert rows.scalar_one() == 1 and rows.scalars() == [1]
    assert rows.mappings() == [{"a": 1, "b": "x"}]
    assert rows.one().b == "x"


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        ("sqlite://", SqliteDatabase, None),
        ("sqlite:///relative.db", SqliteDatabase, "relative.db"),
        ("sqlite:////abs/olute.db", SqliteDatabase, "/abs/olute.db"),
        ("postgresql://u:secret@db.example:5433/bai", PostgresDatabase, None),
        ("postgresql+psycopg://u@db/bai", PostgresDatabase, None),
    ],
)
def test_create_database_from_urls(url: str, kind: type, where: str | None) -> None:
    database = create_database(url)
    assert isinstance(database, kind)
    if isinstance(database, SqliteDatabase):
        assert (str(database.path) if database.path else None) == where
    else:
        assert "secret" not in database.url and "asyncpg" in database.url


@pytest.mark.parametrize("url", ["mysql://x/y", "not a url", "redis://localhost"])
def test_create_database_rejects_other_urls(url: str) -> None:
    with pytest.raises(InvalidValue):
        create_database(url)


def test_create_database_from_config() -> None:
    from bai.common.config import DbConfig, HostPort

    sqlite_db = create_database(DbConfig(type="sqlite"))
    assert isinstance(sqlite_db, SqliteDatabase) and sqlite_db.path is not None
    pg = create_database(
        DbConfig(type="postgresql", addr=HostPort("10.0.0.5", 6543), name="mgr", password="pw")
    )
    assert isinstance(pg, PostgresDatabase)
    assert pg.url == "postgresql+asyncpg://postgres:***@10.0.0.5:6543/mgr"


@pytest.mark.parametrize(
    "kwargs",
    [{"statement_timeout": 0}, {"acquire_timeout": -1}, {"pool_size": 0}, {"busy_timeout": 1}],
)
def test_sqlite_options_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidValue):
        SqliteDatabase(**kwargs)  # type: ignore[arg-type]


def test_retryable_errors() -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5  # type: ignore[attr-defined]
    assert is_retryable(sa.exc.OperationalError("BEGIN", {}, busy))

    class PgError(Exception):
        sqlstate = "40001"

    assert is_retryable(sa.exc.DBAPIError("UPDATE", {}, PgError()))
    PgError.sqlstate = "23505"
    assert not is_retryable(sa.exc.IntegrityError("INSERT", {}, PgError()))
    assert not is_retryable(ValueError("nope"))


@pytest.mark.parametrize("key", ["a", "a/b", "config/docker/registry/cr.backend.ai", "x" * 512])
def test_valid_config_keys(key: str) -> None:
    assert check_config_key(key) == key


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "a b", "x" * 513, "tab\tkey", 5, None])
def test_invalid_config_keys(key: object) -> None:
    with pytest.raises(InvalidValue):
        check_config_key(key)
