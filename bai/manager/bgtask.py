"""Background tasks of the manager: run under its nursery, reported as ``bgtask_*`` events.

A route that starts long work (cloning a virtual folder) hands a coroutine
function to :meth:`BackgroundTasks.start` and answers at once with the task
id; clients follow the task through ``GET /events/background-task``
(:mod:`bai.manager.api.events`).

Guarantees:

* each task runs in the nursery of :meth:`BackgroundTasks.serve`, which the
  manager service owns, so no task outlives the manager; a task still
  running when the manager stops ends with ``bgtask_cancelled``;
* a task reports progress through its :class:`ProgressReporter`
  (``bgtask_updated``) and ends with exactly one of ``bgtask_done`` (its
  function returned; the message is what it returned), ``bgtask_failed``
  (it raised; the message is the error's text) or ``bgtask_cancelled``;
* the outcome is recorded *before* the final event is published, and kept
  for :data:`RESULT_TTL` seconds (at most :data:`MAX_RESULTS` of them), so a
  stream opened after the task ended still learns how it ended
  (:meth:`BackgroundTasks.outcome`).  Outcomes are this process's only: in
  a deployment of several managers, a client that follows a task through
  another manager learns only what that manager sees on the event bus.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from bai.common.errors import BaiError
from bai.common.events import (
    BgtaskCancelled,
    BgtaskDone,
    BgtaskEvent,
    BgtaskFailed,
    BgtaskUpdated,
    EventBus,
)
from bai.common.events.publish import publish_event

__all__ = [
    "MAX_RESULTS",
    "RESULT_TTL",
    "BackgroundTasks",
    "BackgroundTasksClosed",
    "ProgressReporter",
    "TaskFunction",
]

log = logging.getLogger(__name__)

#: Seconds the outcome of a finished task is kept for late followers (the spec says a day).
RESULT_TTL: Final = 24 * 3600.0
#: Most finished outcomes kept; the oldest go first.
MAX_RESULTS: Final = 10_000


class BackgroundTasksClosed(BaiError):
    """A task was started while the manager is not running its background tasks (503)."""

    http_status = 503
    error_type = "service-not-ready"


class ProgressReporter:
    """What a running task uses to report its progress."""

    def __init__(self, bus: EventBus, task_id: uuid.UUID) -> None:
        self._bus = bus
        self.task_id = task_id

    async def update(self, current: int = 0, total: int = 0, message: str | None = None) -> None:
        """Publish ``bgtask_updated`` (never raises for a bus failure: it is only progress)."""
        await publish_event(
            self._bus,
            BgtaskUpdated(
                task_id=self.task_id,
                current_progress=current,
                total_progress=total,
                message=message,
            ),
        )


#: A task: given its reporter, it does the work and returns a message for ``bgtask_done``.
TaskFunction = Callable[[ProgressReporter], Awaitable[str | None]]


class BackgroundTasks:
    """The manager's background tasks; see the module docstring."""

    def __init__(
        self, bus: EventBus, *, result_ttl: float = RESULT_TTL, max_results: int = MAX_RESULTS
    ) -> None:
        self._bus = bus
        self._ttl = result_ttl
        self._max_results = max_results
        self._nursery: trio.Nursery | None = None
        self._outcomes: OrderedDict[uuid.UUID, tuple[float, BgtaskEvent]] = OrderedDict()
        self._running: set[uuid.UUID] = set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run tasks until cancelled; started tasks are cancelled with it."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def start(self, fn: TaskFunction, *, name: str = "background task") -> uuid.UUID:
        """Start *fn* as a new task and return its id at once.

        Raises :class:`BackgroundTasksClosed` when :meth:`serve` is not running.
        """
        if self._nursery is None:
            raise BackgroundTasksClosed("background tasks are not running")
        task_id = uuid.uuid4()
        self._running.add(task_id)
        self._nursery.start_soon(self._run, task_id, fn, name, name=f"{name} {task_id}")
        return task_id

    def is_running(self, task_id: uuid.UUID) -> bool:
        """Whether task *task_id* was started here and has not ended."""
        return task_id in self._running

    def outcome(self, task_id: uuid.UUID) -> BgtaskEvent | None:
        """The final event of a task that ended here within :data:`RESULT_TTL`, else ``None``."""
        self._expire()
        kept = self._outcomes.get(task_id)
        return None if kept is None else kept[1]

    def _expire(self) -> None:
        now = trio.current_time()
        while self._outcomes:
            oldest = next(iter(self._outcomes))
            if self._outcomes[oldest][0] > now and len(self._outcomes) <= self._max_results:
                break
            del self._outcomes[oldest]

    async def _finish(self, event: BgtaskEvent) -> None:
        # Recorded first, so a follower that subscribed after the publish still finds it.
        self._outcomes[event.task_id] = (trio.current_time() + self._ttl, event)
        self._running.discard(event.task_id)
        self._expire()
        await publish_event(self._bus, event)

    async def _run(self, task_id: uuid.UUID, fn: TaskFunction, name: str) -> None:
        reporter = ProgressReporter(self._bus, task_id)
        try:
            message = await fn(reporter)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._finish(
                    BgtaskCancelled(task_id=task_id, message="the manager is shutting down")
                )
            raise
        except Exception as exc:
            log.warning("%s %s failed: %s", name, task_id, exc, exc_info=True)
            await self._finish(
                BgtaskFailed(task_id=task_id, message=str(exc) or type(exc).__name__)
            )
        else:
            await self._finish(BgtaskDone(task_id=task_id, message=message))
