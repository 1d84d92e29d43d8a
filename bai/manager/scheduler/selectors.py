"""Agent selection: where each kernel of a session goes.

A :class:`PlacementTargets` holds the agents of one resource group that one
pass may place kernels on, and tracks their free capacity as sessions are
placed.  Guarantees:

* a kernel only ever goes to an agent of the session's resource group and
  architecture (to the designated agent when the session names one) that is
  schedulable and whose free slots cover the request;
* placement is all-or-nothing: a single-node session puts all its kernels on
  one agent, a multi-node session places kernel by kernel, and if any kernel
  finds no agent, nothing of the session is placed;
* ``concentrated`` (pack) and ``dispersed`` (spread) first prefer agents
  with the fewest kinds of accelerator the session does not ask for (so a
  CPU-only session stays off GPU nodes when it can), then compare the free
  amounts of the requested slots in the group's resource priority order,
  then the container count: ``concentrated`` takes the fitting agent with
  the least free (and the most containers), ``dispersed`` the one with the
  most free (and the fewest containers); ``roundrobin`` takes the first
  fitting agent after the previous pick in agent-id order.  Remaining ties
  go to the smallest agent id;
* :meth:`PlacementTargets.hold_for` holds agents for a starving session that does
  not fit now: nothing else is placed on a held agent for the rest of the pass.

The scan runs in the Cython module ``_binpack`` when it is built (fixed-point
integers inside) and in its pure-Python twin otherwise; both decide
identically, and the Python twin also takes over for a group whose amounts
do not fit in 62 bits.
"""

from __future__ import annotations

import importlib
import math
import os
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Final, Protocol

from bai.common.slots import ResourceSlot
from bai.common.types import AgentId, ClusterMode
from bai.manager.scheduler import _binpack_py
from bai.manager.scheduler.options import AgentSelector, SchedulerConfigError, SchedulerOptions
from bai.manager.scheduler.types import AgentInfo
from bai.manager.scheduler.validation import (
    Candidate,
    Milli,
    normalize_architecture,
    validate_agent,
)

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Placement",
    "PlacementTargets",
    "describe_slots",
    "load_engine",
    "slot_order",
]

_INTRINSIC: Final = ("cpu", "mem")


class _Bins(Protocol):
    def fits(self, agent: int, req: Sequence[Milli], /) -> bool: ...
    def pick(
        self,
        req: Sequence[Milli],
        groups: Sequence[int],
        extras: Sequence[int],
        mode: int,
        after: int,
        /,
    ) -> int: ...
    def row(self, agent: int, /) -> list[Milli]: ...
    def take(self, agent: int, req: Sequence[Milli], kernels: int, /) -> None: ...
    def give(self, agent: int, req: Sequence[Milli], kernels: int, /) -> None: ...


def _find_engines() -> dict[str, ModuleType]:
    engines: dict[str, ModuleType] = {"python": _binpack_py}
    try:
        # By name: an import graph cannot see a compiled module, and would take
        # ``from bai.manager.scheduler import _binpack`` for an import of the
        # package, which imports this module (a cycle that is not there).
        binpack = importlib.import_module("bai.manager.scheduler._binpack")
    except ImportError:
        return engines
    engines["cython"] = binpack
    return engines


#: The agent-fit scan implementations importable here, by name.
ENGINES: Final = _find_engines()
#: The engine a pass uses unless told otherwise: ``"cython"`` when built,
#: except that ``BAI_NO_EXTENSIONS=1`` at import forces ``"python"``.
DEFAULT_ENGINE: Final = (
    "python"
    if os.environ.get("BAI_NO_EXTENSIONS", "").strip() not in ("", "0")
    else ("cython" if "cython" in ENGINES else "python")
)

_MODES: Final = {
    AgentSelector.CONCENTRATED: _binpack_py.CONCENTRATED,
    AgentSelector.DISPERSED: _binpack_py.DISPERSED,
    AgentSelector.ROUNDROBIN: _binpack_py.ROUNDROBIN,
}


def load_engine(name: str | None) -> ModuleType:
    """Return the scan module named *name* (default :data:`DEFAULT_ENGINE`)."""
    if name is None:
        name = DEFAULT_ENGINE
    try:
        return ENGINES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ENGINES))
        raise SchedulerConfigError(
            f"unknown or unavailable scheduler engine (available: {known})",
            value=name,
            field="engine",
        ) from None


