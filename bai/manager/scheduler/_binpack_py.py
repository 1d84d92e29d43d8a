"""Pure-Python agent-fit scan: the reference twin of ``_binpack.pyx``.

A :class:`Bins` holds the agents of one resource group as rows of integers:
the free amount of each slot in thousandths, in the group's slot-priority
order, then the negated container count.  The selectors need:

* ``CONCENTRATED`` picks the fitting agent with the smallest rank,
* ``DISPERSED`` the one with the largest rank,
* ``ROUNDROBIN`` the first fitting agent after index *after*, wrapping around,

where an agent's rank is its row restricted to the requested (non-zero)
slots plus the container column, and ties go to the lowest index.  Candidate
agents come in *groups* (sorted index lists fixed at construction); a pick
scans a list of groups, each with an ``extras`` rank that is compared before
any row (the selector uses it for the accelerators an agent has that the
request does not need).  A request fits an agent when every requested slot's
free amount is at least the requested one.
Both twins take the same arguments and return the same answers; this one
accepts any ints and ``±inf``, the Cython one raises :class:`OverflowError`
at construction for amounts of magnitude 2**62 or more, and the caller then
uses this one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Final

#: An amount in thousandths of a unit, or ``±inf``.
Cell = int | float

CONCENTRATED: Final = 0
DISPERSED: Final = 1
ROUNDROBIN: Final = 2


class Bins:
    """Free capacity rows of a set of agents; see the module docstring."""

    __slots__ = ("_groups", "_rows", "width")

    def __init__(
        self, rows: Sequence[Sequence[Cell]], groups: Sequence[Sequence[int]], width: int
    ) -> None:
        self.width = width
        self._rows = [list(row) for row in rows]
        for row in self._rows:
            if len(row) != width + 1:
                raise ValueError(f"a row needs {width + 1} cells, got {len(row)}")
        self._groups = [sorted(group) for group in groups]
        for group in self._groups:
            if group and not 0 <= group[0] <= group[-1] < len(self._rows):
                raise ValueError("a group names an agent index out of range")

    def row(self, agent: int) -> list[Cell]:
        """Return a copy of the agent's row."""
        return list(self._rows[agent])

    def fits(self, agent: int, req: Sequence[Cell]) -> bool:
        """Whether *req* (one amount per slot) fits the agent's free amounts."""
        row = self._rows[agent]
        return all(row[slot] >= req[slot] for slot in range(self.width))

    def pick(
        self,
        req: Sequence[Cell],
        groups: Sequence[int],
        extras: Sequence[int],
        mode: int,
        after: int,
    ) -> int:
        """Return the index of the agent chosen by *mode* for *req*, or -1.

        ``ROUNDROBIN`` scans ``groups[0]`` only.  The other modes scan *groups*
        in order; ``extras[i]`` ranks group ``i`` (lower first, non-decreasing
        along the list) before any row is compared, so the scan stops at the
        first group ranked worse than a group that had a fitting agent.
        """
        wanted = [(slot, amount) for slot, amount in enumerate(req) if amount]
        rows = self._rows
        if mode == ROUNDROBIN:
            members = self._groups[groups[0]]
            start = bisect_right(members, after)
            for index in members[start:] + members[:start]:
                row = rows[index]
                for slot, amount in wanted:
                    if row[slot] < amount:
                        break
                else:
                    return index
            return -1
        # The rank of a fitting agent: its free amounts of the wanted slots in
        # slot order, then its negated container count.
        rank = itemgetter(*[slot for slot, _ in wanted], self.width)
        concentrated = mode == CONCENTRATED
        best = -1
        best_rank: Any = None
        best_extra = 0
        for group, extra in zip(groups, extras, strict=True):
            if best >= 0 and extra > best_extra:
                break
            for index in self._groups[group]:
                row = rows[index]
                for slot, amount in wanted:
                    if row[slot] < amount:
                        break
                else:
                    key = rank(row)
                    if (
                        best < 0
                        or (key < best_rank if concentrated else key > best_rank)
                        or (key == best_rank and index < best)
                    ):
                        best = index
                        best_rank = key
                        best_extra = extra
        return best

    def take(self, agent: int, req: Sequence[Cell], kernels: int) -> None:
        """Subtract *req* and add *kernels* containers to the agent (after a fit)."""
        row = self._rows[agent]
        for slot in range(self.width):
            if req[slot]:
                row[slot] -= req[slot]
        row[self.width] -= kernels

    def give(self, agent: int, req: Sequence[Cell], kernels: int) -> None:
        """Undo :meth:`take` with the same arguments."""
        row = self._rows[agent]
        for slot in range(self.width):
            if req[slot]:
                row[slot] += req[slot]
        row[self.width] += kernels
