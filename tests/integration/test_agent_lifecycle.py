"""Kernel lifecycle through the agent's RPC: events, destroy, restart, failures, shutdown.

The agent publishes no public ``kernel_*`` event (the manager's transitions
do); it reports each kernel's end once, as ``agent_kernel_terminated``.
"""

from __future__ import annotations

import os
import signal
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from bai.common.events import (
    AgentHeartbeat,
    AgentKernelTerminated,
    AgentStarted,
    AgentTerminated,
    Event,
    InProcEventBus,
    KernelEvent,
)
from bai.common.rpc import RemoteError
from bai.common.types import KernelStatus

from support.agent import (
    Harness,
    agent_config,
    alive,
    cgroup_pids,
    entries,
    exists,
    fake_runner,
    running_agent,
)


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_agent(agent_config(tmp_path)) as h:
        yield h


async def test_events_heartbeats_and_destroy(harness: Harness) -> None:
    events = harness.events
    await events.wait_for(lambda e: isinstance(e, AgentStarted))
    beat = await events.wait_for(lambda e: isinstance(e, AgentHeartbeat))
    assert isinstance(beat, AgentHeartbeat)
    agent_info = beat.agent_info
    assert agent_info["id"] == harness.agent.agent_id
    assert agent_info["addr"] == harness.agent.rpc_urls[0]
    assert agent_info["scaling_group"] == "default" and agent_info["region"] == "local"
    assert agent_info["architecture"] in ("x86_64", "aarch64")
    assert set(agent_info["slot_types"]) == {"cpu", "mem"}
    assert agent_info["slot_types"]["mem"] == "bytes"
    assert int(agent_info["available_slots"]["cpu"]) >= 1
    assert set(agent_info["compute_plugins"]) == {"cpu", "mem"}
    assert any(image["name"] == "python:3.11" for image in agent_info["images"])

    kernel = await harness.create(resource_slots={"cpu": "1", "mem": "128m"})
    kid = kernel["kernel_id"]
    # Its start is the answer to create_kernels, not an event.
    assert events.of_kernel(kid) == []
    # A later heartbeat reports the occupied slots.
    await events.wait_for(
        lambda e: isinstance(e, AgentHeartbeat) and e.agent_info["occupied_slots"].get("cpu") == "1"
    )

    result = await harness.client.call("destroy_kernel", {"kernel_id": kid})
    assert result["reason"] == "user-requested"
    assert result["kernel_id"] == kid
    assert result["exit_code"] == 0  # the runner shut down cleanly on SIGTERM
    (ended,) = events.of_kernel(kid)
    assert isinstance(ended, AgentKernelTerminated)
    assert (ended.agent_id, ended.reason, ended.exit_code) == (
        harness.agent.agent_id,
        "user-requested",
        0,
    )
    assert not exists(kernel["scratch_dir"])
    assert harness.agent.allocator.allocated().get("cpu", 0) == 0
    # Destroying it again answers the same; an unknown kernel is an error.
    assert await harness.client.call("destroy_kernel", {"kernel_id": kid}) == result
    with pytest.raises(RemoteError) as info:
        await harness.client.call("destroy_kernel", {"kernel_id": str(uuid.uuid4())})
    assert info.value.remote_type == "KernelNotFound"
    assert len(events.of_kernel(kid)) == 1
    assert not any(isinstance(e, KernelEvent) for e in events.seen)


async def test_a_kernel_that_exits_by_itself_is_reported(harness: Harness) -> None:
    kernel = await harness.create()
    kid = kernel["kernel_id"]
    os.killpg(kernel["pid"], signal.SIGKILL)
    with trio.fail_after(5):
        ended = await harness.events.wait_for(_terminated(kid))
    assert isinstance(ended, AgentKernelTerminated)
    assert ended.reason == "self-terminated"
    assert ended.exit_code == 128 + signal.SIGKILL
    with pytest.raises(RemoteError) as info:
        await harness.run(kid, "print(1)")
    assert info.value.remote_type == "KernelNotFound"


