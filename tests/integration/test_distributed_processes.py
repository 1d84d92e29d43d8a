"""The distributed mode as an operator runs it: separate processes, PostgreSQL and Redis.

``bai manager fixture populate default`` seeds a fresh PostgreSQL database,
``bai manager config put`` writes the shared config before any daemon runs,
then ``bai manager --config manager.toml`` and two ``bai agent --config
agent.toml`` run as processes of their own, meeting only through PostgreSQL,
Redis Streams and ``ipc://`` RPC.  The test talks to them as a user would,
through the client SDK over HTTP, and looks at the host's processes to see
where kernels run and that none is left behind.

The harness is :mod:`support.distributed`.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from bai.client import APIClient, APIConfig, ComputeSession, get_config, graphql

from support.distributed import (
    START_TIMEOUT,
    Daemon,
    Deployment,
    deploy,
    kernel_processes,
    keys_of,
    output_of,
    private_redis_db,
    wait_for_agents,
    wait_until_serving,
)
from support.hostile import assert_contained, parse, probe_code


@pytest.fixture
async def deployment(pg_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with (
        private_redis_db(redis_url) as redis_db,
        deploy(pg_url, tmp_path, redis_db=redis_db) as found,
    ):
        yield found


def _admin_keys(populate_output: str) -> tuple[str, str]:
    found = re.search(
        r"^admin@lablup.com \(admin\): access key (\S+)  secret key (\S+)$",
        populate_output,
        re.MULTILINE,
    )
    assert found is not None, populate_output
    return found.group(1), found.group(2)


ENV_CODE = (
    "import json, os\n"
    "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('BACKENDAI_CLUSTER_')}))"
)
LOG_CODE = (
    "import os\n"
    "print('on', os.environ['BACKENDAI_CLUSTER_HOST'])\n"
    # The runner's own stderr is the kernel's log file, which /logs reads.
    "with open(f'/proc/{os.getppid()}/fd/2', 'a') as log:\n"
    "    print('into the kernel log', file=log)\n"
)


async def test_manager_and_two_agents_as_separate_processes(deployment: Deployment) -> None:
    d = deployment
    access_key, secret_key = _admin_keys(await d.cli("fixture", "populate", "default"))
    await d.cli("config", "put", "config/redis/addr", "10.0.0.5:6379")

    manager = d.daemon("manager", "manager", "--config", str(d.manager_toml))
    agents = [
        d.daemon(f"agent{n}", "agent", "--config", str(toml))
        for n, toml in enumerate(d.agent_tomls, 1)
    ]
    for daemon in (manager, *agents):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    assert manager.process is not None
    assert d.pid_file.read_text() == f"{manager.process.pid}\n"

    config = APIConfig(endpoint=d.endpoint, access_key=access_key, secret_key=secret_key)
    sessions = d.session_ids
    async with APIClient(config) as api:
        first, second = d.agent_ids
        await wait_for_agents(api, {first: "ALIVE", second: "ALIVE"}, d.daemons)
        # What the CLI wrote straight into the database, the running manager serves.
        assert await get_config(api, "config/redis/addr") == "10.0.0.5:6379"

        # A two-kernel multi-node session: each kernel takes a whole agent's CPUs,
        # so the scheduler has to put them on different agents.
        cpus = (await graphql(api, "query { agents { id cpu_slots } }"))["agents"][0]["cpu_slots"]
        cluster = await ComputeSession.create(
            api,
            "python",
            name="multi",
            cluster_size=2,
            cluster_mode="multi-node",
            resources={"cpu": int(cpus), "mem": "128m"},
            max_wait=30,
        )
        assert cluster.status == "RUNNING"
        assert cluster.id is not None
        sessions.append(str(cluster.id))
        kernels = (await cluster.info())["kernels"]
        placed = {k["clusterHostname"]: k["agent"] for k in kernels}
        assert placed.keys() == {"main1", "sub1"}
        assert set(placed.values()) == {first, second}
        env = json.loads(await output_of(cluster, ENV_CODE))
        assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1"
        assert env["BACKENDAI_CLUSTER_HOST"] == "main1"
        assert env["BACKENDAI_CLUSTER_ROLE"] == "main"
        assert env["BACKENDAI_CLUSTER_SIZE"] == "2"
        # The sub kernel is a live process of its own, on the other agent.
        running = kernel_processes(sessions).values()
        assert {p.get("BACKENDAI_CLUSTER_HOST") for p in running} == {"main1", "sub1"}
        assert {p.get("BACKENDAI_CLUSTER_ROLE") for p in running} == {"main", "sub"}
        await cluster.destroy()
        assert kernel_processes(sessions) == {}
        assert (await cluster.info())["status"] == "TERMINATED"

        # kill -9 an agent: the manager declares it LOST after the heartbeat timeout.
        assert agents[1].process is not None
        agents[1].process.kill()
        await agents[1].process.wait()
        await wait_for_agents(api, {first: "ALIVE", second: "LOST"}, [manager, agents[0]])

        # With the second agent lost, a one-kernel session lands on the first.
        single = await ComputeSession.create(
            api, "python", name="single", resources={"cpu": 1, "mem": "128m"}, max_wait=30
        )
        assert single.status == "RUNNING"
        assert single.id is not None
        sessions.append(str(single.id))
        assert [k["agent"] for k in (await single.info())["kernels"]] == [first]
        assert await output_of(single, LOG_CODE) == "on main1\n"
        assert "into the kernel log\n" in await single.logs()

        # The killed agent comes back under the same id and is ALIVE again.
        revived = d.daemon("agent2-restarted", "agent", "--config", str(d.agent_tomls[1]))
        await revived.start()
        await wait_for_agents(api, {first: "ALIVE", second: "ALIVE"}, [manager, revived])

        # Ctrl-C on the agent that runs the session: it kills the kernel and exits 0,
        # and the manager, still up, records why the session ended.
        assert kernel_processes(sessions) != {}
        assert await agents[0].stop(signal.SIGINT) == 0
        assert kernel_processes(sessions) == {}
        with trio.fail_after(START_TIMEOUT):
            while True:
                info = await single.info()
                if info["status"] == "TERMINATED":
                    break
                await trio.sleep(0.2)
        assert info["statusInfo"] == "agent-termination"
        await wait_for_agents(api, {first: "TERMINATED"}, [manager])

    codes: dict[str, int] = {}

    async def stop(daemon: Daemon, signum: signal.Signals) -> None:
        codes[daemon.name] = await daemon.stop(signum)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop, revived, signal.SIGTERM)
        nursery.start_soon(stop, manager, signal.SIGTERM)
    assert codes == {"agent2-restarted": 0, "manager": 0}
    assert not d.pid_file.exists()
    assert kernel_processes(sessions) == {}
    for daemon in d.daemons:
        assert "Traceback" not in daemon.output(), daemon.output()


async def test_a_users_session_reaches_nothing_of_the_deployment(
    deployment: Deployment, pg_url: str
) -> None:
    d = deployment
    await d.cli("fixture", "populate", "default")
    admin = await keys_of(pg_url, "admin@lablup.com")
    user = await keys_of(pg_url, "user@lablup.com")
    manager = d.daemon("manager", "manager", "--config", str(d.manager_toml))
    agent = d.daemon("agent1", "agent", "--config", str(d.agent_tomls[0]))
    for daemon in (manager, agent):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    port = int(d.endpoint.rsplit(":", 1)[1])
    admin_config = APIConfig(endpoint=d.endpoint, access_key=admin[0], secret_key=admin[1])
    user_config = APIConfig(endpoint=d.endpoint, access_key=user[0], secret_key=user[1])
    async with APIClient(admin_config) as api:
        await wait_for_agents(api, {d.agent_ids[0]: "ALIVE"}, d.daemons)
    ipc_base = str(d.tmp / "agent1" / "var")
    async with APIClient(user_config) as api:
        session = await ComputeSession.create(
            api, "python", name="hostile", resources={"cpu": 1, "mem": "128m"}, max_wait=30
        )
        assert session.id is not None
        d.session_ids.append(str(session.id))
        paths = [
            str(d.manager_toml),
            str(d.agent_tomls[0]),
            str(d.tmp / "manager.log"),
            *(str(p) for p in (d.tmp / "agent1" / "var" / "kernels").glob("*")),
        ]
        code = probe_code(paths, listed=[ipc_base], ports=[port])
        found = parse(await output_of(session, code))
        await session.destroy()
    assert_contained(found)
    assert found["listings"][ipc_base] == 2  # ENOENT: the agent's state is not there
    for daemon in (agent, manager):
        assert await daemon.stop(signal.SIGTERM) == 0


async def test_batch_sessions_outlive_a_kill_9_of_their_manager(
    deployment: Deployment, pg_url: str
) -> None:
    d = deployment
    await d.cli("fixture", "populate", "default")
    access_key, secret_key = await keys_of(pg_url, "admin@lablup.com")
    manager = d.daemon("manager", "manager", "--config", str(d.manager_toml))
    agent = d.daemon("agent1", "agent", "--config", str(d.agent_tomls[0]))
    for daemon in (manager, agent):
        await daemon.start()
    await wait_until_serving(d.endpoint, d.daemons)
    config = APIConfig(endpoint=d.endpoint, access_key=access_key, secret_key=secret_key)
    async with APIClient(config) as api:
        await wait_for_agents(api, {d.agent_ids[0]: "ALIVE"}, d.daemons)
        jobs: dict[int, ComputeSession] = {}
        for code in (0, 3):
            job = await ComputeSession.create(
                api,
                "python",
                name=f"job-{code}",
                type="batch",
                startup_command=f"sleep 3; exit {code}",
                resources={"cpu": 1, "mem": "128m"},
                max_wait=30,
            )
            assert job.id is not None
            d.session_ids.append(str(job.id))
            jobs[code] = job
        # The manager driving both jobs dies; a new one takes them over from the database.
        assert manager.process is not None
        manager.process.kill()
        await manager.process.wait()
        revived = d.daemon("manager-restarted", "manager", "--config", str(d.manager_toml))
        await revived.start()
        await wait_until_serving(d.endpoint, [revived, agent])
        ended: dict[int, dict[str, Any]] = {}
        with trio.fail_after(60):
            for code, job in jobs.items():
                while True:
                    info = await job.info()
                    if info["status"] == "TERMINATED":
                        break
                    await trio.sleep(0.5)
                ended[code] = info
    assert ended[0]["statusInfo"] == "task-finished"
    assert ended[3]["statusInfo"] == "task-failed"
    assert [k["exitCode"] for k in ended[3]["kernels"]] == [3]
    assert kernel_processes(d.session_ids) == {}
    for daemon in (agent, revived):
        assert await daemon.stop(signal.SIGTERM) == 0
