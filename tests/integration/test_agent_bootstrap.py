"""A kernel's bootstrap script via the agent RPC: runs before ready, is logged, fails the kernel."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from bai.common.events import AgentKernelTerminated, KernelEvent
from bai.common.rpc import RemoteError

from support.agent import (
    AS_ROOT,
    Harness,
    agent_config,
    entries,
    exists,
    read,
    running_agent,
    session_pids,
)
from support.registry import eventually

SCRIPT = """\
echo "bootstrapped as $BACKENDAI_CLUSTER_ROLE in $PWD" > boot.txt
echo "$HOME" >> boot.txt
echo bootstrap-says-hello
echo bootstrap-complains >&2
"""


@pytest.fixture(params=[None, False], ids=["sandbox-if-any", "no-sandbox"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = agent_config(tmp_path, container="" if request.param is None else AS_ROOT)
    async with running_agent(config, use_bwrap=request.param) as h:
        yield h


async def test_the_script_runs_in_the_work_dir_before_the_kernel_is_ready(
    harness: Harness,
) -> None:
    kernel = await harness.create(bootstrap_script=SCRIPT)
    kid = kernel["kernel_id"]
    assert kernel["status"] == "RUNNING"
    # The kernel's code sees what the script made, in its own work dir and environment.
    work_dir = harness.agent.kernels[kid].record.work_dir
    out = await harness.output(kid, "print(open('boot.txt').read(), end='')")
    assert out == f"bootstrapped as main in {work_dir}\n{work_dir}\n"
    listing = await harness.client.call("list_files", {"kernel_id": kid})
    assert '"bootstrap.sh"' in listing["files"]
    assert read(Path(kernel["scratch_dir"]) / "bootstrap.sh") == SCRIPT
    # Its output is in the kernel's log.
    logs = (await harness.client.call("get_logs", {"kernel_id": kid}))["logs"]
    assert "bootstrap-says-hello" in logs and "bootstrap-complains" in logs


async def test_a_kernel_without_a_script_gets_none(harness: Harness) -> None:
    kernel = await harness.create()
    assert not exists(Path(kernel["scratch_dir"]) / "bootstrap.sh")
    assert not harness.agent.kernels[kernel["kernel_id"]].record.bootstrap


async def test_a_failing_script_fails_the_kernel_with_its_output(
    harness: Harness, tmp_path: Path
) -> None:
    script = "echo 'pip: no such package: nonsense' >&2\nexit 1\n"
    with pytest.raises(RemoteError) as info:
        await harness.create(resource_slots={"cpu": "1"}, bootstrap_script=script)
    error = info.value
    assert error.remote_type == "KernelCreationFailed"
    ((kid, message),) = error.detail["kernels"].items()
    assert error.detail["reasons"] == {kid: "bootstrap-failed"}
    assert message.startswith("bootstrap-failed: the bootstrap script failed")
    assert "pip: no such package: nonsense" in message
    assert "exited with code 1" in message
    (ended,) = harness.events.of_kernel(kid)
    assert isinstance(ended, AgentKernelTerminated) and ended.reason == "bootstrap-failed"
    assert not any(isinstance(e, KernelEvent) for e in harness.events.seen)
    assert harness.agent.kernels == {}
    assert harness.agent.allocator.allocated().get("cpu", 0) == 0
    assert entries(harness.agent.config.container.scratch_root) == []


async def test_a_script_past_its_time_limit_fails_the_kernel(tmp_path: Path) -> None:
    config = agent_config(tmp_path)
    async with running_agent(config, bootstrap_timeout=1.0) as h:
        with trio.fail_after(20), pytest.raises(RemoteError) as info:
            await h.create(bootstrap_script="sleep 60\n")
        ((kid, message),) = info.value.detail["kernels"].items()
        assert info.value.detail["reasons"][kid] == "bootstrap-failed"
        assert "did not finish within 1 s" in message
        assert h.agent.kernels == {}


async def test_a_script_in_a_cluster_runs_in_every_kernel(harness: Harness) -> None:
    session = str(uuid.uuid4())
    kernels = [
        {
            "kernel_id": str(uuid.uuid4()),
            "image": "python",
            "cluster_role": role,
            "cluster_idx": idx,
            "local_rank": rank,
            "bootstrap_script": 'echo "$BACKENDAI_CLUSTER_HOST" > host.txt\n',
        }
        for rank, (role, idx) in enumerate((("main", 1), ("sub", 1)))
    ]
    results = await harness.client.call(
        "create_kernels", {"session_id": session, "kernels": kernels}, timeout=60
    )
    hosts = [
        await harness.output(r["kernel_id"], "print(open('host.txt').read(), end='')")
        for r in results
    ]
    assert hosts == ["main1\n", "sub1\n"]


async def test_a_restart_runs_the_script_again(harness: Harness) -> None:
    kernel = await harness.create(bootstrap_script="echo run >> runs.txt\n")
    kid = kernel["kernel_id"]
    await harness.client.call("restart_kernel", {"kernel_id": kid}, timeout=60)
    assert await harness.output(kid, "print(open('runs.txt').read(), end='')") == "run\nrun\n"


async def test_a_kernel_destroyed_during_its_script_leaves_nothing(harness: Harness) -> None:
    kid = str(uuid.uuid4())
    failure: list[RemoteError] = []

    async def create() -> None:
        with pytest.raises(RemoteError) as info:
            await harness.client.call(
                "create_kernels",
                {
                    "session_id": str(uuid.uuid4()),
                    "kernels": [
                        {
                            "kernel_id": kid,
                            "image": "python",
                            "bootstrap_script": "echo started > started.txt\nexec sleep 60\n",
                        }
                    ],
                },
                timeout=60,
            )
        failure.append(info.value)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(create)
            await eventually(
                lambda: (
                    kid in harness.agent.kernels
                    and exists(Path(harness.agent.kernels[kid].record.scratch_dir, "started.txt"))
                )
            )
            top = harness.agent.kernels[kid].record.pid
            assert top is not None and len(session_pids(top)) >= 2  # the runner and the script
            result = await harness.client.call("destroy_kernel", {"kernel_id": kid})
    assert result["reason"] == "user-requested"
    assert failure[0].detail["reasons"][kid] == "user-requested"
    assert session_pids(top) == set()
    assert harness.agent.kernels == {}


async def test_an_oversized_or_malformed_script_is_refused(harness: Harness) -> None:
    for script, problem in (("x" * (1024 * 1024 + 1), "length <= 1048576"), (42, "str")):
        with pytest.raises(RemoteError) as info:
            await harness.create(bootstrap_script=script)
        assert info.value.remote_type == "InvalidRequest"
        assert "bootstrap_script" in info.value.remote_message
        assert problem in info.value.remote_message
    assert harness.agent.kernels == {}