def slot_order(names: Iterable[str], priority: Sequence[str]) -> list[str]:
    """Return slot *names* in the order agents' free amounts are compared.

    *priority* entries match a slot name exactly or a device name (``"cuda"``
    matches ``"cuda.device"``, ``"cuda.shares"``, ...); matched slots come in
    entry order (name order within an entry), then the rest in name order.
    With no *priority*: accelerator slots, then ``cpu``, then ``mem``.
    """
    remaining = sorted(set(names))
    if not priority:
        accelerators = [name for name in remaining if name not in _INTRINSIC]
        return accelerators + [name for name in _INTRINSIC if name in remaining]
    ordered: list[str] = []
    for entry in priority:
        matched = [n for n in remaining if n == entry or n.startswith(entry + ".")]
        ordered.extend(matched)
        remaining = [n for n in remaining if n not in matched]
    return ordered + remaining


def describe_slots(slots: ResourceSlot) -> str:
    """Return ``"cpu 2, mem 4 GiB"``: the non-zero amounts of *slots* for a message."""
    parts = [
        f"{key} {text}"
        for key, text in slots.to_humanized().items()
        if slots[key] != 0  # a zero amount asks for nothing
    ]
    return ", ".join(parts) or "nothing"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one session's kernels went (agent index per kernel) and what was taken."""

    agents: tuple[int, ...]
    taken: tuple[tuple[int, tuple[Milli, ...], int], ...]
    roundrobin_before: int


