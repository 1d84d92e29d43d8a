"""The utilization idle checker's pure rules: settings, samples, windows and verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from bai.common.errors import InvalidValue
from bai.common.types import SessionTypes
from bai.manager.idle.rules import Checker, IdleSettings, SessionUse, judge, reports_json
from bai.manager.idle.utilization import (
    UTILIZATION_PREFIX,
    ThresholdOperator,
    UtilizationSeries,
    UtilizationSettings,
    current_utilization,
    is_underused,
    utilization_settings,
)

T0 = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stat(cpu_pct: float | None = None, mem: int | None = None, **pcts: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cpu_pct is not None:
        out["cpu_util"] = {"current": "0", "capacity": "100", "pct": str(cpu_pct)}
    if mem is not None:
        out["mem"] = {"current": str(mem), "capacity": None}
    for metric, value in pcts.items():
        out[metric] = {"current": "0", "pct": str(value)}
    return out


def test_no_configuration_gives_no_thresholds() -> None:
    settings = utilization_settings({})
    assert settings == UtilizationSettings()
    assert settings.thresholds == {} and settings.operator is ThresholdOperator.AND


def test_the_original_configuration_shape_is_read() -> None:
    settings = utilization_settings(
        {
            "resource-thresholds": {
                "cpu_util": {"average": "30"},
                "mem": {"average": 60},
                "cuda_util": None,
            },
            "thresholds-check-operator": "OR",
            "time-window": "12h",
            "initial-grace-period": "5m",
        }
    )
    assert settings.thresholds == {"cpu_util": 30.0, "mem": 60.0}
    assert settings.operator is ThresholdOperator.OR
    assert settings.time_window == 12 * 3600 and settings.initial_grace_period == 300


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        ({"resource-thresholds": {"gpu_util": {"average": 1}}}, "resource-thresholds/gpu_util"),
        ({"resource-thresholds": {"mem": 50}}, "resource-thresholds/mem"),
        ({"resource-thresholds": {"mem": {"average": -1}}}, "resource-thresholds/mem/average"),
        ({"resource-thresholds": {"mem": {"average": "x"}}}, "resource-thresholds/mem/average"),
        ({"resource-thresholds": ["mem"]}, "resource-thresholds"),
        ({"thresholds-check-operator": "xor"}, "thresholds-check-operator"),
        ({"time-window": "soon"}, "time-window"),
        ({"initial-grace-period": -3}, "initial-grace-period"),
    ],
)
def test_values_that_cannot_be_meant_name_their_key(tree: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        utilization_settings(tree)
    assert caught.value.field == f"{UTILIZATION_PREFIX}/{field}"


def test_current_utilization_averages_kernels_and_counts_memory_against_the_slot() -> None:
    occupied = {"cpu": Decimal(2), "mem": Decimal(400 * MIB)}
    samples = [stat(cpu_pct=10, mem=100 * MIB), stat(cpu_pct=50, mem=100 * MIB)]
    now = current_utilization(samples, occupied, ["cpu_util", "mem", "cuda_util"])
    # No GPU is held, so cuda_util is not judged at all.
    assert now == {"cpu_util": pytest.approx(30), "mem": pytest.approx(50)}


def test_a_metric_some_kernel_does_not_report_is_left_out() -> None:
    occupied = {"cpu": Decimal(1), "mem": Decimal(MIB), "cuda.shares": Decimal("0.5")}
    samples = [stat(cpu_pct=10, cuda_util=5), stat(cpu_pct=20)]
    assert current_utilization(samples, occupied, ["cpu_util", "mem", "cuda_util"]) == {
        "cpu_util": pytest.approx(15)
    }
    assert current_utilization([], occupied, ["cpu_util"]) == {}


def test_a_series_answers_only_once_it_spans_a_window() -> None:
    series = UtilizationSeries()
    for second in range(0, 61, 15):
        series.add(at(second), {"cpu_util": float(second)}, keep=120)
    assert series.averages(at(60), window=90) is None
    averages = series.averages(at(60), window=60)
    assert averages == {"cpu_util": pytest.approx(30)}
    # Only the last window counts.
    assert series.averages(at(60), window=30) == {"cpu_util": pytest.approx(45)}
    series.add(at(150), {"cpu_util": 100.0}, keep=30)
    assert series.averages(at(150), window=30) == {"cpu_util": 100.0}


@pytest.mark.parametrize(
    ("operator", "averages", "underused"),
    [
        (ThresholdOperator.AND, {"cpu_util": 5, "mem": 10}, True),
        (ThresholdOperator.AND, {"cpu_util": 5, "mem": 90}, False),
        (ThresholdOperator.OR, {"cpu_util": 5, "mem": 90}, True),
        (ThresholdOperator.OR, {"cpu_util": 50, "mem": 90}, False),
        (ThresholdOperator.AND, {}, False),
    ],
)
def test_the_operator_combines_the_verdicts(
    operator: ThresholdOperator, averages: dict[str, float], underused: bool
) -> None:
    settings = UtilizationSettings({"cpu_util": 30, "mem": 60}, operator)
    assert is_underused(averages, settings)[0] is underused


def use(idle_timeout: float, session_type: SessionTypes = SessionTypes.INTERACTIVE) -> SessionUse:
    return SessionUse(
        session_type=session_type,
        created_at=T0,
        running_since=T0,
        last_access=None,
        idle_timeout=idle_timeout,
        max_session_lifetime=0,
    )


def settings(**utilization: Any) -> IdleSettings:
    return IdleSettings(
        enabled=frozenset({Checker.UTILIZATION}),
        utilization=UtilizationSettings({"cpu_util": 30.0}, initial_grace_period=60, **utilization),
    )


def test_an_underused_session_ends_with_idle_utilization() -> None:
    reports, reason = judge(use(600), settings(), at(700), {"cpu_util": 3.0})
    assert reason == "idle-utilization"
    assert reports_json(reports) == {
        "utilization": {
            "remaining": -1.0,
            "remaining_time_type": "grace_period",
            "extra": {
                "thresholds_check_operator": "and",
                "resources": {"cpu_util": [3.0, 30.0]},
            },
        }
    }


def test_before_a_full_window_the_report_counts_down_and_nothing_ends() -> None:
    reports, reason = judge(use(600), settings(), at(100), None)
    assert reason is None
    # Grace (60 s) plus a first window (600 s) from creation.
    assert reports[Checker.UTILIZATION].remaining == pytest.approx(560)
    assert reports[Checker.UTILIZATION].extra is None


def test_a_zero_idle_timeout_or_a_batch_session_turns_the_checker_off() -> None:
    assert judge(use(0), settings(), at(10_000), {"cpu_util": 0.0}) == ({}, None)
    batch = use(600, SessionTypes.BATCH)
    assert judge(batch, settings(), at(10_000), {"cpu_util": 0.0}) == ({}, None)
    # A negative policy timeout takes the configured window.
    _, reason = judge(use(-1), settings(time_window=30), at(91), {"cpu_util": 0.0})
    assert reason == "idle-utilization"
