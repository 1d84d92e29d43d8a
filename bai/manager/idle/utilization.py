"""Pure rules of the ``utilization`` idle checker: a session that does not use what it holds.

Configured under ``config/idle/checkers/utilization`` as the original's etcd
keys are (see :func:`utilization_settings`):

``resource-thresholds``
    ``{METRIC: {"average": PERCENT}}`` for the metrics ``cpu_util``,
    ``mem``, ``cuda_util``, ``cuda_mem`` and ``atom_mem``.  Without any, the
    checker never ends a session.
``thresholds-check-operator``
    ``and`` (the default): the session is idle when every configured metric
    averaged below its threshold; ``or``: when any one did.
``time-window``
    The averaging window for a policy whose ``idle_timeout`` is negative;
    otherwise the policy's ``idle_timeout`` is the window, and 0 turns the
    checker off for that policy, as in the original.
``initial-grace-period``
    Seconds after a session's creation during which it is neither sampled
    nor judged (default 5 minutes).

Metrics of a slot the session holds none of (``cuda_util`` of a session
without GPUs) are left out of the decision.  A metric is a percentage: the
``pct`` of a kernel's live statistics, averaged over the session's kernels;
memory is the kernels' memory in use over the session's ``mem`` slot.
:class:`UtilizationSeries` keeps one session's samples; a decision needs
samples that cover a whole window.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from bai.common.config.errors import DurationParseError
from bai.common.config.values import parse_duration
from bai.common.errors import InvalidValue
from bai.common.livestat import stat_value

__all__ = [
    "METRICS",
    "UTILIZATION_PREFIX",
    "ThresholdOperator",
    "UtilizationSeries",
    "UtilizationSettings",
    "current_utilization",
    "is_underused",
    "utilization_settings",
]

#: Where the checker's settings live in the shared config.
UTILIZATION_PREFIX: Final = "config/idle/checkers/utilization"
#: Each metric by the slot whose allocation makes it count (the original's map).
_SLOT_OF_METRIC: Final = {
    "cpu_util": "cpu",
    "mem": "mem",
    "cuda_util": "cuda",
    "cuda_mem": "cuda",
    "atom_mem": "atom",
}
#: The metrics a threshold may name.
METRICS: Final = tuple(_SLOT_OF_METRIC)


class ThresholdOperator(enum.StrEnum):
    """How the per-metric verdicts combine."""

    AND = "and"
    OR = "or"


@dataclass(frozen=True, slots=True)
class UtilizationSettings:
    """The checker's settings: average thresholds in percent, how they combine, windows."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    operator: ThresholdOperator = ThresholdOperator.AND
    time_window: float = 600.0
    initial_grace_period: float = 300.0


def _field(name: str) -> str:
    return f"{UTILIZATION_PREFIX}/{name}"


def _seconds(tree: Mapping[str, Any], name: str, default: float) -> float:
    value = tree.get(name)
    if value is None:
        return default
    try:
        return float(parse_duration(value))
    except DurationParseError as exc:
        raise InvalidValue(exc.problem, value=value, field=_field(name)) from None


