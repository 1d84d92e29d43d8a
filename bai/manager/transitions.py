"""The one place where a session's or a kernel's status changes.

Every status write in the manager goes through :func:`transition_session` or
:func:`transition_kernel`, inside the caller's read-write transaction.  Each
call

1. locks the row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are
   serialised already), always the session before its kernels, so two
   transitions of one session never deadlock;
2. checks the change against the table in :mod:`bai.common.types`
   (:class:`~bai.common.types.InvalidTransition` otherwise, and nothing is
   written);
3. stamps ``status_changed``, sets ``status_info`` to the kebab-case reason,
   appends ``{"status", "timestamp", "reason"}`` to ``status_history``, sets
   ``terminated_at`` on entering TERMINATED or CANCELLED, and writes any
   extra column values the caller passes in the same ``UPDATE``;
4. for a kernel, derives its session's status from all its kernels
   (:func:`~bai.common.types.derive_session_status`) and moves the session
   there when the table allows it.  A session that was moved on explicitly
   (say to TERMINATING by a destroy request) keeps its status until its
   kernels catch up;
5. returns the events to publish, which the caller emits only after the
   transaction commits, so nobody hears of a change that was rolled back.

Whenever a session's status changes, its ``occupying_slots`` is recomputed
from its kernels in the same transaction.  A batch session that reaches
TERMINATED with an undefined result gets SUCCESS when its main kernel exited
with 0 and FAILURE otherwise, with a ``session_success`` or
``session_failure`` event before ``session_terminated``.

Events of a move to ERROR, which is not an end (the session or kernel waits
there until it is destroyed, ``session_terminated`` coming then):

* from a status before the first start (PENDING ... CREATING), the creation
  failed: ``session_cancelled`` / ``kernel_cancelled`` with the reason, as
  Backend.AI reports a session that failed to start, so that clients waiting
  for a session to start or end hear of it at once;
* from a started status (RUNNING, RESTARTING, RUNNING_DEGRADED, TERMINATING),
  the session failed while it ran: ``session_failure`` with the reason (a
  batch session's result becomes FAILURE in the same move, and that is the
  one ``session_failure``).  The kernel gets no event of its own; the agent
  may still hold it, and its ``kernel_terminated`` comes when it is destroyed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from bai.common import events as ev
from bai.common.errors import BaiError, InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import (
    KERNEL_TRANSITIONS,
    NOT_STARTED_STATUSES,
    RESOURCE_OCCUPYING_STATUSES,
    SESSION_TRANSITIONS,
    TERMINAL_STATUSES,
    AccessKey,
    AnyStatus,
    KernelId,
    KernelStatus,
    SessionId,
    SessionResult,
    SessionStatus,
    SessionTypes,
    check_transition,
    derive_session_status,
)
from bai.manager.db import Connection
from bai.manager.models.base import utcnow
from bai.manager.models.session import kernels, sessions

__all__ = [
    "KernelRowNotFound",
    "SessionNotFound",
    "TransitionResult",
    "check_reason",
    "initial_status",
    "transition_kernel",
    "transition_session",
]

_REASON = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_MAX_REASON = 64
#: Columns only this module writes; callers cannot pass them as extra values.
_STATUS_COLUMNS: Final = frozenset(
    {"id", "session_id", "status", "status_info", "status_history", "status_changed"}
)


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


#: Default of ``status_data``: leave the column as it is.
_KEEP: Final[Any] = _Keep()


class SessionNotFound(BaiError, LookupError):
    """No session has the given id."""


class KernelRowNotFound(BaiError, LookupError):
    """No kernel row has the given id."""


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """What a transition did.

    ``old_status``/``new_status`` are those of the row the call named;
    ``session_status`` is the session's status after the call (for a kernel
    transition, possibly changed by derivation); ``events`` are to be
    published, in order, after the transaction commits.
    """

    old_status: AnyStatus
    new_status: AnyStatus
    session_status: SessionStatus
    events: tuple[ev.Event, ...]


def check_reason(reason: object) -> str:
    """Return *reason* if it is a kebab-case word list (``user-requested``), else raise.

    Reasons are what ``status_info`` shows and what events carry, so they are
    short (at most 64 characters), lower-case, and machine-readable.
    """
    if not isinstance(reason, str) or len(reason) > _MAX_REASON or not _REASON.fullmatch(reason):
        raise InvalidValue(
            f"a status reason must be kebab-case, at most {_MAX_REASON} characters",
            value=reason,
            field="reason",
        )
    return reason


def _history_entry(status: AnyStatus, reason: str, now: datetime) -> dict[str, str]:
    return {"status": status.value, "timestamp": now.isoformat(), "reason": reason}


def initial_status(
    status: AnyStatus, reason: str, *, now: datetime | None = None
) -> dict[str, Any]:
    """Column values for the status of a new session or kernel row.

    Use them in the ``INSERT`` (``sessions.insert().values(..., **initial_status(
    SessionStatus.PENDING, "enqueued"))``) so that the history starts with the
    first status.
    """
    check_reason(reason)
    stamp = now or utcnow()
    return {
        "status": status,
        "status_info": reason,
        "status_changed": stamp,
        "status_history": [_history_entry(status, reason, stamp)],
    }


_SESSION_EVENTS: Final[dict[SessionStatus, type[ev.SessionEvent]]] = {
    SessionStatus.SCHEDULED: ev.SessionScheduled,
    SessionStatus.PREPARING: ev.SessionPreparing,
    SessionStatus.PULLING: ev.SessionPulling,
    SessionStatus.CREATING: ev.SessionCreating,
    SessionStatus.RUNNING: ev.SessionStarted,
    SessionStatus.TERMINATING: ev.SessionTerminating,
    SessionStatus.TERMINATED: ev.SessionTerminated,
    SessionStatus.CANCELLED: ev.SessionCancelled,
}

_KERNEL_EVENTS: Final[dict[KernelStatus, type[ev.KernelEvent]]] = {
    KernelStatus.PREPARING: ev.KernelPreparing,
    KernelStatus.PULLING: ev.KernelPulling,
    KernelStatus.CREATING: ev.KernelCreating,
    KernelStatus.RUNNING: ev.KernelStarted,
    KernelStatus.TERMINATING: ev.KernelTerminating,
    KernelStatus.TERMINATED: ev.KernelTerminated,
    KernelStatus.CANCELLED: ev.KernelCancelled,
}


def _check_extra(table: sa.Table, values: Mapping[str, Any] | None) -> dict[str, Any]:
    if not values:
        return {}
    for key in values:
        if key in _STATUS_COLUMNS or key not in table.c:
            raise InvalidValue(
                f"cannot be set along with a {table.name} status change", value=key, field=key
            )
    return dict(values)


@dataclass(slots=True)
class _Session:
    id: SessionId
    name: str
    access_key: AccessKey
    session_type: SessionTypes
    status: SessionStatus
    result: SessionResult
    history: list[Any]


@dataclass(slots=True)
class _Kernel:
    id: KernelId
    status: KernelStatus
    history: list[Any]
    cluster_role: str
    cluster_idx: int
    exit_code: int | None
    occupied_slots: ResourceSlot


_SESSION_COLUMNS = (
    sessions.c.id,
    sessions.c.name,
    sessions.c.access_key,
    sessions.c.session_type,
    sessions.c.status,
    sessions.c.result,
    sessions.c.status_history,
)
_KERNEL_COLUMNS = (
    kernels.c.id,
    kernels.c.status,
    kernels.c.status_history,
    kernels.c.cluster_role,
    kernels.c.cluster_idx,
    kernels.c.exit_code,
    kernels.c.occupied_slots,
)


async def _lock_session(conn: Connection, session_id: uuid.UUID) -> _Session:
    row = (
        await conn.execute(
            sa.select(*_SESSION_COLUMNS).where(sessions.c.id == session_id).with_for_update()
        )
    ).first()
    if row is None:
        raise SessionNotFound(f"no session has the id {session_id}")
    return _Session(
        id=SessionId(row.id),
        name=row.name,
        access_key=AccessKey(row.access_key),
        session_type=SessionTypes(row.session_type),
        status=SessionStatus(row.status),
        result=SessionResult(row.result),
        history=list(row.status_history or []),
    )


def _kernel_from_row(row: sa.Row[Any]) -> _Kernel:
    return _Kernel(
        id=KernelId(row.id),
        status=KernelStatus(row.status),
        history=list(row.status_history or []),
        cluster_role=row.cluster_role,
        cluster_idx=row.cluster_idx,
        exit_code=row.exit_code,
        occupied_slots=row.occupied_slots,
    )


async def _lock_kernels(conn: Connection, session_id: uuid.UUID) -> list[_Kernel]:
    rows = await conn.execute(
        sa.select(*_KERNEL_COLUMNS)
        .where(kernels.c.session_id == session_id)
        .order_by(kernels.c.id)
        .with_for_update()
    )
    return [_kernel_from_row(row) for row in rows]


def _status_values(
    old_history: list[Any],
    new: AnyStatus,
    reason: str,
    now: datetime,
    status_data: Any,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "status": new,
        "status_info": reason,
        "status_changed": now,
        "status_history": [*old_history, _history_entry(new, reason, now)],
    }
    if status_data is not _KEEP:
        values["status_data"] = status_data
    if new.value in TERMINAL_STATUSES:
        values["terminated_at"] = now
    return values


def _main_exit_code(kernel_list: list[_Kernel]) -> int | None:
    if not kernel_list:
        return None
    main = min(kernel_list, key=lambda k: (k.cluster_role != "main", k.cluster_idx))
    return main.exit_code


def _occupying(kernel_list: list[_Kernel]) -> ResourceSlot:
    return sum(
        (k.occupied_slots for k in kernel_list if k.status.value in RESOURCE_OCCUPYING_STATUSES),
        ResourceSlot(),
    )


async def _move_session(
    conn: Connection,
    session: _Session,
    new: SessionStatus,
    reason: str,
    now: datetime,
    kernel_list: list[_Kernel],
    *,
    status_data: Any = _KEEP,
    result: SessionResult | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[ev.Event]:
    """Write a checked session transition and return its events (see the module docstring)."""
    values = _status_values(session.history, new, reason, now, status_data)
    values["occupying_slots"] = _occupying(kernel_list)
    values.update(extra or {})
    exit_code = _main_exit_code(kernel_list)
    failed_while_running = (
        new is SessionStatus.ERROR and session.status.value not in NOT_STARTED_STATUSES
    )
    if (
        result is None
        and session.session_type is SessionTypes.BATCH
        and session.result is SessionResult.UNDEFINED
    ):
        if new is SessionStatus.TERMINATED:
            result = SessionResult.SUCCESS if exit_code == 0 else SessionResult.FAILURE
        elif failed_while_running:
            result = SessionResult.FAILURE
    events: list[ev.Event] = []
    if result is not None and result is not session.result:
        values["result"] = result
        if result is SessionResult.SUCCESS:
            events.append(_session_event(ev.SessionSuccess, session, reason, exit_code=exit_code))
        elif result is SessionResult.FAILURE:
            events.append(_session_event(ev.SessionFailure, session, reason, exit_code=exit_code))
    await conn.execute(sa.update(sessions).where(sessions.c.id == session.id).values(values))
    final_result = result if result is not None else session.result
    event_type = _SESSION_EVENTS.get(new)
    if new is SessionStatus.ERROR:
        if not failed_while_running:
            events.append(_session_event(ev.SessionCancelled, session, reason))
        elif not any(isinstance(event, ev.SessionFailure) for event in events):
            events.append(_session_event(ev.SessionFailure, session, reason, exit_code=exit_code))
    elif event_type is ev.SessionTerminated:
        events.append(
            _session_event(
                ev.SessionTerminated,
                session,
                reason,
                result=final_result.value,
                exit_code=exit_code,
            )
        )
    elif event_type is not None:
        events.append(_session_event(event_type, session, reason))
    session.status = new
    session.result = final_result
    return events


def _session_event(
    event_type: type[ev.SessionEvent], session: _Session, reason: str, **fields: Any
) -> ev.Event:
    return event_type(
        session_id=session.id,
        owner_access_key=session.access_key,
        session_name=session.name,
        reason=reason,
        **fields,
    )


def _kernel_event(
    kernel_id: KernelId,
    session_id: SessionId,
    old: KernelStatus,
    new: KernelStatus,
    reason: str,
    exit_code: Any,
) -> list[ev.Event]:
    event_type = _KERNEL_EVENTS.get(new)
    if new is KernelStatus.ERROR and old.value in NOT_STARTED_STATUSES:
        event_type = ev.KernelCancelled
    if event_type is None:
        return []
    if event_type is ev.KernelTerminated:
        return [
            ev.KernelTerminated(
                kernel_id=kernel_id, session_id=session_id, reason=reason, exit_code=exit_code
            )
        ]
    return [event_type(kernel_id=kernel_id, session_id=session_id, reason=reason)]


async def transition_session(
    conn: Connection,
    session_id: uuid.UUID,
    new_status: SessionStatus,
    reason: str,
    *,
    status_data: Any = _KEEP,
    result: SessionResult | None = None,
    values: Mapping[str, Any] | None = None,
    cascade_kernels: bool = False,
    now: datetime | None = None,
) -> TransitionResult:
    """Move a session to *new_status* for *reason* (kebab-case, becomes ``status_info``).

    *status_data* replaces the ``status_data`` JSON when given (``None``
    clears it).  *result* sets the batch result (with a ``session_success``
    or ``session_failure`` event when it changes).  *values* are other
    ``sessions`` columns to write in the same statement.  With
    *cascade_kernels*, each kernel of the session that may legally move to
    the same status moves too, with the same reason (the others are left
    alone), and its events follow the session's.

    Raises :class:`SessionNotFound`, :class:`~bai.common.types.InvalidTransition`
    (including for a change to the current status) or :class:`InvalidValue`
    (bad reason or column) before writing anything.
    """
    check_reason(reason)
    extra = _check_extra(sessions, values)
    stamp = now or utcnow()
    session = await _lock_session(conn, session_id)
    old = session.status
    check_transition(old, new_status)
    kernel_list = await _lock_kernels(conn, session_id)
    kernel_events: list[ev.Event] = []
    if cascade_kernels:
        target = KernelStatus(new_status.value)
        for kernel in kernel_list:
            if target not in KERNEL_TRANSITIONS[kernel.status]:
                continue
            await conn.execute(
                sa.update(kernels)
                .where(kernels.c.id == kernel.id)
                .values(_status_values(kernel.history, target, reason, stamp, _KEEP))
            )
            kernel_events += _kernel_event(
                kernel.id, session.id, kernel.status, target, reason, kernel.exit_code
            )
            kernel.status = target
    events = await _move_session(
        conn,
        session,
        new_status,
        reason,
        stamp,
        kernel_list,
        status_data=status_data,
        result=result,
        extra=extra,
    )
    return TransitionResult(old, new_status, new_status, tuple(events + kernel_events))


async def transition_kernel(
    conn: Connection,
    kernel_id: uuid.UUID,
    new_status: KernelStatus,
    reason: str,
    *,
    status_data: Any = _KEEP,
    exit_code: int | None = None,
    values: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> TransitionResult:
    """Move a kernel to *new_status* for *reason*, then let its session follow.

    *exit_code* records the kernel's exit status (kept when ``None``).
    *values* are other ``kernels`` columns to write in the same statement
    (say ``agent`` and ``occupied_slots`` when scheduling, ``container_id``
    and ports when it starts).  The session moves to the status derived from
    all its kernels when that differs from its own and the transition table
    allows it, with the same reason; its events come after the kernel's.

    Raises :class:`KernelRowNotFound`, :class:`~bai.common.types.InvalidTransition`
    or :class:`InvalidValue` before writing anything.
    """
    check_reason(reason)
    extra = _check_extra(kernels, values)
    stamp = now or utcnow()
    session_id = await conn.scalar(sa.select(kernels.c.session_id).where(kernels.c.id == kernel_id))
    if session_id is None:
        raise KernelRowNotFound(f"no kernel has the id {kernel_id}")
    session = await _lock_session(conn, session_id)
    kernel_list = await _lock_kernels(conn, session_id)
    kernel = next((k for k in kernel_list if k.id == kernel_id), None)
    if kernel is None:
        raise KernelRowNotFound(f"no kernel has the id {kernel_id}")
    old = kernel.status
    check_transition(old, new_status)
    update = _status_values(kernel.history, new_status, reason, stamp, status_data)
    if exit_code is not None:
        update["exit_code"] = exit_code
        kernel.exit_code = exit_code
    update.update(extra)
    await conn.execute(sa.update(kernels).where(kernels.c.id == kernel_id).values(update))
    kernel.status = new_status
    if "occupied_slots" in extra:
        slots = extra["occupied_slots"]
        kernel.occupied_slots = (
            slots if isinstance(slots, ResourceSlot) else ResourceSlot.from_json(slots)
        )
    events = _kernel_event(kernel.id, session.id, old, new_status, reason, kernel.exit_code)
    derived = derive_session_status(k.status for k in kernel_list)
    if derived is not session.status and derived in SESSION_TRANSITIONS[session.status]:
        events += await _move_session(conn, session, derived, reason, stamp, kernel_list)
    return TransitionResult(old, new_status, session.status, tuple(events))
