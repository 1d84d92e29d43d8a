"""The one status-transition function, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from bai.common import events as ev
from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import (
    InvalidTransition,
    KernelStatus,
    SessionResult,
    SessionStatus,
    SessionTypes,
)
from bai.manager.db import Connection, Database
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import agents, kernels, keypairs, sessions, users
from bai.manager.models.resource import AgentStatus
from bai.manager.transitions import (
    KernelRowNotFound,
    SessionNotFound,
    initial_status,
    transition_kernel,
    transition_session,
)

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Owner:
    access_key: str
    user: uuid.UUID
    group: uuid.UUID


@pytest.fixture
async def owner(db: Database) -> Owner:
    await populate(db, default_fixture())
    async with db.begin() as conn:
        row = (
            await conn.execute(
                sa.select(keypairs.c.access_key, keypairs.c.user).where(
                    keypairs.c.user_id == "user@lablup.com"
                )
            )
        ).one()
        group = await conn.scalar(sa.text("SELECT id FROM groups WHERE name = 'default'"))
        await conn.execute(
            sa.insert(agents).values(
                id="agent-1",
                status=AgentStatus.ALIVE,
                scaling_group="default",
                addr="inproc://agent-1",
                available_slots=ResourceSlot({"cpu": 8}),
            )
        )
    return Owner(
        row.access_key, row.user, group if isinstance(group, uuid.UUID) else uuid.UUID(group)
    )


async def make_session(
    db: Database,
    owner: Owner,
    *,
    kernel_count: int = 1,
    session_type: SessionTypes = SessionTypes.INTERACTIVE,
    name: str = "s1",
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    session_id = uuid.uuid4()
    kernel_ids = [uuid.uuid4() for _ in range(kernel_count)]
    async with db.begin() as conn:
        await conn.execute(
            sa.insert(sessions).values(
                id=session_id,
                name=name,
                session_type=session_type,
                cluster_size=kernel_count,
                domain_name="default",
                group_id=owner.group,
                user_uuid=owner.user,
                access_key=owner.access_key,
                scaling_group_name="default",
                image="python:3.11",
                **initial_status(SessionStatus.PENDING, "enqueued", now=T0),
            )
        )
        for idx, kernel_id in enumerate(kernel_ids):
            await conn.execute(
                sa.insert(kernels).values(
                    id=kernel_id,
                    session_id=session_id,
                    cluster_role="main" if idx == 0 else "sub",
                    cluster_idx=1 if idx == 0 else idx,
                    cluster_hostname="main1" if idx == 0 else f"sub{idx}",
                    image="python:3.11",
                    requested_slots=ResourceSlot({"cpu": 1}),
                    **initial_status(KernelStatus.PENDING, "enqueued", now=T0),
                )
            )
    return session_id, kernel_ids


async def row_of(db: Database, table: sa.Table, row_id: uuid.UUID) -> Any:
    async with db.begin_readonly() as conn:
        return (await conn.execute(sa.select(table).where(table.c.id == row_id))).one()


def names(events: Sequence[ev.Event]) -> list[str]:
    return [event.name for event in events]


def reasons(events: Sequence[ev.Event]) -> set[str]:
    return {e.reason for e in events if isinstance(e, ev.SessionEvent | ev.KernelEvent)}


async def move_kernels(
    db: Database, kernel_ids: list[uuid.UUID], status: KernelStatus, **kw: Any
) -> list[ev.Event]:
    out: list[ev.Event] = []
    for kernel_id in kernel_ids:
        async with db.begin() as conn:
            out += (await transition_kernel(conn, kernel_id, status, "step", **kw)).events
    return out


# ---------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------


async def test_legal_session_transition_writes_everything(db: Database, owner: Owner) -> None:
    session_id, _ = await make_session(db, owner)
    now = T0 + timedelta(seconds=3)
    async with db.begin() as conn:
        result = await transition_session(
            conn, session_id, SessionStatus.SCHEDULED, "scheduled", now=now
        )
    assert (result.old_status, result.new_status) == (
        SessionStatus.PENDING,
        SessionStatus.SCHEDULED,
    )
    row = await row_of(db, sessions, session_id)
    assert row.status is SessionStatus.SCHEDULED
    assert row.status_info == "scheduled"
    assert row.status_changed == now
    assert row.status_history == [
        {"status": "PENDING", "timestamp": T0.isoformat(), "reason": "enqueued"},
        {"status": "SCHEDULED", "timestamp": now.isoformat(), "reason": "scheduled"},
    ]
    assert result.events == (
        ev.SessionScheduled(
            session_id=session_id,
            owner_access_key=owner.access_key,
            session_name="s1",
            reason="scheduled",
        ),
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (SessionStatus.PENDING, SessionStatus.RUNNING),
        (SessionStatus.PENDING, SessionStatus.PENDING),
        (SessionStatus.PENDING, SessionStatus.TERMINATED),
    ],
)
async def test_illegal_session_transition_writes_nothing(
    db: Database,
    owner: Owner,
    old: SessionStatus,
    new: SessionStatus,
) -> None:
    session_id, _ = await make_session(db, owner)
    before = await row_of(db, sessions, session_id)
    assert before.status is old
    async with db.begin() as conn:
        with pytest.raises(InvalidTransition) as info:
            await transition_session(conn, session_id, new, "nope")
    assert info.value.old is old and info.value.new is new
    assert await row_of(db, sessions, session_id) == before


@pytest.mark.parametrize("reason", ["", "Has Spaces", "UPPER", "trailing-", "x" * 65, None])
async def test_bad_reason_is_rejected_before_any_write(
    db: Database,
    owner: Owner,
    reason: Any,
) -> None:
    session_id, _ = await make_session(db, owner)
    before = await row_of(db, sessions, session_id)
    async with db.begin() as conn:
        with pytest.raises(InvalidValue, match="reason"):
            await transition_session(conn, session_id, SessionStatus.SCHEDULED, reason)
    assert await row_of(db, sessions, session_id) == before


async def test_unknown_rows_are_reported(db: Database, owner: Owner) -> None:
    async with db.begin() as conn:
        with pytest.raises(SessionNotFound):
            await transition_session(conn, uuid.uuid4(), SessionStatus.SCHEDULED, "x")
        with pytest.raises(KernelRowNotFound):
            await transition_kernel(conn, uuid.uuid4(), KernelStatus.SCHEDULED, "x")


async def test_status_columns_cannot_be_passed_as_values(db: Database, owner: Owner) -> None:
    session_id, kernel_ids = await make_session(db, owner)
    async with db.begin() as conn:
        with pytest.raises(InvalidValue, match="status_history"):
            await transition_session(
                conn, session_id, SessionStatus.SCHEDULED, "x", values={"status_history": []}
            )
        with pytest.raises(InvalidValue, match="no_such_column"):
            await transition_kernel(
                conn, kernel_ids[0], KernelStatus.SCHEDULED, "x", values={"no_such_column": 1}
            )


async def test_status_data_is_replaced_or_kept(db: Database, owner: Owner) -> None:
    session_id, _ = await make_session(db, owner)
    async with db.begin() as conn:
        await transition_session(
            conn,
            session_id,
            SessionStatus.SCHEDULED,
            "scheduled",
            status_data={"scheduler": {"retries": 2}},
        )
    assert (await row_of(db, sessions, session_id)).status_data == {"scheduler": {"retries": 2}}
    async with db.begin() as conn:
        await transition_session(conn, session_id, SessionStatus.PREPARING, "preparing")
    assert (await row_of(db, sessions, session_id)).status_data == {"scheduler": {"retries": 2}}
    async with db.begin() as conn:
        await transition_session(
            conn, session_id, SessionStatus.CREATING, "creating", status_data=None
        )
    assert (await row_of(db, sessions, session_id)).status_data is None


async def test_cancel_with_cascade_moves_the_kernels_too(db: Database, owner: Owner) -> None:
    session_id, kernel_ids = await make_session(db, owner, kernel_count=3)
    async with db.begin() as conn:
        result = await transition_session(
            conn, session_id, SessionStatus.CANCELLED, "user-requested", cascade_kernels=True
        )
    assert names(result.events) == ["session_cancelled"] + ["kernel_cancelled"] * 3
    assert reasons(result.events) == {"user-requested"}
    session = await row_of(db, sessions, session_id)
    assert session.status is SessionStatus.CANCELLED and session.terminated_at is not None
    for kernel_id in kernel_ids:
        kernel = await row_of(db, kernels, kernel_id)
        assert kernel.status is KernelStatus.CANCELLED
        assert kernel.status_info == "user-requested"
        assert kernel.terminated_at is not None
        assert [h["status"] for h in kernel.status_history] == ["PENDING", "CANCELLED"]


# ---------------------------------------------------------------------------
# Kernels and the derived session status
# ---------------------------------------------------------------------------


async def test_kernel_transition_moves_a_single_kernel_session(db: Database, owner: Owner) -> None:
    session_id, (kernel_id,) = await make_session(db, owner)
    slots = ResourceSlot({"cpu": 1, "mem": 1 << 30})
    async with db.begin() as conn:
        result = await transition_kernel(
            conn,
            kernel_id,
            KernelStatus.SCHEDULED,
            "scheduled",
            values={"agent": "agent-1", "occupied_slots": slots},
        )
    assert result.session_status is SessionStatus.SCHEDULED
    assert names(result.events) == ["session_scheduled"]
    kernel = await row_of(db, kernels, kernel_id)
    assert (kernel.agent, kernel.occupied_slots) == ("agent-1", slots)
    session = await row_of(db, sessions, session_id)
    assert session.status is SessionStatus.SCHEDULED
    assert session.occupying_slots == slots


async def test_full_lifecycle_events_in_order(db: Database, owner: Owner) -> None:
    session_id, (kernel_id,) = await make_session(db, owner)
    seen: list[str] = []
    for status in (
        KernelStatus.SCHEDULED,
        KernelStatus.PREPARING,
        KernelStatus.PULLING,
        KernelStatus.PREPARED,
        KernelStatus.CREATING,
        KernelStatus.RUNNING,
        KernelStatus.TERMINATING,
        KernelStatus.TERMINATED,
    ):
        seen += names(await move_kernels(db, [kernel_id], status, values={"agent": "agent-1"}))
    assert seen == [
        "session_scheduled",
        "kernel_preparing",
        "session_preparing",
        "kernel_pulling",
        "session_pulling",
        "kernel_creating",
        "session_creating",
        "kernel_started",
        "session_started",
        "kernel_terminating",
        "session_terminating",
        "kernel_terminated",
        "session_terminated",
    ]
    session = await row_of(db, sessions, session_id)
    assert [h["status"] for h in session.status_history] == [
        "PENDING",
        "SCHEDULED",
        "PREPARING",
        "PULLING",
        "PREPARED",
        "CREATING",
        "RUNNING",
        "TERMINATING",
        "TERMINATED",
    ]
    assert session.terminated_at is not None
    assert session.result is SessionResult.UNDEFINED  # interactive sessions have no result


async def test_session_waits_for_its_slowest_kernel(db: Database, owner: Owner) -> None:
    session_id, kernel_ids = await make_session(db, owner, kernel_count=3)
    events = await move_kernels(db, kernel_ids[:2], KernelStatus.SCHEDULED)
    assert names(events) == []
    assert (await row_of(db, sessions, session_id)).status is SessionStatus.PENDING
    events = await move_kernels(db, kernel_ids[2:], KernelStatus.SCHEDULED)
    assert names(events) == ["session_scheduled"]
    assert (await row_of(db, sessions, session_id)).status is SessionStatus.SCHEDULED


async def test_illegal_kernel_transition_writes_nothing(db: Database, owner: Owner) -> None:
    session_id, (kernel_id,) = await make_session(db, owner)
    before = await row_of(db, kernels, kernel_id)
    async with db.begin() as conn:
        with pytest.raises(InvalidTransition):
            await transition_kernel(conn, kernel_id, KernelStatus.RUNNING, "skip")
    assert await row_of(db, kernels, kernel_id) == before
    assert (await row_of(db, sessions, session_id)).status is SessionStatus.PENDING


async def destroy_flow(
    db: Database, owner: Owner, kernel_count: int
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    session_id, kernel_ids = await make_session(db, owner, kernel_count=kernel_count)
    for status in (KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.CREATING):
        await move_kernels(db, kernel_ids, status, values={"agent": "agent-1"})
    await move_kernels(db, kernel_ids, KernelStatus.RUNNING)
    assert (await row_of(db, sessions, session_id)).status is SessionStatus.RUNNING
    return session_id, kernel_ids


async def test_destroy_session_then_kernels_catch_up(db: Database, owner: Owner) -> None:
    session_id, kernel_ids = await destroy_flow(db, owner, 2)
    async with db.begin() as conn:
        result = await transition_session(
            conn, session_id, SessionStatus.TERMINATING, "user-requested", cascade_kernels=True
        )
    assert names(result.events) == [
        "session_terminating",
        "kernel_terminating",
        "kernel_terminating",
    ]
    events = await move_kernels(db, kernel_ids[:1], KernelStatus.TERMINATED, exit_code=0)
    assert names(events) == ["kernel_terminated"]
    assert (await row_of(db, sessions, session_id)).status is SessionStatus.TERMINATING
    events = await move_kernels(db, kernel_ids[1:], KernelStatus.TERMINATED, exit_code=0)
    assert names(events) == ["kernel_terminated", "session_terminated"]
    assert events[0] == ev.KernelTerminated(
        kernel_id=kernel_ids[1], session_id=session_id, reason="step", exit_code=0
    )
    session = await row_of(db, sessions, session_id)
    assert session.status is SessionStatus.TERMINATED
    assert session.occupying_slots == ResourceSlot()


async def test_explicit_session_status_is_not_undone_by_kernels(db: Database, owner: Owner) -> None:
    session_id, kernel_ids = await destroy_flow(db, owner, 2)
    async with db.begin() as conn:
        await transition_session(conn, session_id, SessionStatus.TERMINATING, "user-requested")
    # Derived from {TERMINATING, RUNNING} would be RUNNING_DEGRADED: not allowed from TERMINATING.
    events = await move_kernels(db, kernel_ids[:1], KernelStatus.TERMINATING)
    assert names(events) == ["kernel_terminating"]
    assert (await row_of(db, sessions, session_id)).status is SessionStatus.TERMINATING


async def test_a_lost_kernel_degrades_a_running_session(db: Database, owner: Owner) -> None:
    session_id, kernel_ids = await destroy_flow(db, owner, 2)
    async with db.begin() as conn:
        result = await transition_kernel(conn, kernel_ids[1], KernelStatus.TERMINATED, "agent-lost")
    assert result.session_status is SessionStatus.RUNNING_DEGRADED
    session = await row_of(db, sessions, session_id)
    assert session.status_info == "agent-lost"


@pytest.mark.parametrize(
    ("exit_code", "result", "event"),
    [
        (0, SessionResult.SUCCESS, "session_success"),
        (3, SessionResult.FAILURE, "session_failure"),
        (None, SessionResult.FAILURE, "session_failure"),
    ],
)
async def test_batch_result_follows_the_main_kernel_exit_code(
    db: Database,
    owner: Owner,
    exit_code: int | None,
    result: SessionResult,
    event: str,
) -> None:
    session_id, (kernel_id,) = await make_session(db, owner, session_type=SessionTypes.BATCH)
    for status in (
        KernelStatus.SCHEDULED,
        KernelStatus.PREPARING,
        KernelStatus.CREATING,
        KernelStatus.RUNNING,
    ):
        await move_kernels(db, [kernel_id], status)
    events = await move_kernels(db, [kernel_id], KernelStatus.TERMINATED, exit_code=exit_code)
    assert names(events) == ["kernel_terminated", event, "session_terminated"]
    terminated = events[-1]
    assert isinstance(terminated, ev.SessionTerminated)
    assert terminated.result == result.value and terminated.exit_code == exit_code
    assert (await row_of(db, sessions, session_id)).result is result


async def test_explicit_result_wins(db: Database, owner: Owner) -> None:
    session_id, _ = await make_session(db, owner, session_type=SessionTypes.BATCH)
    async with db.begin() as conn:
        result = await transition_session(
            conn, session_id, SessionStatus.ERROR, "failed-to-start", result=SessionResult.FAILURE
        )
    assert names(result.events) == ["session_failure", "session_cancelled"]
    assert (await row_of(db, sessions, session_id)).result is SessionResult.FAILURE


# ---------------------------------------------------------------------------
# ERROR: a failed creation is a cancellation, a failure while running is a failure
# ---------------------------------------------------------------------------


async def test_a_session_whose_creation_fails_is_reported_cancelled(
    db: Database, owner: Owner
) -> None:
    session_id, kernel_ids = await make_session(db, owner, kernel_count=2)
    for status in (KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.CREATING):
        await move_kernels(db, kernel_ids, status, values={"agent": "agent-1"})
    async with db.begin() as conn:
        result = await transition_session(
            conn, session_id, SessionStatus.ERROR, "bootstrap-failed", cascade_kernels=True
        )
    assert names(result.events) == ["session_cancelled", "kernel_cancelled", "kernel_cancelled"]
    cancelled = result.events[0]
    assert isinstance(cancelled, ev.SessionCancelled)
    assert (cancelled.session_id, cancelled.reason) == (session_id, "bootstrap-failed")
    assert {e.kernel_id for e in result.events if isinstance(e, ev.KernelEvent)} == set(kernel_ids)
    session = await row_of(db, sessions, session_id)
    assert (session.status, session.status_info) == (SessionStatus.ERROR, "bootstrap-failed")


@pytest.mark.parametrize("dead_at", [KernelStatus.PENDING, KernelStatus.CREATING])
async def test_a_kernel_that_dies_while_created_cancels_its_session(
    db: Database, owner: Owner, dead_at: KernelStatus
) -> None:
    _, (kernel_id,) = await make_session(db, owner)
    if dead_at is KernelStatus.CREATING:
        for status in (KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.CREATING):
            await move_kernels(db, [kernel_id], status, values={"agent": "agent-1"})
    async with db.begin() as conn:
        result = await transition_kernel(conn, kernel_id, KernelStatus.ERROR, "failed-to-start")
    assert names(result.events) == ["kernel_cancelled", "session_cancelled"]
    assert reasons(result.events) == {"failed-to-start"}
    assert result.session_status is SessionStatus.ERROR


@pytest.mark.parametrize("session_type", [SessionTypes.INTERACTIVE, SessionTypes.BATCH])
async def test_a_running_session_that_fails_reports_one_failure(
    db: Database, owner: Owner, session_type: SessionTypes
) -> None:
    session_id, kernel_ids = await make_session(db, owner, session_type=session_type)
    for status in (KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.CREATING):
        await move_kernels(db, kernel_ids, status, values={"agent": "agent-1"})
    await move_kernels(db, kernel_ids, KernelStatus.RUNNING)
    async with db.begin() as conn:
        failed = await transition_kernel(conn, kernel_ids[0], KernelStatus.ERROR, "agent-lost")
    # The kernel may still exist on its agent: its end is reported when it is destroyed.
    assert names(failed.events) == ["session_failure"]
    assert reasons(failed.events) == {"agent-lost"}
    expected = SessionResult.FAILURE if session_type is SessionTypes.BATCH else None
    session = await row_of(db, sessions, session_id)
    assert session.status is SessionStatus.ERROR
    assert session.result is (expected or SessionResult.UNDEFINED)
    async with db.begin() as conn:
        ending = await transition_session(
            conn, session_id, SessionStatus.TERMINATING, "user-requested", cascade_kernels=True
        )
    ended = await move_kernels(db, kernel_ids, KernelStatus.TERMINATED, exit_code=0)
    later = names(ending.events) + names(ended)
    assert later == [
        "session_terminating",
        "kernel_terminating",
        "kernel_terminated",
        "session_terminated",
    ]
    terminated = ended[-1]
    assert isinstance(terminated, ev.SessionTerminated)
    assert terminated.result == (expected or SessionResult.UNDEFINED).value


async def test_rolled_back_transition_leaves_no_trace(db: Database, owner: Owner) -> None:
    session_id, _ = await make_session(db, owner)
    before = await row_of(db, sessions, session_id)
    with pytest.raises(RuntimeError):
        async with db.begin() as conn:
            await transition_session(conn, session_id, SessionStatus.SCHEDULED, "scheduled")
            raise RuntimeError("caller failed after the transition")
    assert await row_of(db, sessions, session_id) == before


async def test_concurrent_kernel_transitions_start_the_session_once(
    db: Database,
    owner: Owner,
) -> None:
    session_id, kernel_ids = await make_session(db, owner, kernel_count=6)
    for status in (KernelStatus.SCHEDULED, KernelStatus.PREPARING, KernelStatus.CREATING):
        await move_kernels(db, kernel_ids, status)
    emitted: list[ev.Event] = []

    async def start(kernel_id: uuid.UUID) -> None:
        async def step(conn: Connection) -> tuple[ev.Event, ...]:
            return (
                await transition_kernel(conn, kernel_id, KernelStatus.RUNNING, "started")
            ).events

        emitted.extend(await db.transaction(step))

    async with trio.open_nursery() as nursery:
        for kernel_id in kernel_ids:
            nursery.start_soon(start, kernel_id)
    assert names(emitted).count("kernel_started") == 6
    assert names(emitted).count("session_started") == 1
    session = await row_of(db, sessions, session_id)
    assert session.status is SessionStatus.RUNNING
    assert [h["status"] for h in session.status_history].count("RUNNING") == 1


async def test_initial_status_rejects_bad_reasons() -> None:
    with pytest.raises(InvalidValue):
        initial_status(SessionStatus.PENDING, "Not Kebab")
    values = initial_status(KernelStatus.PENDING, "enqueued", now=T0)
    assert values["status_history"] == [
        {"status": "PENDING", "timestamp": T0.isoformat(), "reason": "enqueued"}
    ]


async def test_user_rows_are_untouched_by_transitions(db: Database, owner: Owner) -> None:
    async with db.begin_readonly() as conn:
        before = (await conn.execute(sa.select(users).order_by(users.c.email))).all()
    session_id, _ = await make_session(db, owner)
    async with db.begin() as conn:
        await transition_session(conn, session_id, SessionStatus.CANCELLED, "user-requested")
    async with db.begin_readonly() as conn:
        assert (await conn.execute(sa.select(users).order_by(users.c.email))).all() == before
