"""The manager's CPU spent on idle checks and live statistics, per 1,000 running sessions.

Builds a manager database (SQLite in a temporary folder, the default
fixture) holding ``--sessions`` RUNNING sessions, each with one RUNNING
kernel, under a policy whose idle timeout and lifetime are set and with the
utilization checker configured, so every checker does its work on every
session.  Then it runs, compressed in time, what one minute of a running
cluster asks of a manager:

* 4 idle-check passes (:class:`~bai.manager.idle.IdleChecker`, every 15 s):
  one read of every session, the app-proxy and live-statistics merge, the
  utilization sample and the verdicts;
* 12 rounds of ``agent_stats`` events (every 5 s) from ``--agents`` agents
  sharing the kernels, taken in by :class:`~bai.manager.livestats.LiveStats`;
* 60 activity flushes (:class:`~bai.manager.sessions.activity.SessionActivity`,
  every second) with a tenth of the sessions touched in each;

and measures the process's CPU time (``getrusage``: every thread, so the
SQLite worker thread counts) for that minute's work.  The same minute is
measured on an idle manager (no sessions) in the same run.  The share is
CPU seconds over the 60 s of wall time the work stands for, in percent of
one core, scaled to 1,000 sessions.

Prints ONE JSON line: ``sessions``, ``agents``, ``cpu_pct_per_1000_sessions``
(goal <= 2), ``idle_manager_cpu_pct``, ``busy_minute_cpu_s``,
``idle_minute_cpu_s``, ``idle_pass_ms`` (median of the busy passes),
``stats_round_ms`` (median).  Usage: ``python bench/lifecycle.py
[--sessions N] [--agents N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import trio
import trio.testing

from bai.common.events import AgentStatsReported, InProcEventBus
from bai.common.slots import ResourceSlot
from bai.common.types import AgentId, KernelStatus, SessionStatus, SessionTypes
from bai.manager.db import Database, create_database
from bai.manager.fixtures.default import default_fixture
from bai.manager.fixtures.populate import populate
from bai.manager.idle import IdleChecker
from bai.manager.livestats import LiveStats
from bai.manager.models import keypairs, migrate, users
from bai.manager.models.base import utcnow
from bai.manager.models.identity import groups, keypair_resource_policies
from bai.manager.models.session import kernels, sessions
from bai.manager.models.shared_config import put_config_many
from bai.manager.sessions.activity import SessionActivity


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _fill(db: Database, count: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Insert *count* RUNNING sessions with one RUNNING kernel each; (session, kernel) ids."""
    async with db.begin() as conn:
        user = (
            await conn.execute(
                sa.select(users.c.uuid, users.c.domain_name, keypairs.c.access_key)
                .select_from(users.join(keypairs, keypairs.c.user == users.c.uuid))
                .where(users.c.email == "user@lablup.com")
            )
        ).one()
        group = (
            await conn.execute(sa.select(groups.c.id).where(groups.c.name == "default"))
        ).scalar_one()
        await conn.execute(
            sa.update(keypair_resource_policies).values(
                idle_timeout=3600, max_session_lifetime=86400
            )
        )
        await put_config_many(
            conn,
            {
                "config/idle/checkers/utilization/resource-thresholds/cpu_util/average": 10,
                "config/idle/checkers/utilization/initial-grace-period": 0,
            },
        )
        now = utcnow()
        pairs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(count)]
        slots = ResourceSlot({"cpu": Decimal(1), "mem": Decimal(1024**3)})
        if pairs:
            await conn.execute(
                sa.insert(sessions),
                [
                    {
                        "id": sid,
                        "name": f"bench-{index}",
                        "session_type": SessionTypes.INTERACTIVE,
                        "domain_name": user.domain_name,
                        "group_id": group,
                        "user_uuid": user.uuid,
                        "access_key": user.access_key,
                        "scaling_group_name": "default",
                        "image": "python",
                        "status": SessionStatus.RUNNING,
                        "status_changed": now,
                        "created_at": now,
                        "occupying_slots": slots,
                        "requested_slots": slots,
                    }
                    for index, (sid, _) in enumerate(pairs)
                ],
            )
            await conn.execute(
                sa.insert(kernels),
                [
                    {
                        "id": kid,
                        "session_id": sid,
                        "image": "python",
                        "status": KernelStatus.RUNNING,
                        "status_changed": now,
                        "occupied_slots": slots,
                        "requested_slots": slots,
                    }
                    for sid, kid in pairs
                ],
            )
    return pairs


