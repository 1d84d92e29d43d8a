"""Local kernels through the agent's RPC: start latency, execute round trip, start rate.

Runs a real agent in this process (in-process event bus, every kernel a
kernel runner in its own cgroup and, where bwrap works, its own namespaces)
and calls it over ``ipc://`` RPC as a manager would.  Prints ONE JSON line:

* ``start_ms_p50``/``start_ms_p99``: ``create_kernels`` for one kernel, from
  the call to its answer (the runner answered ``status``), kernels started
  one after another;
* ``exec_ms_p50``/``exec_ms_p99``: ``execute`` of ``print(1)`` in query mode
  on a warm kernel, call to answer;
* ``kernels_per_s``: ``--burst`` (50) kernels requested at once (concurrent
  ``create_kernels`` calls), divided by the time until the last one runs;
* ``isolation``: what the kernels got on this host.

Usage: ``python bench/kernel.py [--starts N] [--runs N] [--burst N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

from bai.agent.server import AgentService
from bai.common.config import AgentConfig, parse_config
from bai.common.events import InProcEventBus
from bai.common.rpc import RPCClient

CATALOG = Path(__file__).resolve().parents[1] / "configs" / "images.toml"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _config(tmp: str, tag: str) -> AgentConfig:
    return parse_config(
        AgentConfig,
        f"""
[agent]
id = "i-bench-{tag}"
var-base-path = "{tmp}/var"
ipc-base-path = "/tmp/bai-b-{tag}"
image-catalog = "{CATALOG}"
allow-compute-plugins = []
[container]
scratch-root = "{tmp}/scratch"
[resource]
reserved-cpu = 0
reserved-mem = "1g"
""",
    )


async def _create(client: RPCClient) -> str:
    kid = str(uuid.uuid4())
    await client.call(
        "create_kernels",
        {
            "session_id": str(uuid.uuid4()),
            "kernels": [{"kernel_id": kid, "image": "python", "resource_slots": {"mem": "64m"}}],
        },
        timeout=120,
    )
    return kid


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-agent-")
    tag = uuid.uuid4().hex[:8]
    config = _config(tmp, tag)
    rpc = f"ipc:///tmp/bai-b-{tag}.rpc"
    agent = AgentService(config, event_bus=InProcEventBus(), rpc_listen_addr=rpc)
    report: dict[str, Any] = {"bench": "kernel"}
    try:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(agent.serve)
            report["isolation"] = agent.backend.describe()
            async with RPCClient(urls[0], timeout=120) as client:
                await _create(client)  # warm the page cache and bytecode
                starts = []
                for _ in range(args.starts):
                    began = time.perf_counter()
                    kid = await _create(client)
                    starts.append(time.perf_counter() - began)
                    await client.call("destroy_kernel", {"kernel_id": kid})
                report["starts"] = args.starts
                report["start_ms_p50"] = _ms(statistics.median(starts))
                report["start_ms_p99"] = _ms(_p(starts, 0.99))

                kid = await _create(client)
                runs = []
                for i in range(args.runs + 20):
                    began = time.perf_counter()
                    result = await client.call(
                        "execute",
                        {"kernel_id": kid, "run_id": f"r{i}", "mode": "query", "code": "print(1)"},
                    )
                    elapsed = time.perf_counter() - began
                    assert result["console"] == [["stdout", "1\n"]], result
                    if i >= 20:
                        runs.append(elapsed)
                report["runs"] = args.runs
                report["exec_ms_p50"] = _ms(statistics.median(runs))
                report["exec_ms_p99"] = _ms(_p(runs, 0.99))

                made: list[str] = []

                async def one() -> None:
                    made.append(await _create(client))

                began = time.perf_counter()
                async with trio.open_nursery() as burst:
                    for _ in range(args.burst):
                        burst.start_soon(one)
                elapsed = time.perf_counter() - began
                report["burst"] = args.burst
                report["burst_s"] = round(elapsed, 3)
                report["kernels_per_s"] = round(args.burst / elapsed, 1)
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(f"/tmp/bai-b-{tag}", ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--burst", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(json.dumps(trio.run(_bench, args)))


if __name__ == "__main__":
    main()
