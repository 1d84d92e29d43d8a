"""``/events/session`` and ``/events/background-task`` as Server-Sent Events, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from bai.client import APIClient
from bai.client.sse import SSEEvent
from bai.common.events import BgtaskCancelled, BgtaskDone, BgtaskUpdated

from support.api import Key
from support.api_session import (
    Deployment,
    unique_name,
)

LIFECYCLE = [
    "session_enqueued",
    "session_scheduled",
    "session_preparing",
    "session_creating",
    "session_started",
    "session_terminating",
    "session_terminated",
]


class Stream:
    """Events read from one open SSE stream by a background task."""

    def __init__(self) -> None:
        self.seen: list[SSEEvent] = []
        self.ended = trio.Event()
        self._changed = trio.Event()

    async def until(self, name: str, session_id: str | None = None, within: float = 20) -> None:
        """Wait for an event *name* (of *session_id*, when given)."""
        with trio.fail_after(within):
            while not any(
                e.event == name and (session_id is None or e.json()["sessionId"] == session_id)
                for e in self.seen
            ):
                self._changed = trio.Event()
                await self._changed.wait()

    def of(self, session_id: str) -> list[SSEEvent]:
        return [e for e in self.seen if e.json().get("sessionId") == session_id]

    def names_of(self, session_id: str) -> list[str]:
        return [e.event for e in self.of(session_id)]

    def add(self, event: SSEEvent) -> None:
        self.seen.append(event)
        self._changed.set()


@asynccontextmanager
async def listening(
    deployment: Deployment, key: Key, path: str = "/events/session", **params: str
) -> AsyncIterator[Stream]:
    """Open an SSE stream as *key* (subscribed once this yields) and record its events."""
    stream = Stream()
    async with (
        APIClient(deployment.sdk_config(key)) as api,
        api.events(path, params=params) as events,
        trio.open_nursery() as nursery,
    ):

        async def read() -> None:
            async for event in events:
                stream.add(event)
            stream.ended.set()
            stream.add(SSEEvent("(end)", "{}"))

        nursery.start_soon(read)
        yield stream
        nursery.cancel_scope.cancel()


async def test_the_lifecycle_of_a_session_in_order(deployment: Deployment) -> None:
    async with listening(deployment, deployment.api.user, name="*", group="*") as stream:
        created = await deployment.create(name=unique_name())
        session_id = created["sessionId"]
        await deployment.destroy(session_id)
        await stream.until("session_terminated", session_id)
    names = stream.names_of(session_id)
    # The default scope has both the session's and its kernels' events.
    assert [n for n in names if n.startswith("session_") and n != "session_pulling"] == LIFECYCLE
    assert {"kernel_started", "kernel_terminated"} <= set(names)
    data = [e.json() for e in stream.of(session_id) if e.event.startswith("session_")]
    assert all(
        d["sessionName"] == created["sessionName"]
        and d["ownerAccessKey"] == deployment.api.user.access_key
        and isinstance(d["reason"], str)
        for d in data
    )
    assert data[-1]["result"] == "UNDEFINED"
    assert data[-1]["reason"] == "user-requested"


KERNEL_LIFECYCLE = [
    "kernel_preparing",
    "kernel_creating",
    "kernel_started",
    "kernel_terminating",
    "kernel_terminated",
]


async def test_each_kernel_event_arrives_once(deployment: Deployment) -> None:
    async with (
        listening(deployment, deployment.api.user, scope="kernel") as kernels,
        listening(deployment, deployment.api.user, scope="session") as sessions,
    ):
        created = await deployment.create(
            name=unique_name(), cluster_size=2, cluster_mode="single-node"
        )
        session_id = created["sessionId"]
        await deployment.destroy(session_id)
        await sessions.until("session_terminated", session_id)
        await kernels.until("kernel_terminated", session_id)
        # Anything sent twice would have arrived by the time a later event has.
        marker = await deployment.create(name=unique_name(), enqueueOnly=True)
        await kernels.until("kernel_started", marker["sessionId"])
    by_kernel: dict[str, list[str]] = {}
    for event in kernels.of(session_id):
        by_kernel.setdefault(event.json()["kernelId"], []).append(event.event)
    assert len(by_kernel) == 2
    assert all(names == KERNEL_LIFECYCLE for names in by_kernel.values()), by_kernel


async def test_a_failed_creation_is_reported_at_once(deployment: Deployment) -> None:
    name = unique_name("boot")
    async with listening(deployment, deployment.api.user, name=name) as stream:
        created = await deployment.create(name=name, bootstrap_script="echo no luck\nexit 1\n")
        assert (created["status"], created["statusInfo"]) == ("ERROR", "bootstrap-failed")
        session_id = created["sessionId"]
        # Before the session is destroyed: a client waiting for it to start hears why it won't.
        await stream.until("session_cancelled", session_id)
        await stream.until("kernel_cancelled", session_id)
    names = stream.names_of(session_id)
    assert [n for n in names if n.startswith("session_")] == [
        "session_enqueued",
        "session_scheduled",
        "session_preparing",
        "session_creating",
        "session_cancelled",
    ]
    assert [n for n in names if n.startswith("kernel_")] == [
        "kernel_preparing",
        "kernel_creating",
        "kernel_cancelled",
    ]
    ended = [e.json() for e in stream.of(session_id) if e.event.endswith("_cancelled")]
    assert [d["reason"] for d in ended] == ["bootstrap-failed", "bootstrap-failed"]


async def test_batch_results_kernels_and_filters(deployment: Deployment) -> None:
    user, admin = deployment.api.user, deployment.api.admin
    job_name = unique_name("job")
    async with (
        listening(deployment, user, name=job_name, scope="session") as by_name,
        listening(deployment, user, scope="kernel") as kernels,
        listening(deployment, admin) as superadmin,
        listening(deployment, admin, ownerAccessKey=admin.access_key) as own_only,
        listening(deployment, admin, group="default") as by_group,
    ):
        other = await deployment.create(name=unique_name("other"), enqueueOnly=True)
        job = await deployment.create(
            name=job_name, type="batch", startupCommand="exit 3", enqueueOnly=True
        )
        await by_name.until("session_terminated", job["sessionId"])
        await kernels.until("kernel_terminated", job["sessionId"])
        await superadmin.until("session_terminated", job["sessionId"])
        await by_group.until("session_terminated", job["sessionId"])
        await superadmin.until("session_started", other["sessionId"])

    # The name filter shows that session only, with its batch outcome.
    assert {e.json()["sessionId"] for e in by_name.seen} == {job["sessionId"]}
    failure = [e.json() for e in by_name.seen if e.event == "session_failure"]
    assert len(failure) == 1 and failure[0]["reason"] == "task-failed"
    terminated = [e.json() for e in by_name.seen if e.event == "session_terminated"]
    assert terminated[0]["result"] == "FAILURE"
    assert by_name.names_of(job["sessionId"]).index("session_failure") < len(by_name.seen) - 1
    # The kernel scope: kernel events with their kernel id, no session events.
    kernel_events = kernels.of(job["sessionId"])
    assert kernel_events and all(e.event.startswith("kernel_") for e in kernel_events)
    assert all(uuid.UUID(e.json()["kernelId"]) for e in kernel_events)
    # A superadmin sees the user's sessions, unless it asks for its own only.
    assert "session_started" in superadmin.names_of(other["sessionId"])
    assert own_only.seen == []
    assert by_group.names_of(job["sessionId"])


async def test_users_see_only_their_own_sessions(deployment: Deployment) -> None:
    user, admin = deployment.api.user, deployment.api.admin
    async with listening(deployment, user) as users_view:
        mine = await deployment.create(name=unique_name("mine"))
        theirs = await deployment.create(admin, name=unique_name("theirs"))
        await deployment.destroy(theirs["sessionId"], key=admin)
        await deployment.destroy(mine["sessionId"])
        await users_view.until("session_terminated", mine["sessionId"])
    assert users_view.of(theirs["sessionId"]) == []
    assert "session_terminated" in users_view.names_of(mine["sessionId"])


async def test_a_stream_of_one_session_by_id(deployment: Deployment) -> None:
    first = await deployment.create(name=unique_name("first"))
    second = await deployment.create(name=unique_name("second"))
    async with listening(deployment, deployment.api.user, sessionId=first["sessionId"]) as stream:
        await deployment.destroy(second["sessionId"])
        await deployment.destroy(first["sessionId"])
        await stream.until("session_terminated", first["sessionId"])
    assert {e.json()["sessionId"] for e in stream.seen} == {first["sessionId"]}


async def test_background_task_progress(deployment: Deployment) -> None:
    bus = deployment.cluster.ctx.bus
    task_id, other_task = uuid.uuid4(), uuid.uuid4()
    async with listening(
        deployment, deployment.api.user, "/events/background-task", task_id=str(task_id)
    ) as stream:
        await bus.publish(BgtaskUpdated(task_id=other_task, current_progress=1, total_progress=9))
        await bus.publish(
            BgtaskUpdated(task_id=task_id, current_progress=1, total_progress=2, message="half")
        )
        await bus.publish(BgtaskCancelled(task_id=other_task))
        await bus.publish(BgtaskDone(task_id=task_id, message="all done"))
        with trio.fail_after(20):
            await stream.ended.wait()
    got: list[tuple[str, Any]] = [(e.event, e.json()) for e in stream.seen]
    assert got == [
        (
            "task_updated",
            {
                "task_id": str(task_id),
                "message": "half",
                "current_progress": 1,
                "total_progress": 2,
            },
        ),
        (
            "task_done",
            {
                "task_id": str(task_id),
                "message": "all done",
                "current_progress": 0,
                "total_progress": 0,
            },
        ),
        ("server_close", {}),
        ("(end)", {}),
    ]
