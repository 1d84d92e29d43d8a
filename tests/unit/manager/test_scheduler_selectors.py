"""Agent selection and placement, and the two agent-fit engines.

Every pass-level test runs with both engines (Cython when built, and Python).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bai.common.slots import DefaultForUnspecified, ResourceSlot
from bai.common.types import AccessKey, AgentId, ClusterMode, SessionId
from bai.manager.scheduler import (
    ENGINES,
    AgentInfo,
    KeypairPolicy,
    NotScheduled,
    PendingSession,
    SchedulerOptions,
    SchedulingInput,
    SchedulingResult,
    _binpack_py,
    schedule,
)

NOW = datetime(2024, 1, 1, 12, tzinfo=UTC)
GiB = 1024**3
UNLIMITED = KeypairPolicy(ResourceSlot.from_policy({}, DefaultForUnspecified.UNLIMITED))
MULTI = ClusterMode.MULTI_NODE


@pytest.fixture(params=["python", "cython"])
def engine(request: pytest.FixtureRequest) -> str:
    """The agent-fit engine a test runs with."""
    if request.param not in ENGINES:
        pytest.skip("the Cython extension is not built")
    name: str = request.param
    return name


def slots(**amounts: int) -> ResourceSlot:
    """``slots(cpu=2, mem=GiB, cuda_device=1)``: underscores stand for dots."""
    return ResourceSlot({key.replace("_", "."): value for key, value in amounts.items()})


def agent(
    name: str,
    *,
    occupied: ResourceSlot | None = None,
    architecture: str = "x86_64",
    containers: int = 0,
    schedulable: bool = True,
    **capacity: int,
) -> AgentInfo:
    return AgentInfo(
        id=AgentId(name),
        resource_group="default",
        available_slots=slots(**capacity),
        occupied_slots=occupied or ResourceSlot(),
        architecture=architecture,
        container_count=containers,
        schedulable=schedulable,
    )


def session(number: int, *kernels: ResourceSlot, **fields: Any) -> PendingSession:
    """Pending session *number*; a lower number is older."""
    return PendingSession(
        id=SessionId(uuid.UUID(int=number)),
        access_key=AccessKey("AK"),
        user_id=uuid.UUID(int=1),
        group_id=uuid.UUID(int=2),
        domain_name="default",
        resource_group="default",
        created_at=NOW - timedelta(seconds=100 - number),
        kernels=kernels or (slots(cpu=1),),
        **fields,
    )


def run(
    pending: list[PendingSession],
    agents: list[AgentInfo],
    engine: str,
    selector: str = "dispersed",
    **options: Any,
) -> SchedulingResult:
    raw = {"agent_selector": selector, "sequencer": "lifo", **options}
    return schedule(
        SchedulingInput(
            now=NOW,
            pending=tuple(pending),
            agents=tuple(agents),
            keypair_policies={AccessKey("AK"): UNLIMITED},
            options={"default": SchedulerOptions.parse(raw)},
        ),
        engine=engine,
    )


def placed(result: SchedulingResult) -> dict[int, tuple[AgentId, ...]]:
    return {d.session_id.int: d.agents for d in result.scheduled}


def failure(result: SchedulingResult, number: int) -> str:
    decision = result.decision_for(SessionId(uuid.UUID(int=number)))
    assert isinstance(decision, NotScheduled), decision
    assert decision.reason == "resources"
    return decision.msg


THREE = [
    agent("a", cpu=8, mem=8 * GiB, occupied=slots(cpu=6)),
    agent("b", cpu=8, mem=8 * GiB, occupied=slots(cpu=2)),
    agent("c", cpu=8, mem=8 * GiB, occupied=slots(cpu=4)),
]


def test_concentrated_packs_onto_the_fullest_agent_that_fits(engine: str) -> None:
    result = run([session(1, slots(cpu=2))], THREE, engine, "concentrated")
    assert placed(result) == {1: ("a",)}
    result = run([session(1, slots(cpu=3))], THREE, engine, "concentrated")
    assert placed(result) == {1: ("c",)}


def test_dispersed_spreads_onto_the_emptiest_agent(engine: str) -> None:
    assert placed(run([session(1, slots(cpu=2))], THREE, engine)) == {1: ("b",)}


def test_ties_go_to_the_agent_with_more_or_fewer_containers_then_the_smallest_id(
    engine: str,
) -> None:
    agents = [
        agent("x", cpu=4, containers=1),
        agent("y", cpu=4, containers=5),
        agent("z", cpu=4, containers=1),
    ]
    assert placed(run([session(1)], agents, engine, "concentrated")) == {1: ("y",)}
    assert placed(run([session(1)], agents, engine, "dispersed")) == {1: ("x",)}


def test_requested_slots_are_compared_in_resource_priority_order(engine: str) -> None:
    agents = [
        agent("a", cpu=16, mem=4 * GiB, cuda_device=4),
        agent("b", cpu=4, mem=16 * GiB, cuda_device=2),
    ]
    request = session(1, slots(cpu=1, mem=GiB, cuda_device=1))
    # Default order: accelerators first, so "a" (4 free GPUs) is the most free.
    assert placed(run([request], agents, engine)) == {1: ("a",)}
    assert placed(run([request], agents, engine, resource_priority=["mem"])) == {1: ("b",)}
    assert placed(run([request], agents, engine, "concentrated", resource_priority=["cpu"])) == {
        1: ("b",)
    }


def test_sessions_avoid_agents_with_accelerators_they_do_not_need(engine: str) -> None:
    agents = [agent("gpu", cpu=64, mem=64 * GiB, cuda_device=8), agent("cpu", cpu=8, mem=8 * GiB)]
    for selector in ("dispersed", "concentrated"):
        result = run([session(1, slots(cpu=2)), session(2, slots(cpu=7))], agents, engine, selector)
        # LIFO: session 2 takes the CPU node, session 1 no longer fits there.
        assert placed(result) == {2: ("cpu",), 1: ("gpu",)}


def test_roundrobin_takes_the_next_fitting_agent_and_returns_its_cursor(engine: str) -> None:
    agents = [agent(name, cpu=2) for name in ("a", "b", "c")]
    pending = [session(n) for n in (1, 2, 3, 4)]
    result = run(pending, agents, engine, "roundrobin")
    assert placed(result) == {4: ("a",), 3: ("b",), 2: ("c",), 1: ("a",)}
    assert result.roundrobin == {"default": "a"}
    data = SchedulingInput(
        now=NOW,
        pending=(session(1),),
        agents=tuple(agents),
        keypair_policies={AccessKey("AK"): UNLIMITED},
        options={"default": SchedulerOptions.parse({"agent_selector": "roundrobin"})},
        roundrobin={"default": AgentId("b")},
    )
    assert schedule(data, engine=engine).scheduled[0].agents == ("c",)
    gone = SchedulingInput(**{**data.__dict__, "roundrobin": {"default": AgentId("bb")}})
    assert schedule(gone, engine=engine).scheduled[0].agents == ("c",)


def test_architecture_filter(engine: str) -> None:
    agents = [
        agent("arm", cpu=8, architecture="aarch64"),
        agent("x86", cpu=8, architecture="amd64"),
    ]
    pending = [session(1, architecture="arm64"), session(2), session(3, architecture="riscv64")]
    result = run(pending, agents, engine)
    assert placed(result) == {1: ("arm",), 2: ("x86",)}
    decision = result.decision_for(SessionId(uuid.UUID(int=3)))
    assert isinstance(decision, NotScheduled)
    assert "architecture 'riscv64'" in decision.msg


def test_designated_agent(engine: str) -> None:
    agents = [
        agent("a", cpu=8),
        agent("b", cpu=2),
        agent("off", cpu=8, schedulable=False),
        agent("arm", cpu=8, architecture="aarch64"),
    ]
    pending = [
        session(1, designated_agent=AgentId("b")),
        session(2, slots(cpu=4), designated_agent=AgentId("b")),
        session(3, designated_agent=AgentId("off")),
        session(4, designated_agent=AgentId("nowhere")),
        session(5, designated_agent=AgentId("arm")),
    ]
    result = run(pending, agents, engine, "concentrated")
    assert placed(result) == {1: ("b",)}
    assert "designated agent" in failure(result, 2)
    assert "excluded" in failure(result, 3)
    assert "not in resource group" in failure(result, 4)
    assert "architecture" in failure(result, 5)


def test_single_node_sessions_put_every_kernel_on_one_agent(engine: str) -> None:
    agents = [agent("a", cpu=4), agent("b", cpu=4)]
    three = session(1, slots(cpu=2), slots(cpu=2), slots(cpu=2))
    assert "for the session" in failure(run([three], agents, engine), 1)
    two = session(2, slots(cpu=2), slots(cpu=2))
    assert placed(run([two], agents, engine)) == {2: ("a", "a")}


def test_multi_node_sessions_spread_kernels_and_are_all_or_nothing(engine: str) -> None:
    agents = [agent("a", cpu=4), agent("b", cpu=4)]
    three = session(1, slots(cpu=2), slots(cpu=2), slots(cpu=3), cluster_mode=MULTI)
    fits = session(2, slots(cpu=3), slots(cpu=3), cluster_mode=MULTI)
    result = run([three, fits], agents, engine)
    # LIFO: session 2 first (a, b); then session 1's third kernel finds no room,
    # so none of its kernels holds anything.
    assert placed(result) == {2: ("a", "b")}
    assert "kernel 1 of 3" in failure(result, 1)
    result = run([three], agents, engine, "concentrated")
    assert placed(result) == {1: ("a", "a", "b")}
    assert result.occupied_slots == {"a": slots(cpu=4), "b": slots(cpu=3)}


def test_a_slot_no_agent_provides_gets_a_clear_message(engine: str) -> None:
    agents = [agent("a", cpu=8, cuda_device=0)]
    result = run(
        [session(1, slots(cpu=1, cuda_device=1)), session(2, slots(cpu=1, tpu_device=1))],
        agents,
        engine,
    )
    assert "provides 'cuda.device'" in failure(result, 1)
    assert "provides 'tpu.device'" in failure(result, 2)


def test_over_allocated_and_excluded_agents_receive_nothing(engine: str) -> None:
    agents = [
        agent("over", cpu=8, mem=GiB, occupied=slots(mem=2 * GiB)),
        agent("off", cpu=8, schedulable=False),
    ]
    result = run([session(1, slots(cpu=1))], agents, engine)
    assert placed(result) == {}


def test_infinite_or_huge_capacities_fall_back_to_exact_python(engine: str) -> None:
    huge = 2**70
    agents = [
        AgentInfo(AgentId("inf"), "default", ResourceSlot({"cpu": 4, "mem": huge}), ResourceSlot()),
        agent("small", cpu=8, mem=GiB),
    ]
    result = run([session(1, slots(cpu=2, mem=2 * GiB)), session(2, slots(cpu=5))], agents, engine)
    assert placed(result) == {2: ("small",), 1: ("inf",)}


def test_python_twin_accepts_infinity() -> None:
    bins = _binpack_py.Bins([[float("inf"), 0], [5, 0]], [[0, 1]], 1)
    assert bins.pick([10**30], [0], [0], _binpack_py.DISPERSED, -1) == 0
    assert bins.pick([3], [0], [0], _binpack_py.CONCENTRATED, -1) == 1


@pytest.mark.skipif("cython" not in ENGINES, reason="the Cython extension is not built")
def test_cython_twin_rejects_cells_beyond_62_bits_and_agrees_on_huge_requests() -> None:
    cython = ENGINES["cython"]
    with pytest.raises(OverflowError):
        cython.Bins([[2**62, 0]], [[0]], 1)
    with pytest.raises(OverflowError):
        cython.Bins([[float("inf"), 0]], [[0]], 1)
    rows, groups = [[5, -1], [7, 0]], [[0, 1]]
    for twin in (cython.Bins(rows, groups, 1), _binpack_py.Bins(rows, groups, 1)):
        assert twin.pick([2**80], [0], [0], 0, -1) == -1
        assert twin.pick([-(2**80)], [0], [0], 0, -1) == 0
        assert twin.pick([6], [0], [0], 2, 1) == 1
        assert not twin.fits(0, [2**80])
        twin.take(1, [6], 2)
        assert twin.row(1) == [1, -2]
        twin.give(1, [6], 2)
        assert twin.row(1) == [7, 0]
        with pytest.raises(IndexError):
            twin.row(2)
