"""Discrete-event simulation of a GPU cluster driven by the real scheduling core.

Replays a workload through ``bai.manager.scheduler.schedule`` in simulated
time and prints ONE JSON line with, for each sequencer (``fifo``, ``fifo``
with head-of-line avoidance, ``lifo``, ``drf``) and agent selector
(``concentrated``, ``dispersed``): cluster utilization per slot, mean and
p95 (and max) queue wait, makespan, and Jain's fairness index across users.

Workload: a JSONL trace (``--trace FILE``, one job per line:
``{"id", "user", "submit", "duration", "kernels": [{slot: amount}],
"cluster_mode", "priority"}`` with times in seconds), or the built-in
synthetic generator (``--write-trace FILE`` saves it): six users with
Poisson arrivals and exponential durations; a heavy user submitting
GPU-heavy jobs (4-8 GPUs, some two-node 2 x 8 GPU jobs), two users with
1-2 GPU jobs, three users with small CPU jobs.  The cluster has 8 GPU
agents (8 GPUs, 64 CPUs, 512 GiB) and 8 CPU agents (32 CPUs, 128 GiB).

A pass runs whenever jobs arrive or finish, as the dispatcher's triggers
would, at most once per ``--pass-interval`` simulated seconds (events in
between wait for the next pass).  Definitions: wait = start - submit;
makespan = last finish - first submit; utilization of a slot = its
occupied amount integrated over time / (capacity x makespan); fairness =
Jain's index (sum x)^2 / (n sum x^2) of the users' mean bounded slowdown
x = (wait + run) / max(run, 60 s), so 1.0 means every user's jobs were
delayed in the same proportion.

Usage: ``python bench/simulate.py [--jobs N] [--seed S] [--trace FILE] [--reserve-after S]``.
Runs in well under 60 s.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bai.common.slots import DefaultForUnspecified, ResourceSlot
from bai.common.types import AccessKey, AgentId, ClusterMode, SessionId
from bai.manager.scheduler import (
    DEFAULT_ENGINE,
    DEFAULT_OPTIONS,
    AgentInfo,
    KeypairPolicy,
    NotScheduled,
    PendingSession,
    RunningSession,
    Scheduled,
    SchedulerOptions,
    SchedulingInput,
    schedule,
)

GiB = 1024**3
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
RG = "default"
SLOTS = ("cpu", "mem", "cuda.device")
CONFIGS: dict[str, dict[str, Any]] = {
    "fifo": {"sequencer": "fifo"},
    "fifo+hol3": {"sequencer": "fifo", "num_retries_to_skip": 3},
    "lifo": {"sequencer": "lifo"},
    "drf": {"sequencer": "drf"},
}
SELECTORS = ("concentrated", "dispersed")
UNLIMITED = KeypairPolicy(ResourceSlot.from_policy({}, DefaultForUnspecified.UNLIMITED))


@dataclass(frozen=True)
class Job:
    """One workload entry."""

    id: str
    user: str
    submit: float
    duration: float
    kernels: tuple[ResourceSlot, ...]
    cluster_mode: ClusterMode = ClusterMode.SINGLE_NODE
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "submit": round(self.submit, 3),
            "duration": round(self.duration, 3),
            "kernels": [k.to_json() for k in self.kernels],
            "cluster_mode": self.cluster_mode.value,
            "priority": self.priority,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Job:
        return cls(
            id=str(raw["id"]),
            user=str(raw["user"]),
            submit=float(raw["submit"]),
            duration=float(raw["duration"]),
            kernels=tuple(ResourceSlot.parse(k) for k in raw["kernels"]),
            cluster_mode=ClusterMode(raw.get("cluster_mode", "single-node")),
            priority=int(raw.get("priority", 0)),
        )


def synthetic(jobs: int, seed: int) -> list[Job]:
    """Return *jobs* jobs from six users with Poisson arrivals (see the module docstring)."""
    rng = random.Random(seed)

    def gpu_job(gpus: int) -> ResourceSlot:
        return ResourceSlot({"cpu": 4 * gpus, "mem": 32 * gpus * GiB, "cuda.device": gpus})

    def heavy() -> tuple[tuple[ResourceSlot, ...], ClusterMode, float]:
        if rng.random() < 0.2:
            return (gpu_job(8), gpu_job(8)), ClusterMode.MULTI_NODE, 7200
        return (gpu_job(rng.choice((4, 8))),), ClusterMode.SINGLE_NODE, 5400

    def medium() -> tuple[tuple[ResourceSlot, ...], ClusterMode, float]:
        return (gpu_job(rng.choice((1, 1, 2))),), ClusterMode.SINGLE_NODE, 2400

    def light() -> tuple[tuple[ResourceSlot, ...], ClusterMode, float]:
        cpu = rng.choice((1, 2, 4, 8, 16))
        return (ResourceSlot({"cpu": cpu, "mem": 4 * cpu * GiB}),), ClusterMode.SINGLE_NODE, 900

    # (kind, mean seconds between submissions): the heavy user floods the queue.
    users = [
        ("heavy", heavy, 1000.0),
        ("gpu-a", medium, 700.0),
        ("gpu-b", medium, 900.0),
        ("cpu-a", light, 150.0),
        ("cpu-b", light, 200.0),
        ("cpu-c", light, 300.0),
    ]
    arrivals: list[tuple[float, int]] = []
    for index, (_, _, gap) in enumerate(users):
        clock = 0.0
        for _ in range(jobs):
            clock += rng.expovariate(1 / gap)
            arrivals.append((clock, index))
    arrivals.sort()
    out = []
    for number, (submit, index) in enumerate(arrivals[:jobs]):
        name, make, _ = users[index]
        kernels, mode, mean_duration = make()
        duration = max(30.0, rng.expovariate(1 / mean_duration))
        out.append(Job(f"job-{number:05d}", name, submit, duration, kernels, mode))
    return out


def cluster() -> list[AgentInfo]:
    """8 GPU agents and 8 CPU agents in one resource group."""
    agents = []
    for i in range(8):
        agents.append(
            AgentInfo(
                AgentId(f"gpu-{i:02d}"),
                RG,
                ResourceSlot({"cpu": 64, "mem": 512 * GiB, "cuda.device": 8}),
                ResourceSlot(),
            )
        )
        agents.append(
            AgentInfo(
                AgentId(f"cpu-{i:02d}"),
                RG,
                ResourceSlot({"cpu": 32, "mem": 128 * GiB}),
                ResourceSlot(),
            )
        )
    return agents


@dataclass
class _Running:
    job: Job
    session: PendingSession
    start: float
    kernels: list[tuple[AgentId, ResourceSlot]]


@dataclass
class Simulation:
    """One run of a workload under one scheduler configuration."""

    jobs: list[Job]
    options: SchedulerOptions
    engine: str
    pass_interval: float
    agents: dict[AgentId, AgentInfo] = field(default_factory=dict)
    pending: dict[SessionId, PendingSession] = field(default_factory=dict)
    running: dict[SessionId, _Running] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    passes: int = 0

    def run(self) -> dict[str, Any]:
        self.agents = {agent.id: agent for agent in cluster()}
        capacity = {
            slot: sum(a.available_slots.get(slot, 0) for a in self.agents.values())
            for slot in SLOTS
        }
        jobs = {SessionId(uuid.UUID(int=n + 1)): job for n, job in enumerate(self.jobs)}
        users = sorted({job.user for job in self.jobs})
        user_ids = {user: uuid.UUID(int=10**6 + n) for n, user in enumerate(users)}
        events: list[tuple[float, int, str, SessionId]] = []
        for order, (session_id, job) in enumerate(jobs.items()):
            heapq.heappush(events, (job.submit, order, "arrive", session_id))
        order = len(jobs)
        integral = dict.fromkeys(SLOTS, Decimal(0))
        clock = 0.0
        last_pass = -math.inf
        while events:
            moment = (
                max(events[0][0], last_pass + self.pass_interval) if self.pending else events[0][0]
            )
            occupied = self._occupied()
            for slot in SLOTS:
                integral[slot] += occupied[slot] * Decimal(moment - clock)
            clock = moment
            # Everything that happened up to this moment is handled before the pass.
            while events and events[0][0] <= moment:
                _, _, kind, session_id = heapq.heappop(events)
                if kind == "arrive":
                    job = jobs[session_id]
                    self.pending[session_id] = PendingSession(
                        id=session_id,
                        access_key=AccessKey(job.user),
                        user_id=user_ids[job.user],
                        group_id=uuid.UUID(int=1),
                        domain_name="default",
                        resource_group=RG,
                        created_at=EPOCH + timedelta(seconds=job.submit),
                        kernels=job.kernels,
                        priority=job.priority,
                        cluster_mode=job.cluster_mode,
                    )
                else:
                    done = self.running.pop(session_id)
                    self.finished[done.job.id] = moment
            if not self.pending:
                continue
            last_pass = moment
            for session_id, finish in self._pass(moment, user_ids):
                order += 1
                heapq.heappush(events, (finish, order, "finish", session_id))
        first = min(job.submit for job in self.jobs)
        makespan = max(self.finished.values()) - first
        waits = sorted(self.waits.values())
        return {
            "utilization": {
                slot: round(float(integral[slot] / (capacity[slot] * Decimal(makespan))), 3)
                for slot in SLOTS
            },
            "mean_wait_s": round(sum(waits) / len(waits), 1),
            "p95_wait_s": round(waits[min(len(waits) - 1, math.ceil(0.95 * len(waits)) - 1)], 1),
            "max_wait_s": round(waits[-1], 1),
            "makespan_s": round(makespan, 1),
            "jain_fairness": round(self._fairness(), 3),
            "passes": self.passes,
        }

    def _occupied(self) -> dict[str, Decimal]:
        total = dict.fromkeys(SLOTS, Decimal(0))
        for entry in self.running.values():
            for _, requested in entry.kernels:
                for slot in SLOTS:
                    total[slot] += requested.get(slot, Decimal(0))
        return total

    def _pass(
        self, moment: float, user_ids: dict[str, uuid.UUID]
    ) -> Iterable[tuple[SessionId, float]]:
        self.passes += 1
        per_agent: dict[AgentId, tuple[ResourceSlot, int]] = {}
        running = []
        for session_id, entry in self.running.items():
            total = ResourceSlot()
            for agent_id, requested in entry.kernels:
                slots, count = per_agent.get(agent_id, (ResourceSlot(), 0))
                per_agent[agent_id] = (slots + requested, count + 1)
                total = total + requested
            session = entry.session
            running.append(
                RunningSession(
                    session_id,
                    session.access_key,
                    session.user_id,
                    session.group_id,
                    "default",
                    RG,
                    total,
                )
            )
        agents = tuple(
            replace(
                agent,
                occupied_slots=per_agent.get(agent.id, (ResourceSlot(), 0))[0],
                container_count=per_agent.get(agent.id, (ResourceSlot(), 0))[1],
            )
            for agent in self.agents.values()
        )
        data = SchedulingInput(
            now=EPOCH + timedelta(seconds=moment),
            pending=tuple(self.pending.values()),
            agents=agents,
            keypair_policies={AccessKey(user): UNLIMITED for user in user_ids},
            running=tuple(running),
            options={RG: self.options},
        )
        result = schedule(data, engine=self.engine)
        for agent_id, occupied in result.occupied_slots.items():
            assert occupied.fits_in(self.agents[agent_id].available_slots), agent_id
        started = []
        for decision in result.decisions:
            session = self.pending[decision.session_id]
            if isinstance(decision, Scheduled):
                del self.pending[session.id]
                job = self._job(session)
                self.running[session.id] = _Running(
                    job, session, moment, list(zip(decision.agents, session.kernels, strict=True))
                )
                self.waits[job.id] = moment - job.submit
                started.append((session.id, moment + job.duration))
            elif isinstance(decision, NotScheduled):
                self.pending[session.id] = replace(session, retries=decision.retries)
            else:
                raise RuntimeError(f"scheduler error in the simulation: {decision.msg}")
        return started

    def _job(self, session: PendingSession) -> Job:
        return self.jobs[session.id.int - 1]

    def _fairness(self) -> float:
        slowdowns: dict[str, list[float]] = {}
        for job in self.jobs:
            slowdown = (self.waits[job.id] + job.duration) / max(job.duration, 60.0)
            slowdowns.setdefault(job.user, []).append(slowdown)
        means = [sum(values) / len(values) for values in slowdowns.values()]
        return sum(means) ** 2 / (len(means) * sum(m * m for m in means))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=600, help="synthetic jobs (default 600)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trace", type=Path, help="replay this JSONL trace instead")
    parser.add_argument("--write-trace", type=Path, help="save the synthetic workload as JSONL")
    parser.add_argument("--pass-interval", type=float, default=10.0, help="simulated seconds")
    parser.add_argument("--engine", default=DEFAULT_ENGINE)
    parser.add_argument(
        "--reserve-after",
        type=float,
        default=DEFAULT_OPTIONS.reserve_after,
        help="simulated seconds of waiting before agents are held for a session (0: never)",
    )
    args = parser.parse_args()
    if args.trace:
        lines = args.trace.read_text().splitlines()
        jobs = sorted(
            (Job.from_json(json.loads(line)) for line in lines if line.strip()),
            key=lambda j: j.submit,
        )
    else:
        jobs = synthetic(args.jobs, args.seed)
    if args.write_trace:
        args.write_trace.write_text("".join(json.dumps(job.to_json()) + "\n" for job in jobs))
    began = time.perf_counter()
    runs: dict[str, Any] = {}
    for name, raw in CONFIGS.items():
        for selector in SELECTORS:
            options = SchedulerOptions.parse(
                {**raw, "agent_selector": selector, "reserve_after": args.reserve_after}
            )
            runs[f"{name}/{selector}"] = Simulation(
                jobs, options, args.engine, args.pass_interval
            ).run()
    print(
        json.dumps(
            {
                "bench": "simulate",
                "jobs": len(jobs),
                "agents": len(cluster()),
                "engine": args.engine,
                "reserve_after_s": args.reserve_after,
                "wall_s": round(time.perf_counter() - began, 1),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
