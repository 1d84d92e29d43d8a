"""What a local kernel gets: cgroup limits, its sandbox, its environment."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
import trio

from support.agent import (
    AS_ROOT,
    Harness,
    agent_config,
    alive,
    is_root,
    running_agent,
    session_pids,
)

needs_root = pytest.mark.skipif(not is_root(), reason="cgroups need root")


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_agent(agent_config(tmp_path)) as h:
        yield h


def _read(path: str, name: str) -> str:
    return Path(path, name).read_text().strip()


@needs_root
async def test_limits_are_set_in_the_kernels_cgroup(harness: Harness) -> None:
    kernel = await harness.create(
        resource_slots={"cpu": "1", "mem": "192m"}, resource_opts={"pids_max": 64}
    )
    record = harness.agent.kernels[kernel["kernel_id"]].record
    cgroup = record.cgroup
    assert cgroup, "the machine has cgroups, so the kernel must have one"
    if "cpu" in cgroup:  # v1
        assert _read(cgroup["cpu"], "cpu.cfs_quota_us") == "100000"
        assert _read(cgroup["cpu"], "cpu.cfs_period_us") == "100000"
        assert _read(cgroup["memory"], "memory.limit_in_bytes") == str(192 * 2**20)
        assert _read(cgroup["pids"], "pids.max") == "64"
        core = next(iter(kernel["attached_devices"]["cpu"]["cpu"]))
        assert _read(cgroup["cpuset"], "cpuset.cpus") == core
    else:  # v2
        assert _read(cgroup["unified"], "cpu.max") == "100000 100000"
        assert _read(cgroup["unified"], "memory.max") == str(192 * 2**20)
        assert _read(cgroup["unified"], "pids.max") == "64"


@needs_root
async def test_a_memory_hog_is_ended_with_an_out_of_memory_reason(harness: Harness) -> None:
    kid = (await harness.create(resource_slots={"mem": "160m"}))["kernel_id"]
    code = "blocks = []\nwhile True:\n    blocks.append(b'x' * 10_000_000)\n"
    run_id = "hog"
    result = await harness.run(kid, code, run_id=run_id, flush_timeout=10)
    while result["status"] == "continued":
        result = await harness.run(kid, "", mode="continue", run_id=run_id, flush_timeout=10)
    assert result["status"] == "finished"
    assert result["exitCode"] == 137
    stderr = "".join(t for k, t in result["console"] if k == "stderr")
    assert "out of memory" in stderr
    # The kernel survives its hog and runs code again.
    assert await harness.output(kid, "print('alive')") == "alive\n"


@needs_root
async def test_a_memory_bomb_of_many_processes_leaves_the_session_usable(
    harness: Harness,
) -> None:
    kid = (await harness.create(resource_slots={"mem": "160m"}))["kernel_id"]
    setup = (
        "import os\n"
        "def score(pid): return int(open(f'/proc/{pid}/oom_score_adj').read())\n"
        "kept = 'my variable'\n"
        "print(score('self'), score(os.getppid()), os.getppid())\n"
    )
    user_score, runner_score, runner = (await harness.output(kid, setup)).split()
    # User code is the OOM killer's first choice, the runner (its parent) the last.
    assert int(user_score) == 1000 > int(runner_score)
    bomb = (
        "import subprocess, sys\n"
        "hog = \"import time; b = b'x' * (30 << 20); time.sleep(2)\"\n"
        "procs = [subprocess.Popen([sys.executable, '-c', hog]) for _ in range(8)]\n"
        "print(*sorted(p.wait() for p in procs))\n"
    )
    run_id = "bomb"
    result = await harness.run(kid, bomb, run_id=run_id, flush_timeout=10)
    console = list(result["console"])
    while result["status"] == "continued":
        result = await harness.run(kid, "", mode="continue", run_id=run_id, flush_timeout=10)
        console += result["console"]
    assert (result["status"], result["exitCode"]) == ("finished", 0)
    codes = [int(c) for c in "".join(t for k, t in console if k == "stdout").split()]
    assert -9 in codes and 0 in codes  # some hogs were killed, not everything
    stderr = "".join(t for k, t in console if k == "stderr")
    assert "out of memory" in stderr and "OOM killer ended" in stderr
    # The same runner and Python process go on, variables and all.
    assert await harness.output(kid, "print(os.getppid(), kept)") == f"{runner} my variable\n"


@needs_root
async def test_the_pids_limit_stops_a_process_flood(harness: Harness) -> None:
    kid = (await harness.create(resource_opts={"pids_max": 48}))["kernel_id"]
    code = (
        "import subprocess\nprocs = []\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        procs.append(subprocess.Popen(['sleep', '30']))\n"
        "    print('no limit')\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
        "for p in procs:\n    p.kill(); p.wait()\n"
    )
    out = await harness.output(kid, code)
    assert out.startswith("refused")


async def test_environment_of_a_cluster_session(harness: Harness) -> None:
    session = str(uuid.uuid4())
    kernels = [
        {
            "kernel_id": str(uuid.uuid4()),
            "image": "python:3.11",
            "cluster_role": role,
            "cluster_idx": idx,
            "local_rank": rank,
            "environ": {"MY_SETTING": "on", "LANG": "ko_KR.UTF-8"},
            "resource_slots": {"cpu": "1"},
        }
        for rank, (role, idx) in enumerate([("main", 1), ("sub", 1)])
    ]
    results = await harness.client.call(
        "create_kernels", {"session_id": session, "kernels": kernels}, timeout=60
    )
    assert [r["status"] for r in results] == ["RUNNING", "RUNNING"]
    code = (
        "import os\nfor k in sorted(os.environ):\n"
        "    if k.startswith('BACKENDAI_') or k in ('HOME','USER','LANG','TERM','MY_SETTING',"
        "'OMP_NUM_THREADS','NPROC'):\n"
        "        print(f'{k}={os.environ[k]}')\n"
    )
    envs = []
    for result in results:
        out = await harness.output(result["kernel_id"], code)
        envs.append(dict(line.split("=", 1) for line in out.splitlines()))
    for rank, env in enumerate(envs):
        assert env["BACKENDAI_CLUSTER_SIZE"] == "2"
        assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1"
        assert env["BACKENDAI_CLUSTER_REPLICAS"] == "main:1,sub:1"
        assert env["BACKENDAI_CLUSTER_LOCAL_RANK"] == str(rank)
        assert env["BACKENDAI_CLUSTER_IDX"] == "1"
        assert env["BACKENDAI_SESSION_ID"] == session
        assert env["BACKENDAI_KERNEL_ID"] == kernels[rank]["kernel_id"]
        assert env["OMP_NUM_THREADS"] == env["NPROC"] == "1"
        assert env["USER"] == "work" and env["TERM"] == "xterm"
        assert env["LANG"] == "ko_KR.UTF-8"  # the user's own setting wins over the default
        assert env["MY_SETTING"] == "on"
    assert [e["BACKENDAI_CLUSTER_ROLE"] for e in envs] == ["main", "sub"]
    assert [e["BACKENDAI_CLUSTER_HOST"] for e in envs] == ["main1", "sub1"]


async def test_without_bwrap_and_cgroups_kernels_run_and_leave_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    config = agent_config(tmp_path, container=AS_ROOT)
    # An unusable cgroup parent is a host without cgroups as far as the agent can tell.
    async with running_agent(config, use_bwrap=False, cgroup_parent="../none") as h:
        kernel = await h.create(resource_slots={"mem": "128m"})
        kid = kernel["kernel_id"]
        assert kernel["isolation"] == "process"
        scratch = kernel["scratch_dir"]
        out = await h.output(kid, "import os; print(os.getcwd(), os.environ['HOME'])")
        assert out == f"{scratch} {scratch}\n"
        await h.output(kid, "import subprocess; subprocess.Popen(['sleep', '1000'])")
        pids = session_pids(kernel["pid"])
        assert len(pids) >= 3  # the runner, its Python, the sleep
        with trio.fail_after(10):
            while True:
                stat = (await h.client.call("get_stats", {"kernel_ids": [kid]}))[kid]
                if stat is not None:
                    break
                await trio.sleep(0.1)
        assert int(stat["mem"]["current"]) > 0 and "cpu_used" in stat
    assert not [pid for pid in pids if alive(pid)]
    assert "weaker isolation" in caplog.text
    assert "no cgroups" in caplog.text
