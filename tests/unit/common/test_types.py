"""Status transition tables and session status derivation."""

from __future__ import annotations

import itertools

import pytest

from bai.common.types import (
    KERNEL_TRANSITIONS,
    SESSION_TRANSITIONS,
    ClusterMode,
    InvalidTransition,
    KernelStatus,
    SessionResult,
    SessionStatus,
    SessionTypes,
    SlotTypes,
    check_transition,
    derive_session_status,
    is_terminal,
)

S = SessionStatus
K = KernelStatus

HAPPY_PATH = [
    S.PENDING,
    S.SCHEDULED,
    S.PREPARING,
    S.PULLING,
    S.PREPARED,
    S.CREATING,
    S.RUNNING,
    S.TERMINATING,
    S.TERMINATED,
]


def test_wire_values_match_the_spec() -> None:
    assert SessionTypes("interactive") is SessionTypes.INTERACTIVE
    assert {t.value for t in SessionTypes} == {"interactive", "batch", "inference", "system"}
    assert ClusterMode("single-node") is ClusterMode.SINGLE_NODE
    assert ClusterMode("multi-node") is ClusterMode.MULTI_NODE
    assert [r.value for r in SessionResult] == ["UNDEFINED", "SUCCESS", "FAILURE"]
    assert {t.value for t in SlotTypes} == {"count", "bytes", "unique"}
    assert S("RUNNING_DEGRADED") is S.RUNNING_DEGRADED
    assert [s.value for s in S] == [k.value for k in K]


def test_the_normal_lifecycle_is_allowed() -> None:
    for old, new in itertools.pairwise(HAPPY_PATH):
        check_transition(old, new)
        check_transition(K(old.value), K(new.value))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.PENDING, S.RUNNING),
        (S.PENDING, S.TERMINATED),
        (S.TERMINATED, S.RUNNING),
        (S.CANCELLED, S.PENDING),
        (S.RUNNING, S.PENDING),
        (S.TERMINATING, S.RUNNING),
        (S.RUNNING, S.CANCELLED),
        (S.RUNNING, S.RUNNING),
    ],
)
def test_forbidden_transitions_raise_a_typed_error(old: SessionStatus, new: SessionStatus) -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition(old, new)
    assert info.value.old is old and info.value.new is new
    assert old.value in str(info.value) and new.value in str(info.value)
    assert "session" in str(info.value)


def test_final_statuses_say_so_in_the_error() -> None:
    with pytest.raises(InvalidTransition, match="final status"):
        check_transition(K.TERMINATED, K.RUNNING)


def test_session_and_kernel_statuses_do_not_mix() -> None:
    with pytest.raises(TypeError):
        check_transition(S.PENDING, K.SCHEDULED)


@pytest.mark.parametrize("table", [SESSION_TRANSITIONS, KERNEL_TRANSITIONS])
def test_every_status_can_still_reach_an_end(table: dict) -> None:  # type: ignore[type-arg]
    """Nothing may get stuck: from every status a final one is reachable."""
    for start in table:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in table[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert any(is_terminal(s) for s in seen), start


def test_pending_work_can_be_cancelled_but_started_work_must_terminate() -> None:
    check_transition(S.PENDING, S.CANCELLED)
    check_transition(S.CREATING, S.TERMINATING)
    check_transition(S.ERROR, S.TERMINATING)
    with pytest.raises(InvalidTransition):
        check_transition(S.RUNNING, S.CANCELLED)


@pytest.mark.parametrize(
    ("kernels", "expected"),
    [
        ([K.RUNNING], S.RUNNING),
        ([K.RUNNING, K.RUNNING, K.RUNNING], S.RUNNING),
        ([K.RUNNING, K.CREATING], S.CREATING),
        ([K.PENDING, K.PREPARING, K.RUNNING], S.PENDING),
        ([K.PULLING, K.PREPARED], S.PULLING),
        ([K.RUNNING, K.ERROR], S.ERROR),
        ([K.TERMINATED, K.ERROR], S.ERROR),
        ([K.TERMINATED, K.CANCELLED], S.TERMINATED),
        ([K.TERMINATING, K.TERMINATED], S.TERMINATING),
        ([K.RUNNING, K.RESTARTING], S.RESTARTING),
        ([K.RUNNING, K.TERMINATED], S.RUNNING_DEGRADED),
        ([K.RUNNING_DEGRADED, K.RUNNING], S.RUNNING_DEGRADED),
        ([K.CREATING, K.TERMINATED], S.TERMINATING),
    ],
)
def test_session_status_follows_its_kernels(
    kernels: list[KernelStatus], expected: SessionStatus
) -> None:
    assert derive_session_status(kernels) is expected
    assert derive_session_status(reversed(kernels)) is expected


def test_a_session_without_kernels_has_no_status() -> None:
    with pytest.raises(ValueError):
        derive_session_status([])