async def test_restart_keeps_files_and_forgets_the_namespace(harness: Harness) -> None:
    kernel = await harness.create()
    kid = kernel["kernel_id"]
    await harness.output(kid, "x = 1; open('kept.txt', 'w').write('kept')")
    restarted = await harness.client.call("restart_kernel", {"kernel_id": kid}, timeout=60)
    assert restarted["status"] == "RUNNING"
    assert restarted["pid"] != kernel["pid"]
    assert "NameError" in await harness.output(kid, "print(x)")
    assert await harness.output(kid, "print(open('kept.txt').read())") == "kept\n"
    # A restart is not an end.
    assert harness.events.of_kernel(kid) == []


async def test_service_port_starts_and_answers_http(harness: Harness) -> None:
    kernel = await harness.create()
    kid = kernel["kernel_id"]
    services = {s["name"]: s for s in kernel["service_ports"]}
    # The image's own app, then the two every kernel has.
    assert list(services) == ["http", "sshd", "ttyd"]
    service = services["http"]
    port = service["host_ports"][0]
    assert service["name"] == "http" and service["protocol"] == "http"
    low, high = harness.agent.config.container.port_range
    assert low <= port <= high
    await harness.client.call(
        "upload_file", {"kernel_id": kid, "path": "public/index.html", "data": b"<p>hello</p>"}
    )
    started = await harness.client.call(
        "start_service", {"kernel_id": kid, "service": "http"}, timeout=60
    )
    assert started == {"status": "started", "error": None, "ports": [port]}

    def fetch() -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
            data: bytes = r.read()
            return data

    assert await trio.to_thread.run_sync(fetch) == b"<p>hello</p>"
    apps = {a["name"]: a for a in await harness.client.call("get_apps", {"kernel_id": kid})}
    assert apps["http"] == {
        "name": "http",
        "protocol": "http",
        "ports": [port],
        "url_template": "http://{host}:{port}/",
        "running": True,
    }
    assert set(apps) == {"http", "sshd", "ttyd"}
    assert not apps["sshd"]["running"] and not apps["ttyd"]["running"]
    again = await harness.client.call("start_service", {"kernel_id": kid, "service": "http"})
    assert again["status"] == "running"
    stopped = await harness.client.call("shutdown_service", {"kernel_id": kid, "service": "http"})
    assert stopped == {"status": "stopped"}
    missing = await harness.client.call("start_service", {"kernel_id": kid, "service": "nope"})
    assert missing["status"] == "failed" and "nope" in missing["error"]


async def test_requests_the_agent_cannot_satisfy_change_nothing(harness: Harness) -> None:
    call = harness.client.call
    session = str(uuid.uuid4())

    async def refused(args: object) -> str:
        with pytest.raises(RemoteError) as info:
            await call("create_kernels", args)
        return info.value.remote_type

    good = {"kernel_id": str(uuid.uuid4()), "image": "python"}
    assert await refused({"session_id": session}) == "InvalidRequest"
    assert await refused({"session_id": "nope", "kernels": [good]}) == "InvalidRequest"
    assert await refused({"session_id": session, "kernels": [{**good, "image": "ruby"}]}) == (
        "UnknownImage"
    )
    huge = {**good, "resource_slots": {"cpu": "10000"}}
    assert await refused({"session_id": session, "kernels": [huge]}) == "InsufficientResource"
    bad_slot = {**good, "resource_slots": {"gpu": "1"}}
    assert await refused({"session_id": session, "kernels": [bad_slot]}) == "InvalidRequest"
    # Two kernels, the second too big: the first is not left allocated either.
    pair = [{**good, "resource_slots": {"cpu": "1"}}, {**huge, "kernel_id": str(uuid.uuid4())}]
    assert await refused({"session_id": session, "kernels": pair}) == "InsufficientResource"
    assert harness.agent.kernels == {}
    assert harness.agent.allocator.allocated().get("cpu", 0) == 0
    assert await call("ping", {"hello": [1, 2]}) == {"hello": [1, 2]}
    with pytest.raises(RemoteError) as info:
        await call("no_such_method", {})
    assert info.value.remote_type == "UnknownMethod"


