"""The manager's Prometheus metrics, read from the database at each scrape.

``GET /metrics`` on the manager's API answers (no credentials, aggregates
only: no user, key or session appears):

* ``bai_manager_sessions{status}``, ``bai_manager_kernels{status}``: rows by
  status (the final statuses count every session ever ended);
* ``bai_manager_pending_sessions{scaling_group}``: the queue per resource
  group;
* ``bai_manager_idle_terminations_total{reason}``: sessions idle reclaim
  ended, by reason (``idle-timeout``, ``idle-session-lifetime``,
  ``idle-utilization``);
* ``bai_manager_agents{status}``;
* ``bai_manager_agent_slot_capacity{agent,slot}`` and
  ``bai_manager_agent_slot_occupied{agent,slot}``: what each agent offers
  and what its kernels hold, as the scheduler sees it.

Every figure comes from one read transaction, so a scrape is consistent;
several managers answer the same figures.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from bai.common.types import SessionStatus
from bai.manager.db import Connection, Database
from bai.manager.idle.rules import Checker
from bai.manager.models.resource import agents
from bai.manager.models.session import kernels, sessions
from bai.manager.models.usage import agent_occupancy

__all__ = ["manager_families"]

_IDLE_REASONS = sorted(checker.reason for checker in Checker)


async def manager_families(db: Database) -> list[Metric]:
    """The manager's metric families now (module docs)."""
    async with db.begin_readonly() as conn:
        return await _families(conn)


async def _by(conn: Connection, column: sa.ColumnElement[object]) -> list[tuple[str, int]]:
    rows = await conn.execute(
        sa.select(column.label("key"), sa.func.count().label("n")).group_by(column).order_by(column)
    )
    return [(str(getattr(row.key, "value", row.key)), int(row.n)) for row in rows]


async def _families(conn: Connection) -> list[Metric]:
    by_status = GaugeMetricFamily("bai_manager_sessions", "Sessions by status.", labels=["status"])
    for status, count in await _by(conn, sessions.c.status):
        by_status.add_metric([status], count)
    kernel_status = GaugeMetricFamily(
        "bai_manager_kernels", "Kernels by status.", labels=["status"]
    )
    for status, count in await _by(conn, kernels.c.status):
        kernel_status.add_metric([status], count)
    pending = GaugeMetricFamily(
        "bai_manager_pending_sessions",
        "Sessions waiting per resource group.",
        labels=["scaling_group"],
    )
    rows = await conn.execute(
        sa.select(sessions.c.scaling_group_name, sa.func.count().label("n"))
        .where(sessions.c.status == SessionStatus.PENDING)
        .group_by(sessions.c.scaling_group_name)
        .order_by(sessions.c.scaling_group_name)
    )
    for row in rows:
        pending.add_metric([str(row.scaling_group_name)], int(row.n))
    idle = CounterMetricFamily(
        "bai_manager_idle_terminations", "Sessions idle reclaim ended.", labels=["reason"]
    )
    ended: dict[str, int] = {}
    for row in await conn.execute(
        sa.select(sessions.c.status_info, sa.func.count().label("n"))
        .where(sessions.c.status_info.in_(_IDLE_REASONS))
        .group_by(sessions.c.status_info)
    ):
        ended[str(row.status_info)] = int(row.n)
    for reason in _IDLE_REASONS:
        idle.add_metric([reason], int(ended.get(reason, 0)))
    agent_status = GaugeMetricFamily("bai_manager_agents", "Agents by status.", labels=["status"])
    for status, count in await _by(conn, agents.c.status):
        agent_status.add_metric([status], count)
    capacity = GaugeMetricFamily(
        "bai_manager_agent_slot_capacity",
        "What each agent offers per resource slot.",
        labels=["agent", "slot"],
    )
    occupied = GaugeMetricFamily(
        "bai_manager_agent_slot_occupied",
        "What each agent's kernels hold per resource slot.",
        labels=["agent", "slot"],
    )
    held = await agent_occupancy(conn)
    offered = await conn.execute(sa.select(agents.c.id, agents.c.available_slots))
    for row in offered:
        agent_id, slots = row.id, row.available_slots
        usage = held.get(agent_id)
        for slot in sorted(slots or {}):
            capacity.add_metric([agent_id, slot], float(slots[slot]))
            taken = usage.occupied_slots.get(slot, Decimal(0)) if usage else Decimal(0)
            occupied.add_metric([agent_id, slot], float(taken))
    return [by_status, kernel_status, pending, idle, agent_status, capacity, occupied]
