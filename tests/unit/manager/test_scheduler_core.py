"""The scheduling pass: predicates, sequencers, head-of-line blocking, errors.

Every test runs with both agent-fit engines (Cython when built, and Python).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bai.common.slots import DefaultForUnspecified, ResourceSlot
from bai.common.types import (
    AccessKey,
    AgentId,
    ClusterMode,
    SessionId,
    SessionResult,
    SessionStatus,
)
from bai.manager.scheduler import (
    ENGINES,
    PREDICATES,
    AgentInfo,
    DependencyState,
    InvalidSchedulingInput,
    KeypairPolicy,
    NotScheduled,
    PendingSession,
    RunningSession,
    Scheduled,
    SchedulerError,
    SchedulerOptions,
    SchedulingInput,
    SchedulingResult,
    UnsatisfiableRequest,
    check_satisfiable,
    dominant_share,
    schedule,
    validate_pending,
)

NOW = datetime(2024, 1, 1, 12, tzinfo=UTC)
GiB = 1024**3
GROUP = uuid.UUID(int=7)
UNLIMITED = KeypairPolicy(ResourceSlot.from_policy({}, DefaultForUnspecified.UNLIMITED))


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


def agent(name: str, *, occupied: ResourceSlot | None = None, **capacity: Any) -> AgentInfo:
    extra = {k: capacity.pop(k) for k in ("resource_group", "architecture") if k in capacity}
    return AgentInfo(
        id=AgentId(name),
        resource_group=extra.get("resource_group", "default"),
        available_slots=slots(**capacity),
        occupied_slots=occupied or ResourceSlot(),
        architecture=extra.get("architecture", "x86_64"),
    )


def sid(number: int) -> SessionId:
    return SessionId(uuid.UUID(int=number))


def session(number: int, *kernels: ResourceSlot, user: int = 1, **fields: Any) -> PendingSession:
    """Pending session *number*; a lower number is older."""
    fields.setdefault("access_key", AccessKey(f"AK{user}"))
    fields.setdefault("created_at", NOW - timedelta(seconds=100 - number))
    return PendingSession(
        id=sid(number),
        user_id=uuid.UUID(int=user),
        group_id=GROUP,
        domain_name="default",
        resource_group=fields.pop("resource_group", "default"),
        kernels=fields.pop("kernels", kernels or (slots(cpu=1, mem=GiB),)),
        **fields,
    )


def run(
    pending: list[PendingSession],
    agents: list[AgentInfo],
    engine: str,
    *,
    options: SchedulerOptions | None = None,
    policies: dict[AccessKey, KeypairPolicy] | None = None,
    **extra: Any,
) -> SchedulingResult:
    all_policies = {AccessKey(s.access_key): UNLIMITED for s in pending}
    all_policies.update(policies or {})
    return schedule(
        SchedulingInput(
            now=NOW,
            pending=tuple(pending),
            agents=tuple(agents),
            keypair_policies=all_policies,
            options={"default": options} if options else {},
            **extra,
        ),
        engine=engine,
    )


def started(result: SchedulingResult) -> list[int]:
    return [d.session_id.int for d in result.scheduled]


def not_scheduled(result: SchedulingResult, number: int) -> NotScheduled:
    decision = result.decision_for(sid(number))
    assert isinstance(decision, NotScheduled), decision
    return decision


# --- predicates -------------------------------------------------------------


def test_predicates_have_a_fixed_order() -> None:
    assert [p.name for p in PREDICATES] == [
        "reserved_time",
        "dependencies",
        "concurrency",
        "pending_session_count_limit",
        "pending_session_resource_limit",
        "keypair_resource_limit",
        "user_resource_limit",
        "user_group_resource_limit",
        "domain_resource_limit",
        "max_containers_per_session",
    ]


def test_all_predicates_run_and_status_data_lists_them(engine: str) -> None:
    tight = KeypairPolicy(
        ResourceSlot.from_policy({"cpu": 1}, DefaultForUnspecified.UNLIMITED),
        max_containers_per_session=1,
    )
    later = NOW + timedelta(hours=1)
    pending = [
        session(1, slots(cpu=2), slots(cpu=2), starts_at=later, retries=4),
    ]
    result = run(pending, [agent("a", cpu=8)], engine, policies={AccessKey("AK1"): tight})
    decision = not_scheduled(result, 1)
    assert decision.reason == "predicates"
    assert decision.retries == 5
    data = decision.status_data()
    assert [f["name"] for f in data["failed_predicates"]] == [
        "reserved_time",
        "keypair_resource_limit",
        "max_containers_per_session",
    ]
    assert {"name": "concurrency"} in data["passed_predicates"]
    assert len(data["passed_predicates"]) + len(data["failed_predicates"]) == len(PREDICATES)
    assert data["retries"] == 5
    assert data["last_try"] == NOW.isoformat()
    assert later.isoformat() in data["failed_predicates"][0]["msg"]
    assert "cpu (using 0, requesting 4, limit 1)" in data["failed_predicates"][1]["msg"]
    assert "2 kernels" in data["failed_predicates"][2]["msg"]


def test_reserved_session_starts_once_its_time_has_come(engine: str) -> None:
    pending = [
        session(1, starts_at=NOW + timedelta(seconds=1)),
        session(2, starts_at=NOW),
    ]
    result = run(pending, [agent("a", cpu=8, mem=8 * GiB)], engine)
    assert started(result) == [2]
    assert not_scheduled(result, 1).failed_predicates[0].name == "reserved_time"


def test_dependencies_must_finish_successfully(engine: str) -> None:
    done, running, failed, cancelled, missing = (sid(n) for n in (101, 102, 103, 104, 105))
    states = {
        done: DependencyState(SessionStatus.TERMINATED, SessionResult.SUCCESS),
        running: DependencyState(SessionStatus.RUNNING),
        failed: DependencyState(SessionStatus.TERMINATED, SessionResult.FAILURE),
        cancelled: DependencyState(SessionStatus.CANCELLED),
    }
    pending = [
        session(1, dependencies=(done,)),
        session(2, dependencies=(done, running)),
        session(3, dependencies=(failed,)),
        session(4, dependencies=(cancelled,)),
        session(5, dependencies=(missing,)),
    ]
    result = run(pending, [agent("a", cpu=8, mem=8 * GiB)], engine, dependencies=states)
    assert started(result) == [1]
    waiting = not_scheduled(result, 2)
    assert str(running) in waiting.msg and not waiting.permanent
    for number in (3, 4, 5):
        assert not_scheduled(result, number).permanent
    assert "without success" in not_scheduled(result, 3).msg
    assert "CANCELLED" in not_scheduled(result, 4).msg
    assert "does not exist" in not_scheduled(result, 5).msg


def test_concurrency_counts_running_and_just_started_sessions(engine: str) -> None:
    policy = KeypairPolicy(UNLIMITED.total_resource_slots, max_concurrent_sessions=3)
    running = (
        RunningSession(
            sid(90), AccessKey("AK1"), uuid.UUID(int=1), GROUP, "default", "default", slots(cpu=1)
        ),
    )
    pending = [session(n) for n in range(1, 5)]
    result = run(
        pending,
        [agent("a", cpu=16, mem=16 * GiB)],
        engine,
        policies={AccessKey("AK1"): policy},
        running=running,
    )
    assert started(result) == [1, 2]
    assert "max_concurrent_sessions" in not_scheduled(result, 3).msg


def test_pending_count_limit_lets_only_the_oldest_start(engine: str) -> None:
    policy = KeypairPolicy(UNLIMITED.total_resource_slots, max_pending_session_count=2)
    pending = [session(n) for n in (3, 1, 2)]
    result = run(
        pending, [agent("a", cpu=16, mem=16 * GiB)], engine, policies={AccessKey("AK1"): policy}
    )
    assert started(result) == [1, 2]
    assert not_scheduled(result, 3).failed_predicates[0].name == "pending_session_count_limit"


def test_pending_resource_limit_counts_older_pending_requests(engine: str) -> None:
    policy = KeypairPolicy(
        UNLIMITED.total_resource_slots,
        max_pending_session_resource_slots=ResourceSlot.from_policy(
            {"cpu": 3}, DefaultForUnspecified.UNLIMITED
        ),
    )
    pending = [session(n, slots(cpu=2)) for n in (1, 2)]
    result = run(pending, [agent("a", cpu=16)], engine, policies={AccessKey("AK1"): policy})
    assert started(result) == [1]
    assert "max_pending_session_resource_slots" in not_scheduled(result, 2).msg


def test_keypair_limit_holds_across_sessions_started_in_one_pass(engine: str) -> None:
    policy = KeypairPolicy(ResourceSlot.from_policy({"cpu": 5, "mem": "100g"}))
    running = (
        RunningSession(
            sid(90), AccessKey("AK1"), uuid.UUID(int=1), GROUP, "default", "other", slots(cpu=1)
        ),
    )
    pending = [session(n, slots(cpu=2, mem=GiB)) for n in (1, 2, 3)]
    result = run(
        pending,
        [agent("a", cpu=64, mem=64 * GiB)],
        engine,
        policies={AccessKey("AK1"): policy},
        running=running,
    )
    assert started(result) == [1, 2]
    assert "cpu (using 5, requesting 2, limit 5)" in not_scheduled(result, 3).msg


def test_limited_policy_refuses_slots_it_does_not_name(engine: str) -> None:
    policy = KeypairPolicy(ResourceSlot.from_policy({"cpu": 8, "mem": "8g"}))
    pending = [session(1, slots(cpu=1, mem=GiB, cuda_device=1))]
    result = run(
        pending,
        [agent("a", cpu=8, mem=8 * GiB, cuda_device=1)],
        engine,
        policies={AccessKey("AK1"): policy},
    )
    assert "cuda.device (using 0, requesting 1, limit 0)" in not_scheduled(result, 1).msg


@pytest.mark.parametrize(
    ("limit_field", "key", "name"),
    [
        ("user_limits", uuid.UUID(int=1), "user_resource_limit"),
        ("group_limits", GROUP, "user_group_resource_limit"),
        ("domain_limits", "default", "domain_resource_limit"),
    ],
)
def test_user_group_and_domain_totals(
    engine: str, limit_field: str, key: object, name: str
) -> None:
    limit = ResourceSlot.from_policy({"cpu": 3}, DefaultForUnspecified.UNLIMITED)
    other = uuid.UUID(int=12345) if isinstance(key, uuid.UUID) else "elsewhere"
    limits: dict[Any, ResourceSlot] = {key: limit, other: ResourceSlot()}
    pending = [session(1, slots(cpu=2)), session(2, slots(cpu=2))]
    extra: dict[str, Any] = {limit_field: limits}
    result = run(pending, [agent("a", cpu=16)], engine, **extra)
    assert started(result) == [1]
    failed = not_scheduled(result, 2).failed_predicates
    assert [f.name for f in failed] == [name]
    assert "cpu (using 2, requesting 2, limit 3)" in failed[0].msg


# --- sequencers ---------------------------------------------------------------


def test_higher_priority_goes_first_then_fifo(engine: str) -> None:
    pending = [session(1), session(2, priority=5), session(3, priority=5), session(4)]
    result = run(
        pending,
        [agent("a", cpu=2, mem=8 * GiB)],
        engine,
        options=SchedulerOptions.parse({"agent_selector": "concentrated"}),
    )
    assert started(result) == [2, 3]


def test_lifo_starts_the_newest_first_and_skips_what_does_not_fit(engine: str) -> None:
    pending = [session(1), session(2), session(3, slots(cpu=8)), session(4)]
    result = run(
        pending,
        [agent("a", cpu=3, mem=8 * GiB)],
        engine,
        options=SchedulerOptions.parse({"sequencer": "lifo"}),
    )
    assert started(result) == [4, 2, 1]
    assert not_scheduled(result, 3).reason == "resources"


def test_strict_fifo_blocks_behind_a_head_that_does_not_fit(engine: str) -> None:
    pending = [session(1), session(2, slots(cpu=8)), session(3), session(4, slots(cpu=9))]
    result = run(pending, [agent("a", cpu=4, mem=8 * GiB)], engine)
    assert started(result) == [1]
    head = not_scheduled(result, 2)
    assert head.reason == "resources" and head.retries == 1
    blocked = not_scheduled(result, 3)
    assert blocked.reason == "blocked"
    assert str(sid(2)) in blocked.msg
    assert not_scheduled(result, 4).reason == "resources"


def test_a_policy_failure_does_not_block_fifo(engine: str) -> None:
    pending = [session(1, starts_at=NOW + timedelta(days=1)), session(2)]
    result = run(pending, [agent("a", cpu=4, mem=8 * GiB)], engine)
    assert started(result) == [2]


def test_head_of_line_avoidance_pushes_back_after_n_tries(engine: str) -> None:
    options = SchedulerOptions.parse({"num_retries_to_skip": 2})
    agents = [agent("a", cpu=4, mem=8 * GiB)]
    blocker = session(1, slots(cpu=8))
    waiting = session(2)
    retries = {1: 0, 2: 0}
    history = []
    for _ in range(3):
        pending = [
            PendingSession(**{**_fields(s), "retries": retries[s.id.int]})
            for s in (blocker, waiting)
        ]
        result = run(pending, agents, engine, options=options)
        history.append(started(result))
        for decision in result.decisions:
            if isinstance(decision, NotScheduled):
                retries[decision.session_id.int] = decision.retries
    assert history == [[], [], [2]]


def test_pushed_back_sessions_are_not_blocked_by_fresh_ones(engine: str) -> None:
    options = SchedulerOptions.parse({"num_retries_to_skip": 1})
    pending = [session(1, retries=1), session(2, slots(cpu=8)), session(3, retries=3)]
    result = run(pending, [agent("a", cpu=4, mem=8 * GiB)], engine, options=options)
    assert started(result) == [1, 3]
    assert [d.session_id.int for d in result.decisions] == [2, 1, 3]


@pytest.mark.parametrize("sequencer", ["lifo", "drf", "fifo+skip"])
def test_a_starving_session_gets_agents_held_until_it_fits(engine: str, sequencer: str) -> None:
    raw: dict[str, object] = {"reserve_after": "10m", "sequencer": sequencer.removesuffix("+skip")}
    if sequencer == "fifo+skip":
        raw["num_retries_to_skip"] = 1
    options = SchedulerOptions.parse(raw)
    # Two half-busy agents: the 4-CPU session fits on neither until one drains.
    agents = [
        agent("a", cpu=4, mem=8 * GiB, occupied=slots(cpu=2)),
        agent("b", cpu=4, mem=8 * GiB, occupied=slots(cpu=3)),
    ]
    big = session(1, slots(cpu=4), created_at=NOW - timedelta(minutes=11), retries=5)
    small = [session(n, slots(cpu=1), user=2) for n in (2, 3, 4)]
    result = run([big, *small], agents, engine, options=options)
    held = not_scheduled(result, 1)
    assert held.reason == "resources" and "holding a for it" in held.msg
    # Agent a (the most free) is held, so only b takes a small session.
    assert len(started(result)) == 1
    assert set(result.allocated_slots) == {AgentId("b")}


def test_without_reserve_after_small_sessions_fill_the_gaps(engine: str) -> None:
    options = SchedulerOptions.parse({"sequencer": "lifo", "reserve_after": 0})
    agents = [agent("a", cpu=4, mem=8 * GiB, occupied=slots(cpu=2))]
    big = session(1, slots(cpu=4), created_at=NOW - timedelta(days=1))
    result = run([big, session(2), session(3)], agents, engine, options=options)
    assert started(result) == [3, 2]
    assert "holding" not in not_scheduled(result, 1).msg


def test_a_session_too_big_for_any_idle_agent_holds_nothing(engine: str) -> None:
    options = SchedulerOptions.parse({"sequencer": "lifo"})
    agents = [agent("a", cpu=4, mem=8 * GiB)]
    huge = session(1, slots(cpu=5), created_at=NOW - timedelta(hours=1))
    result = run([huge, session(2)], agents, engine, options=options)
    assert started(result) == [2]
    assert "holding" not in not_scheduled(result, 1).msg


def test_starving_sessions_go_first_within_their_priority(engine: str) -> None:
    options = SchedulerOptions.parse({"sequencer": "lifo", "agent_selector": "concentrated"})
    old = session(1, created_at=NOW - timedelta(hours=1))
    result = run(
        [old, session(2), session(3), session(4, priority=1)],
        [agent("a", cpu=3, mem=8 * GiB)],
        engine,
        options=options,
    )
    assert started(result) == [4, 1, 3]


def test_a_multi_node_starving_session_holds_one_agent_per_kernel(engine: str) -> None:
    options = SchedulerOptions.parse({"sequencer": "drf"})
    agents = [
        agent(name, cpu=4, mem=8 * GiB, occupied=slots(cpu=busy))
        for name, busy in (("a", 1), ("b", 3), ("c", 2))
    ]
    big = session(
        1,
        slots(cpu=4),
        slots(cpu=4),
        cluster_mode=ClusterMode.MULTI_NODE,
        created_at=NOW - timedelta(hours=1),
    )
    result = run([big, session(2, user=2), session(3, user=3)], agents, engine, options=options)
    assert "holding a, c for it" in not_scheduled(result, 1).msg
    assert set(result.allocated_slots) == {AgentId("b")}


def test_drf_starts_the_user_with_the_lowest_dominant_share(engine: str) -> None:
    running = (
        RunningSession(
            sid(90), AccessKey("AK1"), uuid.UUID(int=1), GROUP, "default", "default", slots(cpu=4)
        ),
        RunningSession(
            sid(91),
            AccessKey("AK2"),
            uuid.UUID(int=2),
            GROUP,
            "default",
            "default",
            slots(mem=2 * GiB),
        ),
    )
    # capacity cpu 10, mem 10 GiB: user 1 holds 40 % cpu, user 2 20 % mem, user 3 nothing.
    pending = [session(1, user=1), session(2, user=2), session(3, user=3), session(4, user=3)]
    options = SchedulerOptions.parse({"sequencer": "drf"})
    result = run(
        pending, [agent("a", cpu=10, mem=10 * GiB)], engine, options=options, running=running
    )
    # User 3 (0) first; then user 3 holds 10 % of cpu and mem and stays lowest;
    # then user 2 (20 %), then user 1 (40 %).
    assert started(result) == [3, 4, 2, 1]


def test_drf_ties_go_in_fifo_order_and_zero_capacity_slots_are_skipped(engine: str) -> None:
    running = (
        RunningSession(
            sid(90),
            AccessKey("AK1"),
            uuid.UUID(int=1),
            GROUP,
            "default",
            "default",
            slots(cuda_device=3),
        ),
    )
    pending = [session(3, user=2), session(2, user=1), session(1, user=3)]
    options = SchedulerOptions.parse({"sequencer": "drf"})
    result = run(
        pending, [agent("a", cpu=2, mem=8 * GiB)], engine, options=options, running=running
    )
    # cuda.device has no capacity here, so user 1's share is 0 like everyone's: FIFO.
    assert started(result) == [1, 2]


def test_dominant_share_uses_decimal_division() -> None:
    capacity = ResourceSlot({"cpu": 3, "mem": 10, "cuda.device": 0})
    assert dominant_share(
        ResourceSlot({"cpu": 1, "mem": 2, "cuda.device": 5}), capacity
    ) == Decimal(1) / Decimal(3)
    assert dominant_share(ResourceSlot(), capacity) == 0


# --- the pass as a whole ----------------------------------------------------


def test_one_pass_starts_every_session_that_fits(engine: str) -> None:
    agents = [agent(f"a{i:02d}", cpu=16, mem=64 * GiB) for i in range(20)]
    pending = [session(n, slots(cpu=2, mem=4 * GiB)) for n in range(1, 201)]
    result = run(pending, agents, engine)
    assert len(result.scheduled) == 160  # 20 agents x 8 sessions
    assert all(s.retries == 1 for s in result.decisions if isinstance(s, NotScheduled))
    for agent_id, occupied in result.occupied_slots.items():
        assert occupied == slots(cpu=16, mem=32 * GiB), agent_id
        assert result.container_counts[agent_id] == 8


def test_result_reports_new_occupancy_and_allocations(engine: str) -> None:
    busy = agent("a", cpu=8, mem=8 * GiB, occupied=slots(cpu=2, mem=GiB))
    busy = AgentInfo(**{**_fields(busy), "container_count": 3})
    pending = [session(1, slots(cpu=1, mem=GiB), slots(cpu=2, mem=GiB))]
    result = run(pending, [busy], engine)
    assert result.decision_for(sid(1)) == Scheduled(
        sid(1), "default", (AgentId("a"), AgentId("a")), tuple(p.name for p in PREDICATES)
    )
    assert result.allocated_slots == {"a": slots(cpu=3, mem=2 * GiB)}
    assert result.occupied_slots == {"a": slots(cpu=5, mem=3 * GiB)}
    assert result.container_counts == {"a": 5}


def test_malformed_sessions_get_errors_and_the_pass_goes_on(engine: str) -> None:
    naive = session(2, created_at=datetime(2024, 1, 1))
    pending = [
        session(1, priority=101),
        naive,
        session(3, slots(cpu=1), ResourceSlot({"cpu": -1})),
        session(4, kernels=()),
        session(5),
        session(5),
        session(6, user=9, access_key=AccessKey("AK-no-policy")),
        session(7),
    ]
    result = schedule(
        SchedulingInput(
            now=NOW,
            pending=tuple(pending),
            agents=(agent("a", cpu=8, mem=8 * GiB),),
            keypair_policies={AccessKey("AK1"): UNLIMITED},
        ),
        engine=engine,
    )
    assert started(result) == [5, 7]
    errors = {d.session_id.int: d.msg for d in result.decisions if isinstance(d, SchedulerError)}
    assert set(errors) == {1, 2, 3, 4, 5, 6}
    assert "priority" in errors[1] and "101" in errors[1]
    assert "created_at" in errors[2]
    assert "kernels[1].cpu" in errors[3]
    assert "kernels" in errors[4]
    assert "listed twice" in errors[5]
    assert "no keypair resource policy" in errors[6] and "AK-no-policy" in errors[6]
    assert result.decision_for(sid(6)).status_data()["error"] == errors[6]  # type: ignore[union-attr]


def test_a_bug_in_one_session_becomes_its_scheduler_error(engine: str) -> None:
    # A policy object of the wrong shape makes its predicate raise AttributeError.
    broken: Any = {"total_resource_slots": "not a policy"}
    pending = [session(1, user=1), session(2, user=2)]
    result = run(
        pending, [agent("a", cpu=8, mem=8 * GiB)], engine, policies={AccessKey("AK1"): broken}
    )
    assert started(result) == [2]
    error = result.decision_for(sid(1))
    assert isinstance(error, SchedulerError) and "KeypairPolicy" in error.msg


def test_malformed_agents_and_running_sessions_are_reported_and_left_out(engine: str) -> None:
    bad_agent = agent("bad", cpu=8, mem=8 * GiB, occupied=ResourceSlot({"cpu": -3}))
    bad_running = RunningSession(
        sid(90), AccessKey(""), uuid.UUID(int=1), GROUP, "default", "default", slots(cpu=1)
    )
    pending = [session(1)]
    result = run(
        pending, [bad_agent, agent("good", cpu=8, mem=8 * GiB)], engine, running=(bad_running,)
    )
    assert result.decision_for(sid(1)) == Scheduled(
        sid(1), "default", (AgentId("good"),), tuple(p.name for p in PREDICATES)
    )
    running_error, agent_error = result.input_errors
    assert "'bad'" in agent_error and "occupied_slots.cpu" in agent_error
    assert str(sid(90)) in running_error and "access_key" in running_error


def test_validate_pending_and_check_satisfiable_for_the_api() -> None:
    with pytest.raises(InvalidSchedulingInput, match="priority"):
        validate_pending(session(1, priority=-1))
    agents = [
        agent("a", cpu=8, mem=8 * GiB),
        agent("b", cpu=8, mem=8 * GiB, architecture="aarch64"),
    ]
    check_satisfiable(session(1, slots(cpu=8, mem=8 * GiB)), agents)
    with pytest.raises(UnsatisfiableRequest, match="provides this slot") as info:
        check_satisfiable(session(1, slots(cpu=1, tpu_device=1)), agents)
    assert info.value.value == "tpu.device"
    with pytest.raises(UnsatisfiableRequest, match="more than any agent"):
        check_satisfiable(session(1, slots(cpu=5), slots(cpu=5)), agents)
    check_satisfiable(
        session(1, slots(cpu=5), slots(cpu=5), cluster_mode=ClusterMode.MULTI_NODE), agents
    )
    with pytest.raises(UnsatisfiableRequest, match="architecture"):
        check_satisfiable(session(1, architecture="riscv64"), agents)


def test_sessions_of_other_resource_groups_use_their_own_agents(engine: str) -> None:
    agents = [agent("a", cpu=1, mem=GiB), agent("b", cpu=1, mem=GiB, resource_group="gpu")]
    pending = [session(1), session(2, resource_group="gpu"), session(3, resource_group="none")]
    result = run(pending, agents, engine)
    assert {d.session_id.int: d.agents for d in result.scheduled} == {1: ("a",), 2: ("b",)}
    assert "no schedulable agent" in not_scheduled(result, 3).msg


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}
