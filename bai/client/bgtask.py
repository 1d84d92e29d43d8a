"""Background tasks: follow one to its end through ``GET /events/background-task``.

Some operations (cloning a vfolder, rescanning images) answer at once with a
task id and go on in the background.  The manager streams the task's
progress as Server-Sent Events: ``task_updated`` (``current_progress``,
``total_progress``, ``message``) any number of times, then one of
``task_done``, ``task_failed`` or ``task_cancelled``, then ``server_close``.
The official manager names them ``bgtask_*``; both spellings are understood.

Guarantees: :func:`follow_background_task` returns exactly one
:class:`TaskOutcome`; it is ``unknown`` when the stream ended without saying
how the task ended.  It does not retry or reconnect (the manager keeps no
results of finished tasks, so a new stream could wait forever).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from bai.client.exceptions import BackendError
from bai.client.request import APIClient

__all__ = ["TaskOutcome", "TaskProgress", "follow_background_task"]

TaskStatus = Literal["done", "failed", "cancelled", "unknown"]

_ENDINGS: Final[dict[str, TaskStatus]] = {
    "task_done": "done",
    "bgtask_done": "done",
    "task_failed": "failed",
    "task_fail": "failed",
    "bgtask_failed": "failed",
    "task_cancelled": "cancelled",
    "task_cancel": "cancelled",
    "bgtask_cancelled": "cancelled",
}
_UPDATES: Final = frozenset({"task_updated", "bgtask_updated"})


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """One progress report; ``current`` means nothing when ``total`` is 0."""

    current: int
    total: int
    message: str | None


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a background task ended, with the manager's message (why it failed)."""

    status: TaskStatus
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def follow_background_task(
    api: APIClient,
    task_id: str | uuid.UUID,
    *,
    on_progress: Callable[[TaskProgress], None] | None = None,
) -> TaskOutcome:
    """Stream the events of task *task_id* until it ends; call *on_progress* on each update."""
    params = {"task_id": str(task_id)}
    async with api.events("/events/background-task", params=params) as events:
        async for event in events:
            if event.event == "server_close":
                break
            try:
                data = event.json()
            except BackendError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            message = data.get("message")
            message = message if isinstance(message, str) else None
            if event.event in _UPDATES:
                if on_progress is not None:
                    on_progress(
                        TaskProgress(
                            _int(data.get("current_progress")),
                            _int(data.get("total_progress")),
                            message,
                        )
                    )
            elif event.event in _ENDINGS:
                return TaskOutcome(_ENDINGS[event.event], message)
    return TaskOutcome("unknown")
