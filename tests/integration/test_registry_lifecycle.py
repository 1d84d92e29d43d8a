"""Sessions from enqueue to TERMINATED through the real manager services and a real agent.

Each test runs on SQLite and on the real PostgreSQL (``db_url``), with the
agent's local kernels over ``inproc://`` RPC and the in-process event bus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import trio

from bai.common.types import KernelStatus, SessionResult, SessionStatus, SessionTypes
from bai.manager import transitions
from bai.manager.models import kernels
from bai.manager.models.usage import agent_occupancy
from bai.manager.sessions.errors import (
    InvalidSessionRequest,
    SessionAlreadyExists,
    SessionBusy,
    SessionFileTooLarge,
    SessionNotFound,
    SessionNotRunning,
)

from support.registry import Cluster, running_cluster


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_cluster(db_url, tmp_path) as c:
        yield c


def _statuses(history: tuple[object, ...]) -> list[str]:
    return [entry["status"] for entry in history]  # type: ignore[index]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


async def test_a_session_runs_code_and_is_destroyed(cluster: Cluster) -> None:
    info = await cluster.start(name="first-session")
    assert info.status is SessionStatus.RUNNING
    assert _statuses(info.status_history) == [
        "PENDING",
        "SCHEDULED",
        "PREPARING",
        "CREATING",
        "RUNNING",
    ]
    main = info.main_kernel
    assert main.cluster_hostname == "main1" and main.agent == cluster.agents[0].agent_id
    assert main.occupied_slots.get("cpu") == 1
    assert info.status_data is not None
    assert info.status_data["scheduler"]["failed_predicates"] == []
    assert await cluster.output(info, "print(1)") == "1\n"
    # The same session is found by name, and a second one cannot take the name.
    assert (
        await cluster.registry.get_session("first-session", access_key=cluster.user_key)
    ).id == (info.id)
    with pytest.raises(SessionAlreadyExists):
        await cluster.enqueue(name="first-session")

    pid = int(main.container_id or 0)
    assert _alive(pid)
    result = await cluster.registry.destroy_session(info)
    ended = result.session
    assert ended.status is SessionStatus.TERMINATED
    assert ended.status_info == "user-requested"
    assert _statuses(ended.status_history)[-2:] == ["TERMINATING", "TERMINATED"]
    assert ended.main_kernel.status is KernelStatus.TERMINATED
    assert ended.terminated_at is not None
    assert not _alive(pid)
    assert cluster.agents[0].kernels == {}
    async with cluster.db.begin() as conn:
        used = await agent_occupancy(conn)
    assert all(not o.occupied_slots.get("cpu") for o in used.values())
    names = cluster.events.names_of(info.id)
    assert names[0] == "session_enqueued" and "session_started" in names
    assert names[-1] == "session_terminated"
    # Ended sessions are only found on request; the name is free again.
    with pytest.raises(SessionNotFound):
        await cluster.registry.get_session("first-session", access_key=cluster.user_key)
    found = await cluster.registry.get_session(
        "first-session", access_key=cluster.user_key, include_terminated=True
    )
    assert found.id == info.id
    with pytest.raises(SessionNotRunning):
        await cluster.registry.execute(ended, mode="query", code="print(2)")
    again = await cluster.enqueue(name="first-session")
    await cluster.registry.destroy_session(again)


async def test_batch_sessions_end_with_success_or_failure(cluster: Cluster) -> None:
    good = await cluster.enqueue(
        session_type=SessionTypes.BATCH, startup_command="echo batch-ok", name="batch-good"
    )
    bad = await cluster.enqueue(
        session_type=SessionTypes.BATCH, startup_command="echo oops >&2; exit 3", name="batch-bad"
    )
    good_end = await cluster.wait_status(good.id, SessionStatus.TERMINATED)
    bad_end = await cluster.wait_status(bad.id, SessionStatus.TERMINATED)
    assert good_end.result is SessionResult.SUCCESS
    assert good_end.status_info == "task-finished"
    assert good_end.main_kernel.exit_code == 0
    assert bad_end.result is SessionResult.FAILURE
    assert bad_end.status_info == "task-failed"
    assert bad_end.main_kernel.exit_code == 3
    await cluster.events.wait_for(
        lambda e: e.name == "session_terminated" and getattr(e, "session_id", None) == bad.id
    )
    good_names = cluster.events.names_of(good.id)
    assert good_names.index("session_success") < good_names.index("session_terminated")
    bad_names = cluster.events.names_of(bad.id)
    assert "session_failure" in bad_names and "session_success" not in bad_names
    for names in (good_names, bad_names):
        assert names.index("session_started") < names.index("execution_started")
        assert names.index("execution_finished") < names.index("session_terminating")
        assert "execution_timeout" not in names and "execution_cancelled" not in names
    # A job past its time limit fails with its own events.
    slow = await cluster.enqueue(
        session_type=SessionTypes.BATCH, startup_command="sleep 60", batch_timeout=1
    )
    slow_end = await cluster.wait_status(slow.id, SessionStatus.TERMINATED)
    assert (slow_end.result, slow_end.status_info) == (SessionResult.FAILURE, "batch-timeout")
    slow_names = cluster.events.names_of(slow.id)
    assert "execution_timeout" in slow_names and "execution_finished" not in slow_names
    # A batch session without a command is refused outright.
    with pytest.raises(InvalidSessionRequest) as info:
        await cluster.enqueue(session_type=SessionTypes.BATCH)
    assert info.value.field == "startup_command"


async def test_a_session_waits_until_resources_are_freed(cluster: Cluster) -> None:
    cpus = (await cluster.capacity(cluster.agents[0].agent_id))["cpu"]
    whole = {"cpu": str(cpus), "mem": "256m"}
    first = await cluster.start(resources=whole)
    assert first.status is SessionStatus.RUNNING
    second = await cluster.enqueue(resources=whole)
    await cluster.ctx.dispatcher.run_pass()
    waiting = await cluster.registry.get_session_by_id(second.id)
    assert waiting.status is SessionStatus.PENDING
    assert waiting.status_data is not None
    note = waiting.status_data["scheduler"]
    assert note["retries"] >= 1 and "cpu" in note["msg"]
    timed_out = await cluster.registry.wait_for_start(second.id, timeout=0.2)
    assert timed_out.status is SessionStatus.PENDING
    await cluster.registry.destroy_session(first)
    started = await cluster.registry.wait_for_start(second.id, timeout=30)
    assert started.status is SessionStatus.RUNNING
    await cluster.registry.destroy_session(started)


async def test_dependencies_wait_for_success_and_cancel_on_failure(cluster: Cluster) -> None:
    # This job ends successfully once the test drops a file into its folder.
    slow_ok = await cluster.enqueue(
        session_type=SessionTypes.BATCH,
        startup_command="while [ ! -f go ]; do sleep 0.05; done; echo done",
        name="dep-ok",
    )
    failing = await cluster.enqueue(
        session_type=SessionTypes.BATCH, startup_command="exit 1", name="dep-fails"
    )
    after_ok = await cluster.enqueue(
        session_type=SessionTypes.BATCH,
        startup_command="echo after",
        dependencies=["dep-ok"],
        name="after-ok",
    )
    after_fail = await cluster.enqueue(dependencies=[failing.id], name="after-fail")
    with pytest.raises(InvalidSessionRequest):
        await cluster.enqueue(dependencies=["no-such-session"])
    await cluster.ctx.dispatcher.run_pass()
    held = await cluster.registry.get_session_by_id(after_ok.id)
    assert held.status is SessionStatus.PENDING
    assert held.status_data is not None
    failed = [p["name"] for p in held.status_data["scheduler"]["failed_predicates"]]
    assert failed == ["dependencies"]
    cancelled = await cluster.wait_status(after_fail.id, SessionStatus.CANCELLED)
    assert cancelled.status_info == "dependency-failed"
    running = await cluster.wait_status(slow_ok.id, SessionStatus.RUNNING)
    await cluster.ctx.dispatcher.run_pass()
    assert (await cluster.registry.get_session_by_id(after_ok.id)).status is SessionStatus.PENDING
    await cluster.registry.upload_files(running, [("go", b"")])
    done = await cluster.wait_status(after_ok.id, SessionStatus.TERMINATED)
    assert done.result is SessionResult.SUCCESS
    first = await cluster.registry.get_session_by_id(slow_ok.id)
    assert first.status is SessionStatus.TERMINATED
    started = [e["timestamp"] for e in done.status_history if e["status"] == "SCHEDULED"]
    finished = [e["timestamp"] for e in first.status_history if e["status"] == "TERMINATED"]
    assert started[0] >= finished[0]


async def test_a_cluster_session_gets_its_cluster_environment(cluster: Cluster) -> None:
    info = await cluster.start(cluster_size=2, resources={"cpu": "1", "mem": "128m"})
    assert info.status is SessionStatus.RUNNING
    assert [k.cluster_hostname for k in info.kernels] == ["main1", "sub1"]
    assert {k.agent for k in info.kernels} == {cluster.agents[0].agent_id}
    code = (
        "import os; print(os.environ['BACKENDAI_CLUSTER_SIZE'], "
        "os.environ['BACKENDAI_CLUSTER_HOSTS'], os.environ['BACKENDAI_CLUSTER_HOST'])"
    )
    assert await cluster.output(info, code) == "2 main1,sub1 main1\n"
    assert info.requested_slots.get("cpu") == 2
    ended = (await cluster.registry.destroy_session(info)).session
    assert {k.status for k in ended.kernels} == {KernelStatus.TERMINATED}


async def test_restart_rename_files_logs_and_interrupt(cluster: Cluster) -> None:
    registry = cluster.registry
    info = await cluster.start(name="work-session")
    await cluster.output(info, "x = 41")
    restarted = await registry.restart_session(info)
    assert restarted.status is SessionStatus.RUNNING
    assert _statuses(restarted.status_history)[-2:] == ["RESTARTING", "RUNNING"]
    assert "NameError" in await cluster.output(restarted, "print(x)")

    renamed = await registry.rename_session(restarted, "renamed-session")
    assert renamed.name == "renamed-session"
    other = await cluster.enqueue(name="other-session")
    with pytest.raises(SessionAlreadyExists):
        await registry.rename_session(other, "renamed-session")
    with pytest.raises(InvalidSessionRequest):
        await registry.rename_session(other, "x")
    await registry.destroy_session(other, forced=True)

    written = await registry.upload_files(renamed, [("data/in.txt", b"hello")])
    assert written[0]["size"] == 5
    assert await registry.download_single(renamed, "data/in.txt") == b"hello"
    listing = await registry.list_files(renamed, "data")
    assert "in.txt" in listing["files"]
    with pytest.raises(InvalidSessionRequest):
        await registry.upload_files(renamed, [(f"f{i}", b"x") for i in range(21)])
    with pytest.raises(SessionFileTooLarge):
        await registry.upload_files(renamed, [("big", b"x" * (2 * 1024 * 1024))])
    with pytest.raises(InvalidSessionRequest):
        await registry.download_files(renamed, ["../../etc/passwd"])
    assert await registry.complete(renamed, "pri") is not None

    run_id = "long-run"
    first = await registry.execute(
        renamed,
        mode="query",
        code="import time\nfor i in range(100): time.sleep(0.1)",
        run_id=run_id,
        flush_timeout=0.3,
    )
    assert first["status"] == "continued"
    await registry.interrupt(renamed)
    with trio.fail_after(10):
        result = first
        while result["status"] == "continued":
            result = await registry.execute(renamed, mode="continue", run_id=run_id)
    assert result["status"] == "finished"
    assert "KeyboardInterrupt" in "".join(text for _, text in result["console"])
    asking = await registry.execute(
        renamed, mode="query", code="name = input('who? ')\nprint('hi', name)", run_id="ask"
    )
    while asking["status"] == "continued":
        asking = await registry.execute(renamed, mode="continue", run_id="ask")
    assert asking["status"] == "waiting-input"
    answered = await registry.execute(renamed, mode="input", code="bai", run_id="ask")
    while answered["status"] == "continued":
        answered = await registry.execute(renamed, mode="continue", run_id="ask")
    assert answered["status"] == "finished"
    assert "hi bai" in "".join(text for _, text in answered["console"])
    completed = await registry.execute(renamed, mode="complete", code="pri")
    assert completed["status"] == "finished" and isinstance(completed["completions"], list)
    with pytest.raises(InvalidSessionRequest):
        await registry.execute(renamed, mode="continue")
    with pytest.raises(InvalidSessionRequest):
        await registry.execute(renamed, mode="shout", code="")
    await cluster.output(renamed, "print('to the log')")
    assert isinstance(await registry.get_logs(renamed), str)
    await trio.sleep(1.2)
    counted = await registry.get_session_by_id(renamed.id)
    assert counted.num_queries >= 4
    await registry.destroy_session(renamed)


async def test_destroying_a_starting_session_needs_forced(cluster: Cluster) -> None:
    # With every agent excluded from scheduling, the session stays PENDING.
    await cluster.ctx.dispatcher.operation("exclude-agents", [cluster.agents[0].agent_id])
    info = await cluster.enqueue()
    await cluster.ctx.dispatcher.run_pass()
    cancelled = (await cluster.registry.destroy_session(info)).session
    assert cancelled.status is SessionStatus.CANCELLED
    await cluster.ctx.dispatcher.operation("include-agents", [cluster.agents[0].agent_id])
    running = await cluster.start()
    # A destroy in progress elsewhere: the session is TERMINATING.
    async with cluster.db.begin() as conn:
        await transitions.transition_session(
            conn, running.id, SessionStatus.TERMINATING, "user-requested", cascade_kernels=True
        )
    with pytest.raises(SessionBusy):
        await cluster.registry.destroy_session(running)
    forced = (await cluster.registry.destroy_session(running, forced=True)).session
    assert forced.status is SessionStatus.TERMINATED
    assert cluster.agents[0].kernels == {}


async def test_no_kernel_process_survives_the_shutdown(db_url: str, tmp_path: Path) -> None:
    pids: list[int] = []
    async with running_cluster(db_url, tmp_path) as cluster:
        for _ in range(2):
            info = await cluster.start()
            pids.append(int(info.main_kernel.container_id or 0))
        assert all(_alive(pid) for pid in pids)
        db = cluster.db
        rows = await db.fetch(sa.select(kernels.c.status))
        assert {row.status for row in rows} == {"RUNNING"}
    assert not any(_alive(pid) for pid in pids)