async def test_a_kernel_that_fails_to_start_ends_with_a_reason(tmp_path: Path) -> None:
    broken = fake_runner(
        tmp_path, "broken-python", "#!/bin/sh\necho 'runner cannot start' >&2\nexit 3\n"
    )
    slow = fake_runner(tmp_path, "slow-python", "#!/bin/sh\nexec sleep 60\n")
    for runner, expected in ((broken, "runner cannot start"), (slow, "did not start within")):
        config = agent_config(tmp_path / f"agent-{runner.name}")
        async with running_agent(config, runner_python=str(runner), start_timeout=1.5) as h:
            with pytest.raises(RemoteError) as info:
                await h.create(resource_slots={"cpu": "1"})
            assert info.value.remote_type == "KernelCreationFailed"
            assert expected in info.value.remote_message
            ((kid, reason),) = info.value.detail["kernels"].items()
            assert reason.startswith("failed-to-start")
            ended = await h.events.wait_for(_terminated(kid))
            assert isinstance(ended, AgentKernelTerminated) and ended.reason == "failed-to-start"
            assert h.agent.kernels == {}
            assert h.agent.allocator.allocated().get("cpu", 0) == 0
            assert entries(config.agent.var_base_path / "kernels") == []


async def test_shutdown_leaves_no_process_and_no_cgroup(tmp_path: Path) -> None:
    config = agent_config(tmp_path)
    pids: set[int] = set()
    cgroups: list[dict[str, str]] = []
    async with running_agent(config) as h:
        for _ in range(2):
            kernel = await h.create(resource_slots={"mem": "128m"})
            kid = kernel["kernel_id"]
            # Background processes, one of which leaves the kernel's session.
            await h.output(
                kid,
                "import subprocess\n"
                "subprocess.Popen(['sleep', '1000'])\n"
                "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n",
            )
            record = h.agent.kernels[kid].record
            pids.add(kernel["pid"])
            if record.cgroup:
                cgroups.append(record.cgroup)
                pids |= cgroup_pids(record.cgroup)
        assert len(pids) >= 2 * (4 if cgroups else 1)
    # The agent's nursery has exited: nothing of the kernels is left.
    assert not [pid for pid in pids if alive(pid)]
    for cgroup in cgroups:
        assert not exists(*cgroup.values())
    assert entries(config.agent.var_base_path / "kernels") == []
    assert entries(config.container.scratch_root) == []
    children = [
        p
        for p in os.listdir("/proc")
        if p.isdigit() and alive(int(p)) and _ppid(int(p)) == os.getpid()
    ]
    assert children == []


class _GoodbyeFails(InProcEventBus):
    """A bus that breaks in an unforeseen way when the agent announces its shutdown."""

    async def publish(self, event: Event) -> None:
        if isinstance(event, AgentTerminated):
            raise RuntimeError("the bus broke")
        await super().publish(event)


async def test_shutdown_cleans_up_even_when_the_goodbye_fails(tmp_path: Path) -> None:
    config = agent_config(tmp_path)
    async with running_agent(config, bus=_GoodbyeFails()) as h:
        kernel = await h.create(resource_slots={"mem": "128m"})
        cgroup = h.agent.kernels[kernel["kernel_id"]].record.cgroup
    # The agent stopped without raising, and left nothing behind: not the
    # kernel, nor the agent's own parent cgroup (the backend's shutdown ran).
    assert not alive(kernel["pid"])
    assert entries(config.container.scratch_root) == []
    if cgroup:
        assert not exists(*(str(Path(path).parent) for path in cgroup.values()))


def _terminated(kernel_id: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, AgentKernelTerminated) and str(e.kernel_id) == kernel_id


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return -1


