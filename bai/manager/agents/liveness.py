"""When an agent counts as gone, and what happens to its kernels then.

:func:`silent_too_long` is the judgement of silence (pure).
:func:`strand_kernels_of` and :func:`end_kernels_of` move a departed agent's
kernels on, and :func:`move_kernels` any rows of kernels, inside the caller's
transaction, through :mod:`bai.manager.transitions`; they return the events to
publish after the commit.  Guarantees: a manager that cannot read its bus
never blames an agent; a kernel another writer moved meanwhile is skipped,
never forced.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa

from bai.common.events import BusReadHealth, Event
from bai.common.types import (
    LIVE_KERNEL_STATUSES,
    STARTED_KERNEL_STATUSES,
    InvalidTransition,
    KernelStatus,
)
from bai.manager.db import Connection
from bai.manager.models.session import kernels
from bai.manager.transitions import KernelRowNotFound, transition_kernel

__all__ = [
    "SHUTDOWN_GRACE",
    "end_kernels_of",
    "move_kernels",
    "silent_too_long",
    "strand_kernels_of",
]

#: Seconds an agent that announced its shutdown has to report its kernels ended.
SHUTDOWN_GRACE: Final = 5.0
#: Kernel statuses that a LOST agent's kernels keep (degraded) while it may come back.
_WAITING_KERNEL_STATUSES: Final = STARTED_KERNEL_STATUSES - {KernelStatus.TERMINATING}


def silent_too_long(last_heard: float, health: BusReadHealth | None, timeout: float) -> bool:
    """Whether an agent last heard at *last_heard* was silent for *timeout* seconds of evidence.

    Only a stretch in which the manager read its bus without a failure
    counts, from the later of *last_heard* and the start of the current run of
    successful reads up to the latest of them (*health*, ``None`` while reads
    fail).  So a manager that cannot read its bus never blames the agents,
    and after it recovers every agent has a full *timeout* to be heard.
    """
    if health is None:
        return False
    return health.last - max(last_heard, health.since) > timeout


async def move_kernels(
    conn: Connection,
    rows: Iterable[Any],
    target_of: Callable[[KernelStatus], KernelStatus | None],
    reason: str,
    touched: set[uuid.UUID],
) -> list[Event]:
    """Move each kernel of *rows* (``id``, ``session_id``, ``status``) to ``target_of(status)``.

    A kernel whose target is ``None``, or that another writer moved meanwhile,
    is skipped.  Adds the ids of the sessions concerned to *touched*.
    """
    events: list[Event] = []
    for row in rows:
        target = target_of(KernelStatus(row.status))
        if target is None:
            continue
        try:
            result = await transition_kernel(conn, row.id, target, reason)
        except (InvalidTransition, KernelRowNotFound):
            continue
        touched.add(row.session_id)
        events.extend(result.events)
    return events


def _ended(status: KernelStatus) -> KernelStatus:
    return KernelStatus.TERMINATED if status is KernelStatus.TERMINATING else KernelStatus.ERROR


def _stranded(status: KernelStatus) -> KernelStatus | None:
    if status is KernelStatus.RUNNING_DEGRADED:
        return None
    if status in _WAITING_KERNEL_STATUSES:
        return KernelStatus.RUNNING_DEGRADED
    return _ended(status)


async def _live_kernels_of(conn: Connection, agent_ids: Sequence[str]) -> Iterable[Any]:
    return await conn.execute(
        sa.select(kernels.c.id, kernels.c.session_id, kernels.c.status)
        .where(
            kernels.c.agent.in_(list(agent_ids)),
            kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
        )
        .order_by(kernels.c.session_id, kernels.c.id)
    )


async def end_kernels_of(
    conn: Connection, agent_ids: Sequence[str], reason: str, touched: set[uuid.UUID]
) -> list[Event]:
    """Move every live kernel on *agent_ids* on (TERMINATING -> TERMINATED, others -> ERROR).

    Adds the ids of the sessions concerned to *touched*.
    """
    rows = await _live_kernels_of(conn, agent_ids)
    return await move_kernels(conn, rows, _ended, reason, touched)


async def strand_kernels_of(
    conn: Connection, agent_id: str, touched: set[uuid.UUID]
) -> list[Event]:
    """Move the kernels of an agent just declared LOST on (see :mod:`bai.manager.agents`).

    Started kernels become RUNNING_DEGRADED, to wait for their agent; the
    others end as :func:`end_kernels_of` ends them.  Adds the ids of the
    sessions concerned to *touched*.
    """
    rows = await _live_kernels_of(conn, [agent_id])
    return await move_kernels(conn, rows, _stranded, "agent-lost", touched)
