"""Pure idle rules: which checkers run, and when a session has run out of time.

Three checkers of the original are judged here:

``network_timeout``
    An interactive session nobody used for ``idle_timeout`` seconds of its
    keypair's resource policy ends with the reason ``idle-timeout``.  Use
    is an execute call, a terminal message or bytes through a proxy (the
    ``last_access`` the manager records); before the first use the clock
    starts when the session became RUNNING.  Batch sessions are never idle:
    their own ``batch_timeout`` bounds them.
``session_lifetime``
    A session older than ``max_session_lifetime`` seconds of the policy ends
    with the reason ``idle-session-lifetime``, counted from its creation as
    the original does.
``utilization``
    A session whose average use of what it holds stays below the thresholds
    of ``config/idle/checkers/utilization`` for a whole window ends with the
    reason ``idle-utilization`` (:mod:`bai.manager.idle.utilization`).

A limit of 0 (the default policy's) means no limit.  Inference sessions are
never idle: their endpoint decides how long they live.  The shared config
chooses the checkers as the original's etcd keys do:
``config/idle/enabled`` lists them (a comma-separated string or a list; an
empty value turns idle reclaim off); when the key is absent all run, because
a policy limit an administrator set is meant to be enforced (utilization has
no thresholds until configured, so it ends nothing by default).
``config/idle/checkers/network_timeout/threshold`` is the fallback idle
timeout of a policy whose ``idle_timeout`` is negative (none of bai's: the
column refuses negatives; kept for configs made for the original).

:func:`judge` answers each checker's remaining seconds (negative once it has
run out, as ``idle_checks`` shows them) and the reason to end the session, if
any; :func:`settings_from` checks the shared-config values.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from bai.common.config.errors import DurationParseError
from bai.common.config.values import parse_duration
from bai.common.errors import InvalidValue
from bai.common.types import SessionTypes
from bai.manager.idle.utilization import UtilizationSettings, is_underused, utilization_settings

__all__ = [
    "ENABLED_KEY",
    "THRESHOLD_KEY",
    "CheckReport",
    "Checker",
    "IdleSettings",
    "SessionUse",
    "judge",
    "reports_json",
    "settings_from",
    "utilization_starts",
    "utilization_window",
]

#: Shared-config keys, as the original's etcd names them.
ENABLED_KEY: Final = "config/idle/enabled"
THRESHOLD_KEY: Final = "config/idle/checkers/network_timeout/threshold"
#: The original's default fallback idle timeout.
_DEFAULT_THRESHOLD: Final = 600.0


class Checker(enum.StrEnum):
    """An idle checker, by the name the shared config and ``idle_checks`` use."""

    NETWORK_TIMEOUT = "network_timeout"
    SESSION_LIFETIME = "session_lifetime"
    UTILIZATION = "utilization"

    @property
    def reason(self) -> str:
        """The termination reason of a session this checker ends."""
        return _REASONS[self]


_REASONS: Final = {
    Checker.NETWORK_TIMEOUT: "idle-timeout",
    Checker.SESSION_LIFETIME: "idle-session-lifetime",
    Checker.UTILIZATION: "idle-utilization",
}


@dataclass(frozen=True, slots=True)
class IdleSettings:
    """The checkers that run, the fallback idle timeout (seconds), the utilization settings."""

    enabled: frozenset[Checker] = frozenset(Checker)
    threshold: float = _DEFAULT_THRESHOLD
    utilization: UtilizationSettings = field(default_factory=UtilizationSettings)


def settings_from(
    enabled: Any, threshold: Any, utilization: Mapping[str, Any] | None = None
) -> IdleSettings:
    """Settings from the values at :data:`ENABLED_KEY` and :data:`THRESHOLD_KEY` and the
    tree under :data:`~bai.manager.idle.utilization.UTILIZATION_PREFIX`.

    ``None`` stands for an absent key.  A value that cannot be meant raises
    :class:`InvalidValue` naming its key.
    """
    checkers = frozenset(Checker) if enabled is None else _checkers(enabled)
    seconds = _DEFAULT_THRESHOLD
    if threshold is not None:
        try:
            seconds = float(parse_duration(threshold))
        except DurationParseError as exc:
            raise InvalidValue(exc.problem, value=threshold, field=THRESHOLD_KEY) from None
    return IdleSettings(checkers, seconds, utilization_settings(utilization or {}))


def _checkers(value: Any) -> frozenset[Checker]:
    names: Iterable[Any]
    if isinstance(value, str):
        names = (part.strip() for part in value.split(","))
    elif isinstance(value, list):
        names = value
    else:
        raise InvalidValue(
            "must be a comma-separated string or a list of checker names",
            value=value,
            field=ENABLED_KEY,
        )
    chosen: set[Checker] = set()
    for name in names:
        if name == "":
            continue
        try:
            chosen.add(Checker(name))
        except ValueError:
            known = ", ".join(c.value for c in Checker)
            raise InvalidValue(
                f"names an unknown idle checker (bai has {known})", value=name, field=ENABLED_KEY
            ) from None
    return frozenset(chosen)


@dataclass(frozen=True, slots=True)
class SessionUse:
    """What the rules need to know of one live session."""

    session_type: SessionTypes
    created_at: datetime
    #: When the session's status last changed: for a RUNNING session, when it started running.
    running_since: datetime
    last_access: datetime | None
    idle_timeout: float
    max_session_lifetime: float
    #: The slots the session holds, for the utilization checker.
    occupied: Mapping[str, Decimal] = field(default_factory=dict)
    #: Its running kernels, whose live statistics the utilization checker reads.
    kernel_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One checker's view of one session.

    ``remaining`` is the seconds left (negative once run out) for the
    expiring checkers; for ``utilization`` it is the time until the first
    judgement (the end of the grace period and a first window), as the
    original shows it.  ``expired`` says whether the checker ends the session.
    """

    checker: Checker
    remaining: float
    expired: bool
    extra: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The entry of ``idle_checks`` (the original's shape)."""
        return {
            "remaining": self.remaining,
            "remaining_time_type": (
                "grace_period" if self.checker is Checker.UTILIZATION else "expire_after"
            ),
            "extra": self.extra,
        }


def _expiring(checker: Checker, remaining: float) -> CheckReport:
    return CheckReport(checker, remaining, remaining <= 0)


def utilization_window(use: SessionUse, settings: IdleSettings) -> float:
    """The utilization checker's window for *use*: the policy's ``idle_timeout``, or the
    configured ``time-window`` when that is negative; 0 when the checker does not apply."""
    if Checker.UTILIZATION not in settings.enabled or not settings.utilization.thresholds:
        return 0.0
    if use.session_type == SessionTypes.BATCH:
        return 0.0
    return use.idle_timeout if use.idle_timeout >= 0 else settings.utilization.time_window


def utilization_starts(use: SessionUse, settings: IdleSettings) -> datetime:
    """When *use* is first sampled: its creation plus the initial grace period."""
    return use.created_at + timedelta(seconds=settings.utilization.initial_grace_period)


def judge(
    use: SessionUse,
    settings: IdleSettings,
    now: datetime,
    averages: Mapping[str, float] | None = None,
) -> tuple[dict[Checker, CheckReport], str | None]:
    """Each enabled checker's report on *use* at *now*, and the reason to end it (or None).

    *averages* are the session's utilization averages over its window, None
    while its samples do not span one.  A checker with nothing to enforce (a
    limit of 0, a batch session for the network timeout) gives no report.
    When several have run out, the first in :class:`Checker` order names the
    reason.
    """
    reports: dict[Checker, CheckReport] = {}
    if use.session_type == SessionTypes.INFERENCE:
        # Serving endpoints live as long as their endpoint does, as in the original.
        return reports, None
    if Checker.NETWORK_TIMEOUT in settings.enabled and use.session_type != SessionTypes.BATCH:
        timeout = use.idle_timeout if use.idle_timeout >= 0 else settings.threshold
        if timeout > 0:
            baseline = use.running_since
            if use.last_access is not None and use.last_access > baseline:
                baseline = use.last_access
            remaining = timeout - (now - baseline).total_seconds()
            reports[Checker.NETWORK_TIMEOUT] = _expiring(Checker.NETWORK_TIMEOUT, remaining)
    if Checker.SESSION_LIFETIME in settings.enabled and use.max_session_lifetime > 0:
        remaining = use.max_session_lifetime - (now - use.created_at).total_seconds()
        reports[Checker.SESSION_LIFETIME] = _expiring(Checker.SESSION_LIFETIME, remaining)
    window = utilization_window(use, settings)
    if window > 0:
        first = utilization_starts(use, settings) + timedelta(seconds=window)
        remaining = (first - now).total_seconds()
        underused, extra = False, None
        if averages is not None:
            underused, judged = is_underused(averages, settings.utilization)
            extra = {
                "thresholds_check_operator": settings.utilization.operator.value,
                "resources": {metric: list(pair) for metric, pair in judged.items()},
            }
        reports[Checker.UTILIZATION] = CheckReport(
            Checker.UTILIZATION, remaining if remaining > 0 else -1.0, underused, extra
        )
    expired = [c for c in Checker if c in reports and reports[c].expired]
    return reports, expired[0].reason if expired else None


def reports_json(reports: Mapping[Checker, CheckReport]) -> dict[str, Any]:
    """``idle_checks`` of a session: each checker's entry by name."""
    return {checker.value: report.as_json() for checker, report in reports.items()}