async def test_sync_kernel_registry_and_stats(harness: Harness) -> None:
    kept = (await harness.create(resource_slots={"cpu": "1", "mem": "128m"}))["kernel_id"]
    stray = (await harness.create())["kernel_id"]
    ghost = str(uuid.uuid4())
    session = str(uuid.uuid4())
    session_of_kept = str(harness.agent.kernels[kept].record.session_id)
    report = await harness.client.call(
        "sync_kernel_registry",
        {"kernels": [[kept, session_of_kept], [ghost, session]], "terminate_unknown": True},
    )
    assert report == {"missing": [ghost], "unknown": [stray], "terminated": [stray]}
    gone = await harness.events.wait_for(_terminated(ghost))
    assert isinstance(gone, AgentKernelTerminated) and gone.reason == "already-terminated"
    stray_end = await harness.events.wait_for(_terminated(stray))
    assert isinstance(stray_end, AgentKernelTerminated)
    assert stray_end.reason == "not-found-in-manager"

    await harness.output(kept, "sum(range(3_000_000))")
    with trio.fail_after(10):
        while True:
            stats = await harness.client.call("get_stats", {"kernel_ids": [kept]})
            stat = stats[kept]
            if stat is not None and "cpu_util" in stat:
                break
            await trio.sleep(0.2)
    # The running kernels named, as create_kernels described them; others are left out.
    described = await harness.client.call("describe_kernels", {"kernel_ids": [kept, ghost]})
    assert [(d["kernel_id"], d["status"]) for d in described] == [(kept, "RUNNING")]
    assert described[0]["repl_in"] == harness.agent.kernels[kept].record.input_addr
    assert int(stat["cpu_used"]["current"]) > 0
    assert stat["cpu_util"]["capacity"] == "100.00"
    assert int(stat["mem"]["current"]) > 0
    assert stat["mem"]["capacity"] == str(128 * 2**20)
    assert {"io_read", "io_write"} <= set(stat)
    hwinfo = await harness.client.call("gather_hwinfo", None)
    assert set(hwinfo) == {"cpu", "mem"}
    assert hwinfo["cpu"]["status"] == "healthy"


async def test_a_service_definition_with_a_broken_template_changes_nothing(
    tmp_path: Path,
) -> None:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "broken.json").write_text(
        '{"prestart": [{"action": "write_file", "args": {"filename": "made.txt", '
        '"body": ["x"]}}], "command": ["{runtime_path}", "-m", "http.server", "{ports[3]}"]}'
    )
    catalog = tmp_path / "images.toml"
    catalog.write_text(
        f"""
[[image]]
name = "custom:1"
service-defs = "{defs}"
[image.labels]
"ai.backend.kernelspec" = "1"
"ai.backend.runtime-type" = "python"
"ai.backend.service-ports" = "broken:http:8081"
"""
    )
    async with running_agent(agent_config(tmp_path / "agent", catalog=catalog)) as h:
        kid = (await h.create("custom:1"))["kernel_id"]
        result = await h.client.call("start_service", {"kernel_id": kid, "service": "broken"})
        assert result["status"] == "failed"
        assert "ports[3]" in result["error"]
        apps = await h.client.call("get_apps", {"kernel_id": kid})
        assert [(a["name"], a["running"]) for a in apps] == [
            ("broken", False),
            ("sshd", False),
            ("ttyd", False),
        ]
        listing = await h.client.call("list_files", {"kernel_id": kid})
        assert "made.txt" not in listing["files"]


async def test_destroying_a_kernel_while_it_starts(tmp_path: Path) -> None:
    slow = fake_runner(tmp_path, "slow-python", "#!/bin/sh\nexec sleep 60\n")
    config = agent_config(tmp_path / "agent")
    async with running_agent(config, runner_python=str(slow), start_timeout=30) as h:
        kid = str(uuid.uuid4())
        failure: list[RemoteError] = []

        async def create() -> None:
            with pytest.raises(RemoteError) as info:
                await h.client.call(
                    "create_kernels",
                    {
                        "session_id": str(uuid.uuid4()),
                        "kernels": [{"kernel_id": kid, "image": "python"}],
                    },
                )
            failure.append(info.value)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(create)
                while True:
                    starting = h.agent.kernels.get(kid)
                    if starting is not None and starting.status is KernelStatus.CREATING:
                        break
                    await trio.sleep(0.02)
                result = await h.client.call("destroy_kernel", {"kernel_id": kid})
        assert result["reason"] == "user-requested"
        assert failure[0].remote_type == "KernelCreationFailed"
        assert failure[0].detail["kernels"][kid].startswith("user-requested")
        (ended,) = h.events.of_kernel(kid)
        assert isinstance(ended, AgentKernelTerminated) and ended.reason == "user-requested"
        assert h.agent.kernels == {}
