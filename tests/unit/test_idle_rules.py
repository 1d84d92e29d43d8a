"""The pure idle rules: which checkers run, how much time a session has, and why it ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bai.common.errors import InvalidValue
from bai.common.types import SessionTypes
from bai.manager.idle.rules import (
    ENABLED_KEY,
    THRESHOLD_KEY,
    Checker,
    IdleSettings,
    SessionUse,
    judge,
    reports_json,
    settings_from,
)

T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


def use(
    *,
    idle_timeout: float = 0,
    lifetime: float = 0,
    last_access: datetime | None = None,
    running_since: datetime = T0,
    session_type: SessionTypes = SessionTypes.INTERACTIVE,
) -> SessionUse:
    return SessionUse(
        session_type=session_type,
        created_at=T0 - timedelta(seconds=30),
        running_since=running_since,
        last_access=last_access,
        idle_timeout=idle_timeout,
        max_session_lifetime=lifetime,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_unused_session_runs_out_idle_timeout_seconds_after_it_started() -> None:
    session = use(idle_timeout=600)
    reports, reason = judge(session, IdleSettings(), at(599))
    assert reason is None
    assert reports[Checker.NETWORK_TIMEOUT].remaining == pytest.approx(1)
    reports, reason = judge(session, IdleSettings(), at(600))
    assert reason == "idle-timeout"
    assert reports[Checker.NETWORK_TIMEOUT].remaining == pytest.approx(0)


def test_each_use_restarts_the_idle_clock() -> None:
    session = use(idle_timeout=600, last_access=at(500))
    reports, reason = judge(session, IdleSettings(), at(1000))
    assert reason is None
    assert reports[Checker.NETWORK_TIMEOUT].remaining == pytest.approx(100)


def test_a_use_before_a_restart_does_not_shorten_the_clock() -> None:
    # Running again since t=100 (a restart); the last use was before that.
    session = use(idle_timeout=60, last_access=at(10), running_since=at(100))
    assert judge(session, IdleSettings(), at(150))[1] is None
    assert judge(session, IdleSettings(), at(160))[1] == "idle-timeout"


def test_batch_and_inference_sessions_and_zero_limits_are_never_idle() -> None:
    batch = use(idle_timeout=1, session_type=SessionTypes.BATCH)
    reports, reason = judge(batch, IdleSettings(), at(10_000))
    assert reason is None and reports == {}
    unlimited = use()
    assert judge(unlimited, IdleSettings(), at(10**9)) == ({}, None)
    serving = use(idle_timeout=1, lifetime=1, session_type=SessionTypes.INFERENCE)
    assert judge(serving, IdleSettings(), at(10**9)) == ({}, None)


def test_session_lifetime_counts_from_creation() -> None:
    session = use(lifetime=60)
    reports, reason = judge(session, IdleSettings(), at(29))
    assert reason is None
    assert reports[Checker.SESSION_LIFETIME].remaining == pytest.approx(1)
    assert judge(session, IdleSettings(), at(30))[1] == "idle-session-lifetime"


def test_when_both_run_out_the_network_timeout_names_the_reason() -> None:
    session = use(idle_timeout=10, lifetime=10)
    reports, reason = judge(session, IdleSettings(), at(1000))
    assert reason == "idle-timeout"
    assert reports_json(reports) == {
        "network_timeout": {
            "remaining": pytest.approx(-990),
            "remaining_time_type": "expire_after",
            "extra": None,
        },
        "session_lifetime": {
            "remaining": pytest.approx(-1020),
            "remaining_time_type": "expire_after",
            "extra": None,
        },
    }


def test_a_disabled_checker_neither_reports_nor_ends() -> None:
    only_lifetime = IdleSettings(frozenset({Checker.SESSION_LIFETIME}))
    reports, reason = judge(use(idle_timeout=1), only_lifetime, at(100))
    assert reports == {} and reason is None


def test_a_negative_policy_timeout_falls_back_to_the_threshold() -> None:
    settings = IdleSettings(threshold=30)
    assert judge(use(idle_timeout=-1), settings, at(29))[1] is None
    assert judge(use(idle_timeout=-1), settings, at(30))[1] == "idle-timeout"


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [
        (None, set(Checker)),
        ("network_timeout,session_lifetime,utilization", set(Checker)),
        ("network_timeout,session_lifetime", {Checker.NETWORK_TIMEOUT, Checker.SESSION_LIFETIME}),
        (" session_lifetime ", {Checker.SESSION_LIFETIME}),
        (["network_timeout"], {Checker.NETWORK_TIMEOUT}),
        ("", set()),
        ([], set()),
    ],
)
def test_the_enabled_key_chooses_the_checkers(enabled: object, expected: set[Checker]) -> None:
    assert settings_from(enabled, None).enabled == expected


def test_the_threshold_takes_durations() -> None:
    assert settings_from(None, "10m").threshold == 600
    assert settings_from(None, 90).threshold == 90
    assert settings_from(None, None).threshold == 600


@pytest.mark.parametrize(
    ("enabled", "threshold", "field"),
    [
        ("network_timeout,utilisation", None, ENABLED_KEY),
        (42, None, ENABLED_KEY),
        (None, "ten minutes", THRESHOLD_KEY),
        (None, -5, THRESHOLD_KEY),
    ],
)
def test_values_that_cannot_be_meant_name_their_key(
    enabled: object, threshold: object, field: str
) -> None:
    with pytest.raises(InvalidValue) as caught:
        settings_from(enabled, threshold)
    assert caught.value.field == field