def _percent(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidValue("must be a number of percent", value=value, field=where)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidValue("must be a number of percent", value=value, field=where) from None
    if not number.is_finite() or number < 0:
        raise InvalidValue("must be a percentage of 0 or more", value=value, field=where)
    return float(number)


def utilization_settings(tree: Mapping[str, Any]) -> UtilizationSettings:
    """Settings from the tree under :data:`UTILIZATION_PREFIX` (empty: the defaults).

    A value that cannot be meant raises :class:`InvalidValue` naming its key.
    """
    raw = tree.get("resource-thresholds") or {}
    if not isinstance(raw, Mapping):
        raise InvalidValue(
            "must map metrics to {average: percent}", value=raw, field=_field("resource-thresholds")
        )
    thresholds: dict[str, float] = {}
    for metric, limit in raw.items():
        where = _field(f"resource-thresholds/{metric}")
        if metric not in _SLOT_OF_METRIC:
            raise InvalidValue(
                f"is not a utilization metric (bai knows {', '.join(METRICS)})",
                value=metric,
                field=where,
            )
        if limit is None:
            continue
        if not isinstance(limit, Mapping) or "average" not in limit:
            raise InvalidValue("must be {average: percent}", value=limit, field=where)
        if limit["average"] is not None:
            thresholds[metric] = _percent(limit["average"], f"{where}/average")
    operator_value = tree.get("thresholds-check-operator", ThresholdOperator.AND.value)
    try:
        operator = ThresholdOperator(str(operator_value).lower())
    except ValueError:
        raise InvalidValue(
            "must be and or or", value=operator_value, field=_field("thresholds-check-operator")
        ) from None
    return UtilizationSettings(
        thresholds=thresholds,
        operator=operator,
        time_window=_seconds(tree, "time-window", 600.0),
        initial_grace_period=_seconds(tree, "initial-grace-period", 300.0),
    )


def _number(stat: Mapping[str, Any], metric: str, key: str) -> float | None:
    value = stat_value(stat, metric, key)
    return None if value is None else float(value)


def current_utilization(
    samples: Sequence[Mapping[str, Any]], occupied: Mapping[str, Decimal], metrics: Sequence[str]
) -> dict[str, float]:
    """The session's utilization now, in percent, for each of *metrics* it can be judged on.

    *samples* are the live statistics of its kernels; *occupied* its slots.
    A metric whose slot the session does not hold, or that no kernel
    reports, is left out.
    """
    held = {slot.split(".")[0] for slot, amount in occupied.items() if amount > 0}
    found: dict[str, float] = {}
    for metric in metrics:
        if _SLOT_OF_METRIC[metric] not in held or not samples:
            continue
        if metric == "mem":
            used = [_number(stat, "mem", "current") for stat in samples]
            capacity = float(occupied.get("mem", 0))
            if capacity > 0 and all(value is not None for value in used):
                found[metric] = sum(v for v in used if v is not None) / capacity * 100
            continue
        shares = [_number(stat, metric, "pct") for stat in samples]
        if all(value is not None for value in shares):
            found[metric] = sum(v for v in shares if v is not None) / len(shares)
    return found


class UtilizationSeries:
    """One session's utilization samples over the last window (oldest first)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[datetime, dict[str, float]]] = deque()
        self.first: datetime | None = None

    def add(self, when: datetime, sample: dict[str, float], keep: float) -> None:
        """Add the sample taken at *when*; forget those older than *keep* seconds."""
        if self.first is None:
            self.first = when
        self._samples.append((when, sample))
        oldest = when - timedelta(seconds=keep)
        while self._samples and self._samples[0][0] < oldest:
            self._samples.popleft()

    def averages(self, now: datetime, window: float) -> dict[str, float] | None:
        """Each metric's average over the last *window* seconds; None until the samples
        span a whole window."""
        if self.first is None or (now - self.first).total_seconds() < window:
            return None
        since = now - timedelta(seconds=window)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for when, sample in self._samples:
            if when < since:
                continue
            for metric, value in sample.items():
                sums[metric] = sums.get(metric, 0.0) + value
                counts[metric] = counts.get(metric, 0) + 1
        return {metric: sums[metric] / counts[metric] for metric in sums}


def is_underused(
    averages: Mapping[str, float], settings: UtilizationSettings
) -> tuple[bool, dict[str, tuple[float, float]]]:
    """Whether *averages* fall short of the thresholds as the operator combines them, and
    the ``(average, threshold)`` of each metric judged."""
    judged = {
        metric: (averages[metric], limit)
        for metric, limit in settings.thresholds.items()
        if metric in averages
    }
    if not judged:
        return False, judged
    below = [average < limit for average, limit in judged.values()]
    if settings.operator is ThresholdOperator.OR:
        return any(below), judged
    return all(below), judged
