"""Per-resource-group scheduler options and their validation.

Each resource group picks a *sequencer* (the order in which pending sessions
are tried), an *agent selector* (which agent a kernel goes to), the FIFO
head-of-line blocking avoidance threshold, the wait after which a session
that does not fit gets agents held for it, and the order in which resource
slots are compared when agents are ranked.

Guarantees: a :class:`SchedulerOptions` that exists is valid (construction
validates); :meth:`SchedulerOptions.parse` turns a configuration mapping into
one or raises :class:`SchedulerConfigError` naming the key and the value.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from bai.common.config import parse_duration
from bai.common.errors import InvalidValue

__all__ = [
    "DEFAULT_OPTIONS",
    "AgentSelector",
    "SchedulerConfigError",
    "SchedulerOptions",
    "Sequencer",
]


class SchedulerConfigError(InvalidValue):
    """A scheduler option was missing a valid value; the message names key and value."""


class Sequencer(enum.StrEnum):
    """How pending sessions of one priority are ordered.

    Higher priority always goes first; the sequencer orders sessions of equal
    priority.
    """

    #: Oldest first; a session that cannot be placed holds back the ones after it
    #: (head-of-line blocking), unless ``num_retries_to_skip`` pushes it back.
    FIFO = "fifo"
    #: Newest first; a session that cannot be placed is skipped.
    LIFO = "lifo"
    #: Dominant resource fairness: the user with the lowest dominant share first,
    #: ties oldest first; a session that cannot be placed is skipped.
    DRF = "drf"


class AgentSelector(enum.StrEnum):
    """How the agent for a kernel is chosen among the agents it fits on."""

    #: Pack: the fitting agent with the fewest free resources.
    CONCENTRATED = "concentrated"
    #: Spread: the fitting agent with the most free resources.
    DISPERSED = "dispersed"
    #: The next fitting agent (by agent id) after the one picked last in the group.
    ROUNDROBIN = "roundrobin"


#: The largest ``num_retries_to_skip`` accepted; anything larger is a typo.
MAX_RETRIES_TO_SKIP: Final = 1_000_000
#: The default ``reserve_after``: ten minutes of waiting.
DEFAULT_RESERVE_AFTER: Final = 600.0
_PRIORITY_ENTRY_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
_E = TypeVar("_E", bound=enum.StrEnum)
_KEYS: Final = (
    "sequencer",
    "agent_selector",
    "num_retries_to_skip",
    "reserve_after",
    "resource_priority",
)
# The keys of Backend.AI's ``scheduler_opts.config`` read here.
_CONFIG_KEYS: Final = ("num_retries_to_skip", "reserve_after")
# Backend.AI's scheduler_opts keys read here, and those other parts of the manager read.
_OPTS_KEYS: Final = {
    "agent_selection_strategy": "agent_selector",
    "agent_selection_resource_priority": "resource_priority",
}
_OPTS_ELSEWHERE: Final = ("allowed_session_types", "pending_timeout")


@dataclass(frozen=True, slots=True)
class SchedulerOptions:
    """The scheduler options of one resource group.

    ``num_retries_to_skip`` applies to FIFO only: ``0`` is strict FIFO; ``n > 0``
    pushes a session that has been tried ``n`` times without starting to the
    end of its priority, where it neither blocks nor is blocked.

    ``reserve_after`` (seconds; ``0`` turns it off) guards against starvation
    with every sequencer: a session pending at least this long is *starving*.
    Starving sessions are tried before the other sessions of their priority,
    oldest first, and one that still cannot be placed gets agents held for
    it: the pass starts nothing more on them, so they drain until it fits.

    ``resource_priority`` lists slot names (``"cuda.device"``) or device names
    (``"cuda"``, meaning every ``cuda.*`` slot) in the order agents' free
    resources are compared; slots it does not list follow in name order.
    Empty means accelerators (every slot other than ``cpu`` and ``mem``, in
    name order), then ``cpu``, then ``mem``.
    """

    sequencer: Sequencer = Sequencer.FIFO
    agent_selector: AgentSelector = AgentSelector.DISPERSED
    num_retries_to_skip: int = 0
    reserve_after: float = DEFAULT_RESERVE_AFTER
    resource_priority: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sequencer", _enum(Sequencer, self.sequencer, "sequencer"))
        object.__setattr__(
            self, "agent_selector", _enum(AgentSelector, self.agent_selector, "agent_selector")
        )
        retries = self.num_retries_to_skip
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise SchedulerConfigError(
                "must be a non-negative integer", value=retries, field="num_retries_to_skip"
            )
        if not 0 <= retries <= MAX_RETRIES_TO_SKIP:
            raise SchedulerConfigError(
                f"must be between 0 and {MAX_RETRIES_TO_SKIP}",
                value=retries,
                field="num_retries_to_skip",
            )
        if retries and self.sequencer is not Sequencer.FIFO:
            raise SchedulerConfigError(
                f"applies to the fifo sequencer only, not {self.sequencer.value}",
                value=retries,
                field="num_retries_to_skip",
            )
        try:
            reserve_after = float(parse_duration(self.reserve_after))
        except InvalidValue as exc:
            raise SchedulerConfigError(
                exc.problem, value=self.reserve_after, field="reserve_after"
            ) from None
        object.__setattr__(self, "reserve_after", reserve_after)
        object.__setattr__(self, "resource_priority", _priority(self.resource_priority))

    @classmethod
    def parse(cls, raw: object) -> SchedulerOptions:
        """Build options from a configuration mapping.

        Keys: ``sequencer`` (``fifo``, ``lifo``, ``drf``), ``agent_selector``
        (``concentrated``, ``dispersed``, ``roundrobin``), ``num_retries_to_skip``
        (non-negative int), ``reserve_after`` (seconds or a duration such as
        ``"10m"``) and ``resource_priority`` (list of slot or device names);
        each may be left out for its default.  Unknown keys, wrong
        types and bad values raise :class:`SchedulerConfigError`.
        """
        if not isinstance(raw, Mapping):
            raise SchedulerConfigError("scheduler options must be a mapping", value=raw)
        for key in raw:
            if key not in _KEYS:
                raise SchedulerConfigError(
                    f"unknown scheduler option (known: {', '.join(_KEYS)})", value=key
                )
        priority = raw.get("resource_priority", ())
        if isinstance(priority, str) or not isinstance(priority, list | tuple):
            raise SchedulerConfigError(
                "must be a list of slot or device names", value=priority, field="resource_priority"
            )
        return cls(
            sequencer=raw.get("sequencer", Sequencer.FIFO),
            agent_selector=raw.get("agent_selector", AgentSelector.DISPERSED),
            num_retries_to_skip=raw.get("num_retries_to_skip", 0),
            reserve_after=raw.get("reserve_after", DEFAULT_RESERVE_AFTER),
            resource_priority=tuple(priority),
        )

    @classmethod
    def from_resource_group(cls, scheduler: object, scheduler_opts: object) -> SchedulerOptions:
        """Build options from a resource group's ``scheduler`` and ``scheduler_opts`` columns.

        ``scheduler`` names the sequencer.  ``scheduler_opts`` uses Backend.AI's
        layout: ``agent_selection_strategy`` (the selector),
        ``agent_selection_resource_priority`` (the resource priority) and
        ``config.num_retries_to_skip`` and ``config.reserve_after``; its
        ``allowed_session_types`` and ``pending_timeout`` belong to the
        enqueue path and are not read here.  Other keys raise :class:`SchedulerConfigError`.
        """
        if not isinstance(scheduler_opts, Mapping):
            raise SchedulerConfigError(
                "must be a JSON object", value=scheduler_opts, field="scheduler_opts"
            )
        raw: dict[str, object] = {"sequencer": scheduler}
        for key, value in scheduler_opts.items():
            if key in _OPTS_ELSEWHERE:
                continue
            if key == "config":
                if not isinstance(value, Mapping):
                    raise SchedulerConfigError(
                        "must be a JSON object", value=value, field="scheduler_opts.config"
                    )
                for config_key, config_value in value.items():
                    if config_key not in _CONFIG_KEYS:
                        raise SchedulerConfigError(
                            f"unknown scheduler config key (known: {', '.join(_CONFIG_KEYS)})",
                            value=config_key,
                            field="scheduler_opts.config",
                        )
                    raw[config_key] = config_value
            elif key in _OPTS_KEYS:
                raw[_OPTS_KEYS[key]] = value
            else:
                known = ", ".join(["config", *_OPTS_KEYS, *_OPTS_ELSEWHERE])
                raise SchedulerConfigError(
                    f"unknown scheduler option (known: {known})", value=key, field="scheduler_opts"
                )
        return cls.parse(raw)

    def to_json(self) -> dict[str, object]:
        """Return the mapping that :meth:`parse` reads back to equal options."""
        return {
            "sequencer": self.sequencer.value,
            "agent_selector": self.agent_selector.value,
            "num_retries_to_skip": self.num_retries_to_skip,
            "reserve_after": self.reserve_after,
            "resource_priority": list(self.resource_priority),
        }


def _enum(kind: type[_E], value: object, field: str) -> _E:
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    known = ", ".join(member.value for member in kind)
    raise SchedulerConfigError(f"unknown {field} (known: {known})", value=value, field=field)


def _priority(entries: object) -> tuple[str, ...]:
    if not isinstance(entries, tuple):
        raise SchedulerConfigError(
            "must be a tuple of slot or device names", value=entries, field="resource_priority"
        )
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, str) or _PRIORITY_ENTRY_RE.fullmatch(entry) is None:
            raise SchedulerConfigError(
                "each entry must be a slot or device name such as 'cuda' or 'cuda.device'",
                value=entry,
                field="resource_priority",
            )
        if entry in seen:
            raise SchedulerConfigError(
                "lists the same name twice", value=entry, field="resource_priority"
            )
        seen.add(entry)
    return entries


#: The options of a resource group that configures none.
DEFAULT_OPTIONS: Final = SchedulerOptions()
