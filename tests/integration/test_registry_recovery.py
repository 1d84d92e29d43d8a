"""Batch jobs outlive the manager that drove them: another one resumes them from the database.

A crashed manager is imitated by stopping the cluster's manager service (its
batch drivers are cut off mid-call, their leases left in the database) and
starting a fresh one on the same database, bus and agents.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from bai.common.types import SessionResult, SessionStatus, SessionTypes
from bai.manager.db import create_database
from bai.manager.models import sessions
from bai.manager.models.base import utcnow
from bai.manager.models.usage import agent_occupancy
from bai.manager.server import build_services
from bai.manager.sessions.model import SessionInfo
from bai.manager.sessions.registry import SessionRegistry

from support.registry import Cluster, eventually, running_cluster

#: Seconds the dying manager's claims hold: the new one waits this long before resuming.
LEASE = 2.0


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    # Two agents of at least two cores each: the four jobs of a test run at once.
    async with running_cluster(db_url, tmp_path, agent_count=2) as c:
        c.registry.batch_lease = LEASE
        yield c


async def _driver(cluster: Cluster, session_id: uuid.UUID) -> str | None:
    rows = await cluster.db.fetch(
        sa.select(sessions.c.batch_driver).where(sessions.c.id == session_id)
    )
    driver: str | None = rows.scalar()
    return driver


async def test_batch_jobs_of_a_dead_manager_end_as_they_should(cluster: Cluster) -> None:
    def batch(command: str, **options: object) -> dict[str, object]:
        return {"session_type": SessionTypes.BATCH, "startup_command": command, **options}

    good = await cluster.enqueue(**batch("sleep 3"))
    bad = await cluster.enqueue(**batch("sleep 3; exit 3"))
    # Still running when the new manager resumes it, and past its deadline soon after.
    slow = await cluster.enqueue(**batch("sleep 60", batch_timeout=LEASE + 3))
    # Ends while no manager drives it: its agent keeps the exit code for the next driver.
    quick = await cluster.enqueue(**batch("sleep 1; exit 4"))
    jobs = [good, bad, slow, quick]
    for job in jobs:
        await cluster.events.wait_for(
            lambda e, sid=job.id: e.name == "execution_started" and e.session_id == sid
        )
    # Each was claimed before it started.
    dead_driver = await _driver(cluster, good.id)
    await cluster.restart_manager()
    ends = {job.id: await cluster.wait_status(job.id, SessionStatus.TERMINATED) for job in jobs}
    outcomes = {job_id: (info.result, info.status_info) for job_id, info in ends.items()}
    assert outcomes == {
        good.id: (SessionResult.SUCCESS, "task-finished"),
        bad.id: (SessionResult.FAILURE, "task-failed"),
        slow.id: (SessionResult.FAILURE, "batch-timeout"),
        quick.id: (SessionResult.FAILURE, "task-failed"),
    }
    # The job's exit code (the timed-out one's kernel has only its own, from being stopped).
    codes = {job.id: ends[job.id].main_kernel.exit_code for job in (good, bad, quick)}
    assert codes == {good.id: 0, bad.id: 3, quick.id: 4}
    for job in jobs:
        # Each job ran once: started by the first manager, finished by the second.
        names = cluster.events.names_of(job.id)
        assert names.count("execution_started") == 1, names
        assert names.count("session_started") == 1, names
        assert await _driver(cluster, job.id) not in (None, dead_driver)
    # The deadline was the first start's, not restarted with the new driver.
    slow_started = ends[slow.id].status_history
    running_at = next(e["timestamp"] for e in slow_started if e["status"] == "RUNNING")
    ended_at = next(e["timestamp"] for e in slow_started if e["status"] == "TERMINATING")
    assert _seconds_between(running_at, ended_at) < LEASE + 3 + 3
    await eventually(lambda: not any(agent.kernels for agent in cluster.agents))
    async with cluster.db.begin() as conn:
        used = await agent_occupancy(conn)
    assert all(not o.occupied_slots.get("cpu") for o in used.values())


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def test_one_manager_drives_a_batch_job_at_a_time(cluster: Cluster, db_url: str) -> None:
    job = await cluster.enqueue(session_type=SessionTypes.BATCH, startup_command="sleep 60")
    await cluster.events.wait_for(
        lambda e: e.name == "execution_started" and e.session_id == job.id
    )
    first = cluster.registry
    async with (
        create_database(db_url, statement_timeout=10.0, acquire_timeout=10.0) as db2,
        create_database(db_url, statement_timeout=10.0, acquire_timeout=10.0) as db3,
    ):
        others = []
        for db in (db2, db3):
            ctx = build_services(cluster.ctx.config, db, cluster.ctx.bus, dispatcher=False)
            others.append(ctx.registry)
        # The first manager holds the job while its lease runs.
        assert [await other._batches.claim(job.id) for other in others] == [None, None]
        # Past the lease (as if the first manager had stopped renewing it), one of two
        # managers claiming at once wins, and resumes the job rather than starting it.
        async with cluster.db.begin() as conn:
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == job.id)
                .values(batch_lease=utcnow() - timedelta(seconds=1))
            )
        claims = []

        async def claim(registry: SessionRegistry) -> None:
            claims.append(await registry._batches.claim(job.id))

        async with trio.open_nursery() as nursery:
            for other in others:
                nursery.start_soon(claim, other)
        won = [c for c in claims if c is not None]
        assert len(won) == 1 and won[0].started
        # The first manager finds out at its next renewal and stops driving.
        await eventually(lambda: job.id not in first._batches.driving, within=LEASE * 2)
    await cluster.registry.destroy_session(job, forced=True)


async def test_a_session_created_while_its_manager_died_is_found_running(
    cluster: Cluster,
) -> None:
    # The bootstrap keeps the kernel creating long enough for the manager to die meanwhile.
    info = await cluster.enqueue(bootstrap_script="sleep 2")
    job = await cluster.enqueue(
        bootstrap_script="sleep 2", session_type=SessionTypes.BATCH, startup_command="exit 5"
    )
    for session in (info, job):
        await cluster.wait_status(session.id, SessionStatus.CREATING)
    await cluster.restart_manager()
    # Well before the creation deadline (40 s here), the new manager finds the kernel up.
    running = await cluster.wait_status(info.id, SessionStatus.RUNNING, within=10)
    assert running.main_kernel.container_id is not None
    assert await cluster.output(running, "print(6 * 7)") == "42\n"
    assert cluster.events.names_of(info.id).count("session_started") == 1
    # A batch session found so runs its job, once.
    ended = await cluster.wait_status(job.id, SessionStatus.TERMINATED, within=10)
    assert (ended.result, ended.status_info) == (SessionResult.FAILURE, "task-failed")
    assert ended.main_kernel.exit_code == 5
    assert cluster.events.names_of(job.id).count("execution_started") == 1
    await cluster.registry.destroy_session(running)
    await eventually(lambda: not any(agent.kernels for agent in cluster.agents))


async def _job_of_a_dead_driver(cluster: Cluster, **claim: Any) -> SessionInfo:
    """A batch job whose claim a dead manager holds, expired, with *claim*'s other columns."""
    job = await cluster.enqueue(
        bootstrap_script="sleep 1", session_type=SessionTypes.BATCH, startup_command="exit 0"
    )
    async with cluster.db.begin() as conn:
        await conn.execute(
            sa.update(sessions)
            .where(sessions.c.id == job.id)
            .values(batch_driver="dead", batch_lease=utcnow() - timedelta(seconds=1), **claim)
        )
    return await cluster.wait_status(job.id, SessionStatus.TERMINATED)


async def test_a_job_its_dead_driver_never_sent_runs_once(cluster: Cluster) -> None:
    # As if a manager claimed the job and died before it recorded sending it.
    ended = await _job_of_a_dead_driver(cluster)
    assert (ended.result, ended.status_info) == (SessionResult.SUCCESS, "task-finished")
    assert ended.main_kernel.exit_code == 0
    assert cluster.events.names_of(ended.id).count("execution_started") == 1


async def test_a_sent_job_its_agent_never_got_fails_and_is_not_run(cluster: Cluster) -> None:
    # As if a manager recorded sending the job and died before the call reached the agent.
    ended = await _job_of_a_dead_driver(cluster, batch_sent=utcnow())
    assert (ended.result, ended.status_info) == (SessionResult.FAILURE, "task-failed")
    assert ended.main_kernel.exit_code == -1
    assert "execution_started" not in cluster.events.names_of(ended.id)
