"""Resource usage derived from the kernels and sessions tables.

The database is the single source of truth for occupancy: an agent holds the
sum of ``occupied_slots`` over its kernels whose status is in
:data:`~bai.common.types.RESOURCE_OCCUPYING_STATUSES`, and a keypair's
concurrency is the number of its sessions in those statuses.  Call these
functions in the same transaction as the decision that depends on them (a
scheduling pass), never cache their results across transactions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from bai.common.slots import ResourceSlot
from bai.common.types import RESOURCE_OCCUPYING_STATUSES, AccessKey, AgentId
from bai.manager.db import Connection
from bai.manager.models.resource import agents
from bai.manager.models.session import kernels, sessions

__all__ = ["AgentOccupancy", "agent_occupancy", "keypair_concurrency"]

_OCCUPYING = sorted(RESOURCE_OCCUPYING_STATUSES)


@dataclass(frozen=True, slots=True)
class AgentOccupancy:
    """What an agent's resource-holding kernels hold, and how many there are."""

    occupied_slots: ResourceSlot
    container_count: int


_EMPTY = AgentOccupancy(ResourceSlot(), 0)


async def agent_occupancy(
    conn: Connection, agent_ids: Iterable[str] | None = None, *, lock: bool = False
) -> dict[AgentId, AgentOccupancy]:
    """Sum the occupied slots of each agent's kernels in resource-occupying statuses.

    Returns an entry for every agent in *agent_ids* (default: every agent in
    the ``agents`` table), zero for an agent without such kernels.  With
    *lock*, the agents' rows are locked first (``SELECT ... FOR UPDATE`` on
    PostgreSQL; SQLite writers are serialised already), so that two
    transactions placing kernels on the same agents run one after the other
    and neither can over-allocate.
    """
    ids = None if agent_ids is None else sorted(set(agent_ids))
    # The agents table is read only to list every agent or to lock the rows.
    if ids is None or lock:
        agent_query = sa.select(agents.c.id).order_by(agents.c.id)
        if ids is not None:
            agent_query = agent_query.where(agents.c.id.in_(ids))
        if lock:
            agent_query = agent_query.with_for_update()
        known = await conn.execute(agent_query)
        if ids is None:
            ids = list(known.scalars())
    if not ids:
        return {}
    totals: dict[AgentId, ResourceSlot] = {AgentId(agent_id): ResourceSlot() for agent_id in ids}
    counts: dict[AgentId, int] = dict.fromkeys(totals, 0)
    rows = await conn.execute(
        sa.select(kernels.c.agent, kernels.c.occupied_slots).where(
            kernels.c.agent.in_(list(totals)),
            kernels.c.status.in_(_OCCUPYING),
        )
    )
    for row in rows:
        agent_id = row.agent
        totals[agent_id] = totals[agent_id] + row.occupied_slots
        counts[agent_id] += 1
    return {
        agent_id: AgentOccupancy(totals[agent_id], counts[agent_id]) if counts[agent_id] else _EMPTY
        for agent_id in totals
    }


async def keypair_concurrency(
    conn: Connection, access_keys: Iterable[str] | None = None
) -> dict[AccessKey, int]:
    """Count each keypair's sessions in resource-occupying statuses.

    Returns an entry for every access key in *access_keys* (zero when it has
    none); without *access_keys*, only the keys that have such sessions.
    """
    query = (
        sa.select(sessions.c.access_key, sa.func.count().label("n"))
        .where(sessions.c.status.in_(_OCCUPYING))
        .group_by(sessions.c.access_key)
    )
    result: dict[AccessKey, int] = {}
    if access_keys is not None:
        keys = sorted(set(access_keys))
        result = {AccessKey(key): 0 for key in keys}
        if not keys:
            return result
        query = query.where(sessions.c.access_key.in_(keys))
    for row in await conn.execute(query):
        result[AccessKey(row.access_key)] = int(row.n)
    return result
