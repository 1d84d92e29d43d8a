"""Sequencers: the order in which a pass tries the pending sessions of a group.

Every sequencer puts higher priority first and orders sessions of equal
priority its own way:

* ``fifo``: oldest first (ties by session id).  It is *blocking*: when a
  session cannot be placed for lack of resources, every session after it in
  the group's sequence, lower priorities included, is held back
  (head-of-line blocking).  With ``num_retries_to_skip = n > 0``, a
  session already tried ``n`` times without starting is pushed to the end of
  its priority and is *exempt*: it neither holds back others nor is held back.
* ``lifo``: newest first; never blocking.
* ``drf``: dominant resource fairness; never blocking.  A user's dominant
  share is the largest share, over the group's slots with non-zero capacity,
  of what the user's sessions hold in the group relative to the group's
  capacity (``Decimal`` division, correctly rounded to 28 digits, so equal
  ratios compare equal).  The next session is the oldest of
  the user with the lowest share, ties in FIFO order of those users' oldest
  sessions; a session the pass starts raises its user's share at once.

Whatever the sequencer, *starving* sessions (pending at least the group's
``reserve_after``) come first within their priority, oldest first; with
FIFO and ``num_retries_to_skip > 0`` they are exempt, as pushed-back ones are.
"""

from __future__ import annotations

import heapq
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from bai.common.slots import ResourceSlot
from bai.common.types import SessionId
from bai.manager.scheduler.options import SchedulerOptions, Sequencer
from bai.manager.scheduler.validation import Candidate

__all__ = ["SessionQueue", "dominant_share", "make_queue"]


def dominant_share(usage: ResourceSlot, capacity: ResourceSlot) -> Decimal:
    """Return the largest ``usage[slot] / capacity[slot]`` over slots with capacity > 0."""
    share = Decimal(0)
    for key, total in capacity.items():
        if total > 0:
            used = usage.get(key, Decimal(0))
            if used:
                share = max(share, used / total)
    return share


def _fifo_key(candidate: Candidate) -> tuple[datetime, SessionId]:
    return (candidate.session.created_at, candidate.session.id)


def _bands(candidates: Iterable[Candidate]) -> list[list[Candidate]]:
    """Split *candidates* by priority, highest first."""
    by_priority: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        by_priority.setdefault(candidate.session.priority, []).append(candidate)
    return [by_priority[priority] for priority in sorted(by_priority, reverse=True)]


class SessionQueue:
    """The sessions of one group in the order a pass tries them.

    :meth:`next` returns the next session and whether it is exempt from
    head-of-line blocking, or ``None`` at the end; :meth:`placed` reports a
    session the pass started.  ``blocking`` says whether a session that
    cannot be placed holds back the (non-exempt) sessions after it;
    ``starving`` holds the ids of the starving sessions.
    """

    blocking = False

    def __init__(self, order: list[tuple[Candidate, bool]], starving: frozenset[SessionId]) -> None:
        self._order = order
        self._position = 0
        self.starving = starving

    def next(self) -> tuple[Candidate, bool] | None:
        """Return the next session to try and whether it is exempt, or ``None``."""
        if self._position >= len(self._order):
            return None
        item = self._order[self._position]
        self._position += 1
        return item

    def placed(self, candidate: Candidate) -> None:
        """Note that *candidate* was started (only DRF cares)."""


class _FifoQueue(SessionQueue):
    blocking = True


class _DrfQueue(SessionQueue):
    def __init__(
        self,
        candidates: Iterable[Candidate],
        capacity: ResourceSlot,
        usage: Mapping[uuid.UUID, ResourceSlot],
        starving: frozenset[SessionId],
    ) -> None:
        super().__init__([], starving)
        self._bands = _bands(candidates)
        self._first: deque[Candidate] = deque()
        self._band = 0
        self._capacity = capacity
        self._usage = dict(usage)
        self._shares: dict[uuid.UUID, Decimal] = {}
        self._queues: dict[uuid.UUID, deque[Candidate]] = {}
        self._heap: list[tuple[Decimal, datetime, SessionId, uuid.UUID]] = []
        self._last: uuid.UUID | None = None

    def _share(self, user: uuid.UUID) -> Decimal:
        share = self._shares.get(user)
        if share is None:
            share = dominant_share(self._usage.get(user, ResourceSlot()), self._capacity)
            self._shares[user] = share
        return share

    def _push(self, user: uuid.UUID) -> None:
        head = self._queues[user][0].session
        heapq.heappush(self._heap, (self._share(user), head.created_at, head.id, user))

    def next(self) -> tuple[Candidate, bool] | None:
        if self._last is not None and self._queues[self._last]:
            self._push(self._last)
        self._last = None
        while not self._heap and not self._first:
            if self._band >= len(self._bands):
                return None
            self._queues = {}
            for candidate in sorted(self._bands[self._band], key=_fifo_key):
                if candidate.id in self.starving:
                    self._first.append(candidate)
                else:
                    self._queues.setdefault(candidate.session.user_id, deque()).append(candidate)
            self._band += 1
            for user in self._queues:
                self._push(user)
        if self._first:
            return self._first.popleft(), False
        _, _, _, user = heapq.heappop(self._heap)
        self._last = user
        return self._queues[user].popleft(), False

    def placed(self, candidate: Candidate) -> None:
        user = candidate.session.user_id
        self._usage[user] = self._usage.get(user, ResourceSlot()) + candidate.total
        self._shares.pop(user, None)


def make_queue(
    options: SchedulerOptions,
    candidates: Iterable[Candidate],
    capacity: ResourceSlot,
    usage: Mapping[uuid.UUID, ResourceSlot],
    now: datetime,
) -> SessionQueue:
    """Return the queue of *candidates* (one resource group) for *options*' sequencer.

    *capacity* is the group's total capacity and *usage* what each user's
    sessions hold in the group; only DRF reads them.  Sessions created at
    least ``options.reserve_after`` before *now* are starving.
    """
    candidates = list(candidates)
    starving = frozenset(
        c.id
        for c in candidates
        if options.reserve_after
        and now - c.session.created_at >= timedelta(seconds=options.reserve_after)
    )
    if options.sequencer is Sequencer.DRF:
        return _DrfQueue(candidates, capacity, usage, starving)
    order: list[tuple[Candidate, bool]] = []
    skip = options.num_retries_to_skip
    for band in _bands(candidates):
        band.sort(key=_fifo_key)
        order.extend((c, bool(skip)) for c in band if c.id in starving)
        rest = [c for c in band if c.id not in starving]
        if options.sequencer is Sequencer.LIFO:
            order.extend((c, False) for c in reversed(rest))
            continue
        order.extend((c, False) for c in rest if not (skip and c.session.retries >= skip))
        order.extend((c, True) for c in rest if skip and c.session.retries >= skip)
    if options.sequencer is Sequencer.LIFO:
        return SessionQueue(order, starving)
    return _FifoQueue(order, starving)