class PlacementTargets:
    """The agents one pass may place a resource group's kernels on, with their free capacity.

    Agents that fail validation are left out and described in *errors*.
    *roundrobin_last* is the agent the round-robin selector picked last in
    this group (it need not be present any more).
    """

    def __init__(
        self,
        resource_group: str,
        agents: Sequence[AgentInfo],
        options: SchedulerOptions,
        engine: ModuleType,
        roundrobin_last: AgentId | None,
        errors: list[str],
    ) -> None:
        self.resource_group = resource_group
        valid: list[tuple[AgentInfo, dict[str, Milli], dict[str, Milli]]] = []
        seen: set[AgentId] = set()
        for agent in agents:
            try:
                capacity_milli, free_milli = validate_agent(agent)
            except Exception as exc:
                errors.append(f"agent {getattr(agent, 'id', agent)!r} left out: {exc}")
                continue
            if agent.id in seen:
                errors.append(f"agent {agent.id!r} left out: listed twice")
                continue
            seen.add(agent.id)
            valid.append((agent, capacity_milli, free_milli))
        valid.sort(key=lambda item: item[0].id)
        #: Valid agents, sorted by id; indices below refer to this list.
        self.agents: list[AgentInfo] = [agent for agent, _, _ in valid]
        self.index: dict[AgentId, int] = {agent.id: i for i, agent in enumerate(self.agents)}
        capacity = ResourceSlot()
        names: set[str] = set()
        provided: set[str] = set()
        for agent, capacity_milli, free_milli in valid:
            capacity = capacity + agent.available_slots
            names.update(free_milli)
            provided.update(key for key, amount in capacity_milli.items() if amount > 0)
        #: The group's total capacity (every valid agent, schedulable or not).
        self.capacity = capacity
        self.provided = frozenset(provided)
        self.slots = slot_order(names, options.resource_priority)
        self._slot_pos = {name: pos for pos, name in enumerate(self.slots)}
        width = len(self.slots)
        rows: list[list[Milli]] = []
        self._capacity_rows: list[list[Milli]] = []
        self._kinds: list[frozenset[str]] = []
        self._held: set[int] = set()
        self.eligible: list[bool] = []
        self.architecture: list[str] = []
        # Groups of eligible agents: one per architecture (for round-robin), and
        # one per architecture and set of accelerator kinds the agents have.
        members: dict[tuple[str, frozenset[str] | None], list[int]] = {}
        for position, (agent, capacity_milli, free_milli) in enumerate(valid):
            row: list[Milli] = [free_milli.get(name, 0) for name in self.slots]
            healthy = agent.schedulable and all(cell >= 0 for cell in row)
            row.append(-agent.container_count)
            rows.append(row)
            self._capacity_rows.append([capacity_milli.get(name, 0) for name in self.slots])
            kinds = frozenset(
                key
                for key, amount in capacity_milli.items()
                if amount > 0 and key not in _INTRINSIC
            )
            self._kinds.append(kinds)
            arch = normalize_architecture(agent.architecture)
            self.architecture.append(arch)
            self.eligible.append(healthy)
            if healthy:
                members.setdefault((arch, None), []).append(position)
                members.setdefault((arch, kinds), []).append(position)
        groups = list(members.values())
        self._arch_group: dict[str, int] = {}
        self._kind_groups: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for number, (arch, group_kinds) in enumerate(members):
            if group_kinds is None:
                self._arch_group[arch] = number
            else:
                self._kind_groups.setdefault(arch, []).append((number, group_kinds))
        self._orders: dict[tuple[str, frozenset[str]], list[tuple[int, int]]] = {}
        # Free amounts only shrink during a pass, so each group's maxima at the
        # start stay upper bounds: a request above one skips the group's scan.
        self._max_free: list[list[Milli]] = [
            [max(rows[i][slot] for i in group) for slot in range(width)] for group in groups
        ]
        self.bins: _Bins
        try:
            self.bins = engine.Bins(rows, groups, width)
        except OverflowError:
            self.bins = _binpack_py.Bins(rows, groups, width)
        self._mode = _MODES[options.agent_selector]
        self._roundrobin = options.agent_selector is AgentSelector.ROUNDROBIN
        ids = [agent.id for agent in self.agents]
        if roundrobin_last is not None and not isinstance(roundrobin_last, str):
            errors.append(f"round-robin cursor {roundrobin_last!r} of {resource_group!r} ignored")
            roundrobin_last = None
        self.roundrobin_after = (
            -1 if roundrobin_last is None else bisect_right(ids, roundrobin_last) - 1
        )

    def place(self, candidate: Candidate) -> Placement | str:
        """Place every kernel of *candidate* and take their slots, or return why not.

        On failure nothing stays taken and the message says what was missing.
        """
        session = candidate.session
        group_name = f"resource group {self.resource_group!r}"
        designated: int | None = None
        if session.designated_agent is not None:
            designated = self.index.get(session.designated_agent)
            name = f"designated agent {session.designated_agent!r}"
            if designated is None:
                return f"{name} is not in {group_name}"
            if not self.eligible[designated]:
                return f"{name} is excluded from scheduling or over-allocated"
            if self.architecture[designated] != candidate.architecture:
                return (
                    f"{name} has architecture {self.architecture[designated]!r}, "
                    f"the session needs {candidate.architecture!r}"
                )
        elif candidate.architecture not in self._arch_group:
            arch = candidate.architecture
            return f"no schedulable agent with architecture {arch!r} in {group_name}"
        if session.cluster_mode is ClusterMode.SINGLE_NODE:
            units = [(candidate.total_milli, len(session.kernels), candidate.total)]
        else:
            units = [
                (milli, 1, requested)
                for milli, requested in zip(candidate.kernel_milli, session.kernels, strict=True)
            ]
        before = self.roundrobin_after
        taken: list[tuple[int, tuple[Milli, ...], int]] = []
        chosen: list[int] = []
        try:
            for number, (milli, kernels, requested) in enumerate(units):
                vector = self._vector(milli)
                if isinstance(vector, str):
                    self._undo(taken, before)
                    return f"no agent in {group_name} provides {vector!r}"
                agent = self._choose(vector, candidate.architecture, designated)
                if agent < 0:
                    self._undo(taken, before)
                    what = (
                        "the session" if len(units) == 1 else f"kernel {number + 1} of {len(units)}"
                    )
                    where = "the designated agent" if designated is not None else "any agent"
                    return (
                        f"not enough free resources on {where} for {what} "
                        f"(requested {describe_slots(requested)})"
                    )
                self.bins.take(agent, vector, kernels)
                taken.append((agent, vector, kernels))
                chosen.extend([agent] * kernels)
                if self._roundrobin:
                    self.roundrobin_after = agent
        except BaseException:
            self._undo(taken, before)
            raise
        return Placement(tuple(chosen), tuple(taken), before)

    def hold_for(self, candidate: Candidate) -> tuple[AgentId, ...]:
        """Hold agents on which *candidate*, which does not fit now, fits once they drain.

        Each kernel (the whole session when it is single-node) gets an eligible
        agent not held yet, of the session's architecture (the designated agent
        if it names one), whose total capacity covers it next to the kernels
        already assigned to that agent here; preferred are the fewest kinds of
        accelerator the session does not ask for, then the most free of the
        requested slots in slot order, then the smallest id.  Each such agent's
        free slots are then taken for the rest of the pass.  Returns the ids
        of the held agents; holds nothing and returns ``()`` when the session
        does not fit even on idle agents.
        """
        session = candidate.session
        if session.cluster_mode is ClusterMode.SINGLE_NODE:
            units = [candidate.total_milli]
        else:
            units = list(candidate.kernel_milli)
        if session.designated_agent is not None:
            designated = self.index.get(session.designated_agent)
            options = [] if designated is None else [designated]
        else:
            options = list(range(len(self.agents)))
        options = [
            agent
            for agent in options
            if self.eligible[agent]
            and agent not in self._held
            and self.architecture[agent] == candidate.architecture
        ]
        assigned: dict[int, list[Milli]] = {}
        for milli in units:
            vector = self._vector(milli)
            if isinstance(vector, str):
                return ()
            wanted = [slot for slot, amount in enumerate(vector) if amount]
            requested = {self.slots[slot] for slot in wanted}.difference(_INTRINSIC)
            best: tuple[int, list[Milli], int] | None = None
            for agent in options:
                used = assigned.get(agent, [0] * len(vector))
                capacity = self._capacity_rows[agent]
                if any(used[slot] + vector[slot] > capacity[slot] for slot in wanted):
                    continue
                free = self.bins.row(agent)
                key = (len(self._kinds[agent] - requested), [-free[slot] for slot in wanted], agent)
                if best is None or key < best:
                    best = key
            if best is None:
                return ()
            agent = best[2]
            used = assigned.setdefault(agent, [0] * len(vector))
            for slot in wanted:
                used[slot] += vector[slot]
        for agent in assigned:
            free = self.bins.row(agent)[: len(self.slots)]
            # Taking one more than what is free leaves every slot below zero,
            # so no request fits; an infinite amount cannot be held.
            self.bins.take(agent, [0 if math.isinf(cell) else max(cell, 0) + 1 for cell in free], 0)
            self._held.add(agent)
        return tuple(self.agents[agent].id for agent in sorted(assigned))

    def release(self, placement: Placement) -> None:
        """Give back everything *placement* took, as if it never happened."""
        self._undo(list(placement.taken), placement.roundrobin_before)

    def _undo(self, taken: list[tuple[int, tuple[Milli, ...], int]], before: int) -> None:
        for agent, vector, kernels in reversed(taken):
            self.bins.give(agent, vector, kernels)
        taken.clear()
        self.roundrobin_after = before

    def _vector(self, milli: Mapping[str, Milli]) -> tuple[Milli, ...] | str:
        """Return *milli* in slot order, or the name of a requested slot no agent provides."""
        vector: list[Milli] = [0] * len(self.slots)
        for key, amount in milli.items():
            if not amount:
                continue
            position = self._slot_pos.get(key)
            if position is None or key not in self.provided:
                return key
            vector[position] = amount
        return tuple(vector)

    def _choose(self, vector: tuple[Milli, ...], arch: str, designated: int | None) -> int:
        if designated is not None:
            return designated if self.bins.fits(designated, vector) else -1
        if self._roundrobin:
            group = self._arch_group[arch]
            if not self._admits(group, vector):
                return -1
            return self.bins.pick(vector, (group,), (0,), self._mode, self.roundrobin_after)
        wanted = frozenset(
            name for name, amount in zip(self.slots, vector, strict=True) if amount
        ).difference(_INTRINSIC)
        order = self._orders.get((arch, wanted))
        if order is None:
            order = sorted((len(kinds - wanted), group) for group, kinds in self._kind_groups[arch])
            self._orders[arch, wanted] = order
        groups: list[int] = []
        extras: list[int] = []
        for extra, group in order:
            if self._admits(group, vector):
                groups.append(group)
                extras.append(extra)
        if not groups:
            return -1
        return self.bins.pick(vector, groups, extras, self._mode, self.roundrobin_after)

    def _admits(self, group: int, vector: tuple[Milli, ...]) -> bool:
        """Whether *vector* is within the group's upper bound of free amounts."""
        for amount, bound in zip(vector, self._max_free[group], strict=True):
            if amount > bound:
                return False
        return True
