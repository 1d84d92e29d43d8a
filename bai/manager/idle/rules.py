"""Pure idle rules: which checkers run, and when a session has run out of time.

Two checkers of the original are judged here:

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

A limit of 0 (the default policy's) means no limit.  The shared config
chooses the checkers as the original's etcd keys do:
``config/idle/enabled`` lists them (a comma-separated string or a list; an
empty value turns idle reclaim off); when the key is absent both run, because
a policy limit an administrator set is meant to be enforced.
``config/idle/checkers/network_timeout/threshold`` is the fallback idle
timeout of a policy whose ``idle_timeout`` is negative (none of bai's: the
column refuses negatives; kept for configs made for the original).

:func:`judge` answers each checker's remaining seconds (negative once it has
run out, as ``idle_checks`` shows them) and the reason to end the session, if
any; :func:`settings_from` checks the shared-config values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from bai.common.config.errors import DurationParseError
from bai.common.config.values import parse_duration
from bai.common.errors import InvalidValue
from bai.common.types import SessionTypes

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

    @property
    def reason(self) -> str:
        """The termination reason of a session this checker ends."""
        return _REASONS[self]


_REASONS: Final = {
    Checker.NETWORK_TIMEOUT: "idle-timeout",
    Checker.SESSION_LIFETIME: "idle-session-lifetime",
}


@dataclass(frozen=True, slots=True)
class IdleSettings:
    """The checkers that run and the fallback idle timeout (seconds)."""

    enabled: frozenset[Checker] = frozenset(Checker)
    threshold: float = _DEFAULT_THRESHOLD


def settings_from(enabled: Any, threshold: Any) -> IdleSettings:
    """Settings from the values at :data:`ENABLED_KEY` and :data:`THRESHOLD_KEY`.

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
    return IdleSettings(checkers, seconds)


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


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One checker's view of one session: seconds left (negative once run out)."""

    checker: Checker
    remaining: float

    def as_json(self) -> dict[str, Any]:
        """The entry of ``idle_checks`` (the original's shape)."""
        return {
            "remaining": self.remaining,
            "remaining_time_type": "expire_after",
            "extra": None,
        }


def judge(
    use: SessionUse, settings: IdleSettings, now: datetime
) -> tuple[dict[Checker, CheckReport], str | None]:
    """Each enabled checker's report on *use* at *now*, and the reason to end it (or None).

    A checker with nothing to enforce (a limit of 0, a batch session for the
    network timeout) gives no report.  When several have run out, the first
    in :class:`Checker` order names the reason.
    """
    reports: dict[Checker, CheckReport] = {}
    if Checker.NETWORK_TIMEOUT in settings.enabled and use.session_type != SessionTypes.BATCH:
        timeout = use.idle_timeout if use.idle_timeout >= 0 else settings.threshold
        if timeout > 0:
            baseline = use.running_since
            if use.last_access is not None and use.last_access > baseline:
                baseline = use.last_access
            remaining = timeout - (now - baseline).total_seconds()
            reports[Checker.NETWORK_TIMEOUT] = CheckReport(Checker.NETWORK_TIMEOUT, remaining)
    if Checker.SESSION_LIFETIME in settings.enabled and use.max_session_lifetime > 0:
        remaining = use.max_session_lifetime - (now - use.created_at).total_seconds()
        reports[Checker.SESSION_LIFETIME] = CheckReport(Checker.SESSION_LIFETIME, remaining)
    expired = [c for c in Checker if c in reports and reports[c].remaining <= 0]
    return reports, expired[0].reason if expired else None


def reports_json(reports: Mapping[Checker, CheckReport]) -> dict[str, Any]:
    """``idle_checks`` of a session: each checker's entry by name."""
    return {checker.value: report.as_json() for checker, report in reports.items()}
