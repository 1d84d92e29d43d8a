"""Throughput of the pure scheduling core (``bai.manager.scheduler.schedule``).

Prints ONE JSON line: for (pending sessions, agents) = (100, 10), (1,000, 100)
and (10,000, 1,000), the time of one full pass (best of a few runs) and the
placement decisions per second (pending sessions decided / best pass time;
the first pass, with the core's cache of request shapes still cold, is
reported too), with
the Cython engine and with pure Python.  "Pure Python" runs in a child
process with ``BAI_NO_EXTENSIONS=1``, so ResourceSlot's arithmetic is pure
Python there too; without a built extension only the Python figures appear.

The workload is fixed by a seed: a resource group of CPU-only and 8-GPU
agents, partly occupied; sessions from 50 users, 80 % small CPU ones, 12 %
GPU ones (1-8 GPUs), 8 % two-to-four-kernel multi-node ones; priorities 0-2;
FIFO with head-of-line avoidance (``num_retries_to_skip = 3``) and the
dispersed selector.  Usage: ``python bench/scheduler.py [--quick]``.
Runs in well under 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bai.common.slots import DefaultForUnspecified, ResourceSlot
from bai.common.types import AccessKey, AgentId, ClusterMode, SessionId
from bai.manager.scheduler import (
    DEFAULT_ENGINE,
    AgentInfo,
    KeypairPolicy,
    PendingSession,
    SchedulerOptions,
    SchedulingInput,
    schedule,
)
from bai.manager.scheduler.validation import clear_shape_cache

SIZES = ((100, 10), (1_000, 100), (10_000, 1_000))
GiB = 1024**3
USERS = 50
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def build(pending: int, agents: int, seed: int = 1) -> SchedulingInput:
    """Return a reproducible pass input of *pending* sessions and *agents* agents."""
    rng = random.Random(seed)
    agent_list = []
    for i in range(agents):
        gpu = i % 4 == 0
        capacity = (
            {"cpu": 64, "mem": 512 * GiB, "cuda.device": 8}
            if gpu
            else {
                "cpu": 32,
                "mem": 128 * GiB,
            }
        )
        share = rng.choice((0, 0, 1, 2))  # quarters of the agent already occupied
        occupied = {key: value * share // 4 for key, value in capacity.items()}
        agent_list.append(
            AgentInfo(
                id=AgentId(f"agent-{i:05d}"),
                resource_group="default",
                available_slots=ResourceSlot(capacity),
                occupied_slots=ResourceSlot(occupied),
                container_count=share * 2,
            )
        )
    users = [(AccessKey(f"AK{u:04d}"), uuid.UUID(int=u + 1)) for u in range(USERS)]
    group = uuid.UUID(int=10**6)
    sessions = []
    for i in range(pending):
        access_key, user = users[rng.randrange(USERS)]
        kind = rng.random()
        mode = ClusterMode.SINGLE_NODE
        kernels: tuple[ResourceSlot, ...]
        if kind < 0.80:
            kernels = (
                ResourceSlot({"cpu": rng.choice((1, 2, 4)), "mem": rng.choice((1, 2, 4, 8)) * GiB}),
            )
        elif kind < 0.92:
            gpus = rng.choice((1, 1, 2, 4, 8))
            kernels = (
                ResourceSlot({"cpu": 4 * gpus, "mem": 32 * gpus * GiB, "cuda.device": gpus}),
            )
        else:
            size = rng.randint(2, 4)
            kernels = tuple(ResourceSlot({"cpu": 8, "mem": 16 * GiB}) for _ in range(size))
            mode = ClusterMode.MULTI_NODE
        sessions.append(
            PendingSession(
                id=SessionId(uuid.UUID(int=i + 1)),
                access_key=access_key,
                user_id=user,
                group_id=group,
                domain_name="default",
                resource_group="default",
                created_at=NOW - timedelta(seconds=pending - i),
                kernels=kernels,
                priority=rng.choice((0, 0, 0, 1, 2)),
                retries=rng.choice((0, 0, 1, 4)),
                cluster_mode=mode,
            )
        )
    policy = KeypairPolicy(
        total_resource_slots=ResourceSlot.from_policy(
            {"cpu": 10_000}, DefaultForUnspecified.UNLIMITED
        ),
        max_concurrent_sessions=1_000,
        max_containers_per_session=8,
    )
    return SchedulingInput(
        now=NOW,
        pending=tuple(sessions),
        agents=tuple(agent_list),
        keypair_policies={access_key: policy for access_key, _ in users},
        options={
            "default": SchedulerOptions.parse(
                {"sequencer": "fifo", "agent_selector": "dispersed", "num_retries_to_skip": 3}
            )
        },
    )


def measure(engine: str, quick: bool) -> dict[str, Any]:
    """Time passes for every size with *engine*; return the figures by size."""
    figures: dict[str, Any] = {}
    for pending, agents in SIZES:
        data = build(pending, agents)
        runs = 1 if quick else 5 if pending < 10_000 else 3 if engine == "cython" else 2
        clear_shape_cache()
        times = []
        started = 0
        for _ in range(runs):
            begin = time.perf_counter()
            result = schedule(data, engine=engine)
            times.append(time.perf_counter() - begin)
            started = len(result.scheduled)
        best = min(times)
        figures[f"{pending}x{agents}"] = {
            "first_pass_ms": round(times[0] * 1000, 1),
            "pass_ms": round(best * 1000, 1),
            "decisions_per_s": round(pending / best),
            "started": started,
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per size")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(measure(args.engine, args.quick)))
        return
    out: dict[str, Any] = {"bench": "scheduler"}
    if DEFAULT_ENGINE == "cython":
        out["cython"] = measure("cython", args.quick)
    child = subprocess.run(
        [sys.executable, __file__, "--engine", "python", *(["--quick"] if args.quick else [])],
        env={**os.environ, "BAI_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    out["python"] = json.loads(child.stdout)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
