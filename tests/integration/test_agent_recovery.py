"""After ``kill -9`` of the agent, the next agent finds its kernels again, or cleans them up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio

from bai.agent.cgroups import detect
from bai.common.config import AgentConfig, load_config
from bai.common.events import AgentKernelTerminated
from bai.common.rpc import RPCClient

from support.agent import (
    CATALOG,
    alive,
    cgroup_pids,
    entries,
    exists,
    is_root,
    read,
    running_agent,
)


def _write_config(tmp_path: Path) -> tuple[Path, str]:
    """An agent.toml for an agent process that the test kills and replaces."""
    tag = uuid.uuid4().hex[:8]
    rpc = f"ipc:///tmp/bai-t-{tag}.rpc"
    path = tmp_path / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "i-recovery-{tag}"
rpc-listen-addr = "{rpc}"
var-base-path = "{tmp_path}/var"
ipc-base-path = "/tmp/bai-t-{tag}"
heartbeat-interval = "1s"
image-catalog = "{CATALOG}"
allow-compute-plugins = []
[container]
scratch-root = "{tmp_path}/scratch"
[resource]
reserved-cpu = 0
reserved-mem = "512m"
[redis]
type = "inproc"
[logging]
drivers = ["console"]
"""
    )
    return path, rpc


async def _start_agent_process(config_path: Path, rpc: str, log: Path) -> trio.Process:
    argv = [sys.executable, "-c", "from bai.cli.main import cli; cli()", "agent", "--config"]
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            [*argv, str(config_path)], stdout=out, stderr=subprocess.STDOUT
        )
    async with RPCClient(rpc, timeout=1) as client:
        with trio.fail_after(30):
            while True:
                try:
                    await client.call("ping", "up")
                    return process
                except Exception:
                    assert process.poll() is None, read(log)
                    await trio.sleep(0.1)


@pytest.mark.skipif(not is_root(), reason="the recovery check looks at cgroups, which need root")
async def test_kill_9_of_the_agent_then_restart(tmp_path: Path) -> None:
    config_path, rpc = _write_config(tmp_path)
    config = load_config(AgentConfig, config_path).config
    process = await _start_agent_process(config_path, rpc, tmp_path / "agent.log")
    try:
        async with RPCClient(rpc, timeout=60) as client:
            session = str(uuid.uuid4())
            kept, lost = str(uuid.uuid4()), str(uuid.uuid4())
            created = await client.call(
                "create_kernels",
                {
                    "session_id": session,
                    "kernels": [
                        {
                            "kernel_id": kept,
                            "image": "python",
                            "resource_slots": {"cpu": "1"},
                            "cluster_role": "main",
                            "local_rank": 0,
                        },
                        {
                            "kernel_id": lost,
                            "image": "python",
                            "resource_slots": {"mem": "128m"},
                            "cluster_role": "sub",
                            "local_rank": 1,
                        },
                    ],
                },
            )
            assert [k["status"] for k in created] == ["RUNNING", "RUNNING"]
            result = await client.call(
                "execute", {"kernel_id": kept, "run_id": "r1", "mode": "query", "code": "x = 42"}
            )
            assert result["status"] == "finished"
            # A run still going when the agent dies.
            result = await client.call(
                "execute",
                {
                    "kernel_id": kept,
                    "run_id": "late",
                    "mode": "query",
                    "flush_timeout": 0.1,
                    "code": "import time; time.sleep(1.5); print('late')",
                },
            )
            assert result["status"] == "continued"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # A killed agent cannot remove its RPC socket file.
        await trio.Path(rpc.removeprefix("ipc://")).unlink(missing_ok=True)

    registry = config.agent.var_base_path / "kernels"
    lost_record = json.loads(read(registry / f"{lost}.json"))
    kept_record = json.loads(read(registry / f"{kept}.json"))
    # The second kernel dies while no agent watches it.
    lost_pids = cgroup_pids(lost_record["cgroup"])
    for pid in lost_pids:
        with contextlib.suppress(ProcessLookupError):  # a namespace's init takes the rest along
            os.kill(pid, signal.SIGKILL)
    # A cgroup that no registry entry names (an agent killed between mkdir and write).
    driver, problem = detect(f"bai.{config.agent.id}")
    assert driver is not None, problem
    stray = driver.create(str(uuid.uuid4()))
    join = 'for f; do echo $$ > "$f"; done; exec sleep 1000'
    stray_process = await trio.lowlevel.open_process(["sh", "-c", join, "sh", *stray.procs_files])
    await trio.sleep(0.2)
    stray_pids = stray.pids()
    assert stray_pids

    try:
        async with running_agent(config) as h:
            ended = await h.events.wait_for(
                lambda e: isinstance(e, AgentKernelTerminated) and str(e.kernel_id) == lost
            )
            assert isinstance(ended, AgentKernelTerminated) and ended.reason == "self-terminated"
            assert set(h.agent.kernels) == {kept}
            assert h.agent.allocator.allocated().to_json() == {"cpu": "1", "mem": "0"}
            assert not exists(*lost_record["cgroup"].values(), lost_record["scratch_dir"])
            assert not stray.exists()
            await stray_process.wait()
            assert not [pid for pid in stray_pids if alive(pid)]
            # The surviving kernel kept its namespace and its run in progress.
            late = await h.run(kept, "", mode="continue", run_id="late", flush_timeout=5)
            assert late["status"] == "finished"
            assert late["console"] == [["stdout", "late\n"]]
            assert await h.output(kept, "print(x)") == "42\n"
            kept_pids = cgroup_pids(kept_record["cgroup"])
            assert kept_pids
        assert not [pid for pid in kept_pids | lost_pids if alive(pid)]
        assert not exists(*kept_record["cgroup"].values())
        assert entries(registry) == []
    finally:
        # Whatever a failure above left behind must not outlive the test.
        for cgroup in driver.children().values():
            cgroup.kill()
            cgroup.remove()
        driver.remove_parent()
        stray_process.kill()
        await stray_process.wait()


@pytest.mark.skipif(not is_root(), reason="the recovery check looks at cgroups, which need root")
async def test_a_readopted_kernel_is_destroyed_whole(tmp_path: Path) -> None:
    config_path, rpc = _write_config(tmp_path)
    config = load_config(AgentConfig, config_path).config
    process = await _start_agent_process(config_path, rpc, tmp_path / "agent.log")
    kid = str(uuid.uuid4())
    try:
        async with RPCClient(rpc, timeout=60) as client:
            await client.call(
                "create_kernels",
                {"session_id": str(uuid.uuid4()), "kernels": [{"kernel_id": kid, "image": "sh"}]},
            )
            # A process of the kernel's that ignores SIGTERM and left its session.
            code = "setsid sh -c 'trap \"\" TERM; exec sleep 1000' >/dev/null 2>&1 &"
            result = await client.call(
                "execute", {"kernel_id": kid, "run_id": "r1", "mode": "query", "code": code}
            )
            assert result["status"] == "finished"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await trio.Path(rpc.removeprefix("ipc://")).unlink(missing_ok=True)

    record = json.loads(read(config.agent.var_base_path / "kernels" / f"{kid}.json"))
    pids = cgroup_pids(record["cgroup"])
    assert len(pids) >= 2
    async with running_agent(config) as h:
        assert set(h.agent.kernels) == {kid}
        with trio.fail_after(60):
            ended = await h.client.call("destroy_kernel", {"kernel_id": kid}, timeout=60)
        assert ended["reason"] == "user-requested"
        assert h.agent.kernels == {}
    assert not [pid for pid in pids if alive(pid)]
    assert not exists(*record["cgroup"].values(), record["scratch_dir"])
