"""Reading a kernel's statistics sample (``last_stat``): one measure's value as a number.

A sample maps each metric (``cpu_used``, ``cpu_util``, ``mem``, ``io_read``,
...) to a measure whose values are decimal strings (``current``,
``capacity``, ``pct``, ``stats.max``).  :func:`stat_value` reads one of them
for the agent's metrics, the manager's idle checker and usage reports, and
``bai ps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["stat_value"]


def stat_value(stat: Mapping[str, Any] | None, metric: str, key: str = "current") -> Decimal | None:
    """*metric*'s *key* in *stat* as a number; None when absent or not a number."""
    measure = stat.get(metric) if isinstance(stat, Mapping) else None
    if not isinstance(measure, Mapping) or measure.get(key) is None:
        return None
    try:
        value = Decimal(str(measure[key]))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