def _stat(index: int) -> dict[str, Any]:
    def measure(current: str, capacity: str | None, unit: str) -> dict[str, Any]:
        return {"current": current, "capacity": capacity, "unit_hint": unit, "pct": "50.00"}

    return {
        "collected_at": f"{time.time():.3f}",
        "cpu_used": measure(str(1000 * index), None, "msec"),
        "cpu_util": measure("50.00", "100.00", "percent"),
        "mem": {**measure(str(256 * 1024**2), str(1024**3), "bytes"), "stats.max": "300000000"},
        "io_read": measure("4096", None, "bytes"),
        "io_write": measure("8192", None, "bytes"),
        "pids": measure("3", None, "count"),
    }


async def _minute(
    db: Database, pairs: list[tuple[uuid.UUID, uuid.UUID]], agents: int
) -> tuple[float, list[float], list[float]]:
    """CPU seconds of one compressed minute, with each idle pass's and stats round's time."""
    bus = InProcEventBus()
    live = LiveStats(bus)
    activity = SessionActivity(db)

    async def keep(session_id: uuid.UUID, reason: str) -> None:
        raise AssertionError(f"the bench's sessions never run out ({session_id}: {reason})")

    checker = IdleChecker(db, keep, kernel_stats=live.kernels)
    shares = [pairs[index::agents] for index in range(agents)]
    passes: list[float] = []
    rounds: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        await nursery.start(live.serve)
        started = _cpu()
        for second in range(60):
            if second % 5 == 0:
                clock = time.perf_counter()
                for agent, share in enumerate(shares):
                    event = AgentStatsReported(
                        agent_id=AgentId(f"i-bench-{agent}"),
                        kernels={str(kid): _stat(i) for i, (_, kid) in enumerate(share)},
                    )
                    await bus.publish(event)
                # LiveStats takes in every event before the round counts as done.
                await trio.testing.wait_all_tasks_blocked()
                rounds.append(time.perf_counter() - clock)
            if second % 15 == 0:
                clock = time.perf_counter()
                assert await checker.check_once() == {}
                passes.append(time.perf_counter() - clock)
            for sid, _ in pairs[second % 10 :: 10]:
                activity.touch(sid)
            await activity.write()
        spent = _cpu() - started
        nursery.cancel_scope.cancel()
    return spent, passes, rounds


async def _run(count: int, agents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bai-bench-lifecycle-") as tmp:
        figures: dict[str, tuple[float, list[float], list[float]]] = {}
        for label, size in (("idle", 0), ("busy", count)):
            path = Path(tmp) / f"{label}.sqlite3"
            async with create_database(f"sqlite:///{path}") as db:
                await migrate.upgrade(db)
                await populate(db, default_fixture())
                pairs = await _fill(db, size)
                figures[label] = await _minute(db, pairs, agents)
    busy, passes, rounds = figures["busy"]
    idle = figures["idle"][0]
    per_session = max(busy - idle, 0.0) / count
    return {
        "sessions": count,
        "agents": agents,
        "cpu_pct_per_1000_sessions": round(per_session * 1000 / 60 * 100, 3),
        "idle_manager_cpu_pct": round(idle / 60 * 100, 3),
        "busy_minute_cpu_s": round(busy, 3),
        "idle_minute_cpu_s": round(idle, 3),
        "idle_pass_ms": round(statistics.median(passes) * 1000, 2),
        "stats_round_ms": round(statistics.median(rounds) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(trio.run(_run, args.sessions, args.agents)))


if __name__ == "__main__":
    main()
