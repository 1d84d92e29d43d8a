"""The database executors and migrations, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from bai.common.slots import ResourceSlot
from bai.manager.db import (
    Connection,
    Database,
    DatabaseClosed,
    DatabaseTimeout,
    DatabaseUnavailable,
    PostgresDatabase,
    SqliteDatabase,
    create_database,
    is_retryable,
)
from bai.manager.models import domains, metadata, migrate, resource_presets, shared_config

# ---------------------------------------------------------------------------
# Migrations
# ---------------------------------------------------------------------------


async def test_upgrade_creates_exactly_the_models_schema(empty_db_url: str) -> None:
    async with create_database(empty_db_url) as database:
        assert await migrate.current_revision(database) is None
        missing = {
            d[1].name for d in await migrate.schema_differences(database) if d[0] == "add_table"
        }
        assert missing == set(metadata.tables)
        await migrate.upgrade(database)
        assert await migrate.current_revision(database) == migrate.head_revision()
        assert await migrate.schema_differences(database) == []


async def test_upgrade_twice_is_a_no_op(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name="kept"))
    await migrate.upgrade(db)
    async with db.begin_readonly() as conn:
        assert await conn.scalar(sa.select(domains.c.name)) == "kept"
    assert await migrate.schema_differences(db) == []


async def test_downgrade_drops_every_table_and_upgrade_restores_them(empty_db_url: str) -> None:
    def table_names(sync_conn: sa.Connection) -> set[str]:
        return set(sa.inspect(sync_conn).get_table_names())

    async with create_database(empty_db_url) as db:
        await migrate.upgrade(db)
        await check_downgrade_and_upgrade(db, table_names)


async def check_downgrade_and_upgrade(db: Database, table_names: Any) -> None:
    await migrate.downgrade(db, "base")
    assert await migrate.current_revision(db) is None
    async with db.begin_readonly() as conn:
        assert await conn.run_sync(table_names) == {"alembic_version"}
    await migrate.upgrade(db)
    async with db.begin_readonly() as conn:
        assert await conn.run_sync(table_names) == set(metadata.tables) | {"alembic_version"}
    assert await migrate.schema_differences(db) == []


async def test_upgrade_by_url(empty_db_url: str) -> None:
    await migrate.upgrade(empty_db_url)
    assert await migrate.current_revision(empty_db_url) == migrate.head_revision()


async def test_enum_columns_reject_unknown_values(db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with db.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO keypair_resource_policies (name, created_at, "
                    "default_for_unspecified, total_resource_slots, max_session_lifetime, "
                    "max_concurrent_sessions, max_containers_per_session, idle_timeout, "
                    "allowed_vfolder_hosts, max_vfolder_count, max_vfolder_size) VALUES "
                    "('p', CURRENT_TIMESTAMP, 'SOMETIMES', '{}', 0, 1, 1, 0, '[]', 0, 0)"
                )
            )


async def test_foreign_keys_are_enforced(db: Database) -> None:
    from bai.manager.models import groups

    with pytest.raises(sa.exc.IntegrityError):
        async with db.begin() as conn:
            await conn.execute(sa.insert(groups).values(name="g", domain_name="no-such-domain"))


# ---------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------


async def count_domains(database: Database) -> int:
    async with database.begin_readonly() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(domains)))


async def test_commit_on_normal_exit(db: Database) -> None:
    async with db.begin() as conn:
        rows = await conn.execute(
            sa.insert(domains).values(name="d1").returning(domains.c.name, domains.c.is_active)
        )
        assert rows.one() == ("d1", True)
    assert await count_domains(db) == 1


async def test_rollback_on_exception(db: Database) -> None:
    with pytest.raises(KeyError):
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name="d1"))
            raise KeyError("boom")
    assert await count_domains(db) == 0


async def test_connection_is_unusable_after_its_transaction(db: Database) -> None:
    async with db.begin() as conn:
        pass
    with pytest.raises(DatabaseClosed):
        await conn.execute(sa.select(domains))


async def test_rows_are_fully_materialized(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains), [{"name": f"d{i}"} for i in range(5)])
    async with db.begin_readonly() as conn:
        rows = await conn.execute(sa.select(domains.c.name).order_by(domains.c.name))
    # Read after the transaction ended: nothing is fetched lazily.
    assert rows.scalars() == ["d0", "d1", "d2", "d3", "d4"]
    assert [m["name"] for m in rows.mappings()] == rows.scalars()
    assert rows.first() is not None and rows.first() == rows[0]
    with pytest.raises(sa.exc.MultipleResultsFound):
        rows.one()


async def test_update_reports_matched_rows(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains), [{"name": "a"}, {"name": "b"}, {"name": "c"}])
        result = await conn.execute(
            sa.update(domains).where(domains.c.name != "a").values(description="x")
        )
    assert result.rowcount == 2


async def test_readonly_transaction_rejects_writes(db: Database) -> None:
    with pytest.raises(sa.exc.DBAPIError):
        async with db.begin_readonly() as conn:
            await conn.execute(sa.insert(domains).values(name="nope"))
    assert await count_domains(db) == 0
    # The connection went back clean: a write transaction afterwards works.
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name="yes"))
    assert await count_domains(db) == 1


async def test_json_and_resource_slots_round_trip(db: Database) -> None:
    slots = ResourceSlot({"cpu": 2, "mem": 4 << 30, "cuda.shares": 0}) + ResourceSlot.parse(
        {"cuda.shares": "0.5"}
    )
    async with db.begin() as conn:
        await conn.execute(
            sa.insert(resource_presets).values(name="p", resource_slots=slots, shared_memory=None)
        )
        await conn.execute(
            sa.insert(shared_config).values(key="k", value={"nested": [1, "two", None, 3.5]})
        )
    async with db.begin_readonly() as conn:
        stored = await conn.scalar(sa.select(resource_presets.c.resource_slots))
        value = await conn.scalar(sa.select(shared_config.c.value))
        updated_at = await conn.scalar(sa.select(shared_config.c.updated_at))
    assert stored == slots
    assert stored["cuda.shares"] == slots["cuda.shares"]
    assert value == {"nested": [1, "two", None, 3.5]}
    assert updated_at.tzinfo is not None and updated_at.utcoffset().total_seconds() == 0


async def test_duplicate_key_is_an_integrity_error_and_rolls_back(db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name="first"))
            await conn.execute(sa.insert(domains).values(name="first"))
    assert await count_domains(db) == 0


async def test_concurrent_writers_all_commit(db: Database) -> None:
    async def writer(i: int) -> None:
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name=f"w{i}"))
            await trio.sleep(0.001)
            await conn.execute(
                sa.update(domains).where(domains.c.name == f"w{i}").values(description="done")
            )

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(writer, i)
    async with db.begin_readonly() as conn:
        described = await conn.scalar(
            sa.select(sa.func.count()).select_from(domains).where(domains.c.description == "done")
        )
    assert described == 20


async def test_reader_sees_a_snapshot_not_uncommitted_writes(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name="before"))
    writer_inserted = trio.Event()
    reader_done = trio.Event()

    async def writer() -> None:
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name="uncommitted"))
            writer_inserted.set()
            await reader_done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await writer_inserted.wait()
        async with db.begin_readonly() as conn:
            names = (await conn.execute(sa.select(domains.c.name))).scalars()
        reader_done.set()
    assert names == ["before"]
    assert await count_domains(db) == 2


# ---------------------------------------------------------------------------
# Cancellation and deadlines
# ---------------------------------------------------------------------------


def _slow_query_text() -> sa.TextClause:
    # A recursive CTE that counts for a very long time keeps SQLite busy.
    return sa.text(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
        "SELECT count(*) FROM c"
    )


def _slow_query(conn: Connection) -> sa.TextClause:
    if conn.dialect_name == "postgresql":
        return sa.text("SELECT pg_sleep(30)")
    return _slow_query_text()


async def test_cancelled_statement_rolls_back_and_connection_is_reusable(db: Database) -> None:
    started = trio.current_time()
    with trio.move_on_after(0.3) as scope:
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name="lost"))
            await conn.execute(_slow_query(conn))
    assert scope.cancelled_caught
    assert trio.current_time() - started < 4.0
    assert await count_domains(db) == 0
    for i in range(3):  # every pooled connection still works
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name=f"after{i}"))
    assert await count_domains(db) == 3


async def test_cancelled_between_statements_rolls_back(db: Database) -> None:
    with trio.CancelScope() as scope:
        async with db.begin() as conn:
            await conn.execute(sa.insert(domains).values(name="lost"))
            scope.cancel()
            await trio.sleep(1)
    assert scope.cancelled_caught
    assert await count_domains(db) == 0


async def test_statement_deadline_raises_timeout_and_rolls_back(db_url: str) -> None:
    async with create_database(db_url, statement_timeout=0.3) as database:
        with pytest.raises(DatabaseTimeout):
            async with database.begin() as conn:
                await conn.execute(sa.insert(domains).values(name="lost"))
                await conn.execute(_slow_query(conn))
        assert await count_domains(database) == 0


async def test_waiting_for_a_connection_has_a_deadline(db_url: str) -> None:
    async with create_database(db_url, pool_size=1, acquire_timeout=0.2) as database:
        async with database.begin_readonly():
            with pytest.raises(DatabaseTimeout):
                async with database.begin_readonly():
                    pass
        async with database.begin_readonly() as conn:
            assert await conn.scalar(sa.select(sa.literal(7))) == 7


# ---------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------


async def test_transaction_returns_the_function_result(db: Database) -> None:
    async def insert(conn: Connection) -> str:
        rows = await conn.execute(sa.insert(domains).values(name="r").returning(domains.c.name))
        return str(rows.scalar_one())

    assert await db.transaction(insert) == "r"
    assert await count_domains(db) == 1


async def test_transaction_does_not_retry_other_errors(db: Database) -> None:
    calls = 0

    async def duplicate(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute(sa.insert(domains), [{"name": "x"}, {"name": "x"}])

    with pytest.raises(sa.exc.IntegrityError) as info:
        await db.transaction(duplicate)
    assert calls == 1
    assert not is_retryable(info.value)


async def test_serialization_failure_is_retried(db: Database) -> None:
    if db.dialect_name != "postgresql":
        pytest.skip("SQLite serialises writers before they start; conflicts cannot happen")
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name="counter", description="0"))
    both_read = trio.Event()
    readers = 0
    attempts = 0

    async def increment(conn: Connection) -> None:
        nonlocal readers, attempts
        attempts += 1
        value = int(
            await conn.scalar(sa.select(domains.c.description).where(domains.c.name == "counter"))
        )
        readers += 1
        if readers >= 2:
            both_read.set()
        with trio.move_on_after(1):
            await both_read.wait()
        await conn.execute(
            sa.update(domains).where(domains.c.name == "counter").values(description=str(value + 1))
        )

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(lambda: db.transaction(increment, serializable=True, attempts=5))
    async with db.begin_readonly() as conn:
        final = await conn.scalar(
            sa.select(domains.c.description).where(domains.c.name == "counter")
        )
    assert final == "2"
    assert attempts >= 3  # one of the two conflicted and ran again


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


async def test_serve_opens_until_cancelled(db_url: str) -> None:
    database = create_database(db_url)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(database.serve)
        assert started is database and database.is_open
        assert await count_domains(database) == 0
        nursery.cancel_scope.cancel()
    assert not database.is_open
    with pytest.raises(DatabaseClosed):
        async with database.begin():
            pass


async def test_database_can_be_reopened(db_url: str) -> None:
    database = create_database(db_url)
    for _ in range(2):
        async with database:
            assert await count_domains(database) == 0


async def test_unreachable_postgres_is_reported(unused_tcp_port: int) -> None:
    database = PostgresDatabase(
        f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x", connect_timeout=2.0
    )
    with pytest.raises(DatabaseUnavailable):
        async with database:
            pass


async def test_sqlite_in_a_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable):
        async with SqliteDatabase(tmp_path / "missing" / "db.sqlite3"):
            pass


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_errors_in_the_body_reach_the_caller_unwrapped(db_url: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with create_database(db_url):
            raise KeyError("mine")


async def test_fetch_reads_in_one_call(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains), [{"name": "a"}, {"name": "b"}])
    rows = await db.fetch(sa.select(domains.c.name).order_by(domains.c.name))
    assert rows.scalars() == ["a", "b"]
    with pytest.raises(sa.exc.DBAPIError):
        await db.fetch(sa.insert(domains).values(name="c"))
    assert await count_domains(db) == 2


async def test_cancelled_fetch_leaves_the_database_usable(db: Database) -> None:
    started = trio.current_time()
    with trio.move_on_after(0.3) as scope:
        await db.fetch(
            sa.text("SELECT pg_sleep(30)")
            if db.dialect_name == "postgresql"
            else _slow_query_text()
        )
    assert scope.cancelled_caught
    assert trio.current_time() - started < 4.0
    assert (await db.fetch(sa.select(sa.literal(5)))).scalar() == 5
    async with db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name="after"))
    assert await count_domains(db) == 1
