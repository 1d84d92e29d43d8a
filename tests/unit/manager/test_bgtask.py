"""The manager's background tasks on a real in-process event bus (bai.manager.bgtask)."""

from __future__ import annotations

import pytest
import trio

from bai.common.events import (
    BgtaskCancelled,
    BgtaskDone,
    BgtaskEvent,
    BgtaskFailed,
    BgtaskUpdated,
    InProcEventBus,
)
from bai.manager.bgtask import BackgroundTasks, BackgroundTasksClosed, ProgressReporter


async def _events_until_end(subscription: object, task_id: object) -> list[BgtaskEvent]:
    seen: list[BgtaskEvent] = []
    with trio.fail_after(5):
        while True:
            event = await subscription.receive()  # type: ignore[attr-defined]
            if isinstance(event, BgtaskEvent) and event.task_id == task_id:
                seen.append(event)
                if not isinstance(event, BgtaskUpdated):
                    return seen


async def test_a_task_reports_progress_then_done_and_its_outcome_is_kept() -> None:
    async with InProcEventBus() as bus, trio.open_nursery() as nursery:
        tasks = BackgroundTasks(bus)
        await nursery.start(tasks.serve)
        release = trio.Event()

        async def work(reporter: ProgressReporter) -> str:
            await reporter.update(1, 2, "halfway")
            await release.wait()
            return "all copied"

        async with bus.subscribe(types=(BgtaskEvent,)) as subscription:
            task_id = tasks.start(work)
            assert tasks.is_running(task_id)
            assert tasks.outcome(task_id) is None
            release.set()
            seen = await _events_until_end(subscription, task_id)
        assert [type(e) for e in seen] == [BgtaskUpdated, BgtaskDone]
        assert isinstance(seen[0], BgtaskUpdated)
        assert (seen[0].current_progress, seen[0].total_progress) == (1, 2)
        assert seen[1].message == "all copied"
        # A follower that comes late still learns how it ended.
        final = tasks.outcome(task_id)
        assert isinstance(final, BgtaskDone) and final.message == "all copied"
        assert not tasks.is_running(task_id)
        nursery.cancel_scope.cancel()


async def test_a_failing_task_ends_with_its_error_and_does_not_stop_the_others() -> None:
    async with InProcEventBus() as bus, trio.open_nursery() as nursery:
        tasks = BackgroundTasks(bus)
        await nursery.start(tasks.serve)

        async def broken(reporter: ProgressReporter) -> str:
            raise RuntimeError("the proxy said no")

        async def fine(reporter: ProgressReporter) -> None:
            return None

        async with bus.subscribe(types=(BgtaskEvent,)) as subscription:
            failing = tasks.start(broken)
            seen = await _events_until_end(subscription, failing)
        assert isinstance(seen[-1], BgtaskFailed)
        assert seen[-1].message == "the proxy said no"
        async with bus.subscribe(types=(BgtaskEvent,)) as subscription:
            other = tasks.start(fine)
            assert isinstance((await _events_until_end(subscription, other))[-1], BgtaskDone)
        nursery.cancel_scope.cancel()


async def test_stopping_the_service_cancels_running_tasks_with_an_event() -> None:
    async with InProcEventBus() as bus:
        tasks = BackgroundTasks(bus)
        async with bus.subscribe(types=(BgtaskEvent,)) as subscription:
            async with trio.open_nursery() as nursery:
                await nursery.start(tasks.serve)

                async def forever(reporter: ProgressReporter) -> None:
                    await trio.sleep_forever()

                task_id = tasks.start(forever)
                await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
            seen = await _events_until_end(subscription, task_id)
        assert isinstance(seen[-1], BgtaskCancelled)
        assert isinstance(tasks.outcome(task_id), BgtaskCancelled)
        with pytest.raises(BackgroundTasksClosed):
            tasks.start(forever)


async def test_outcomes_expire_and_are_bounded() -> None:
    async with InProcEventBus() as bus, trio.open_nursery() as nursery:
        tasks = BackgroundTasks(bus, result_ttl=0.05, max_results=2)
        await nursery.start(tasks.serve)

        async def quick(reporter: ProgressReporter) -> None:
            return None

        ids = []
        async with bus.subscribe(types=(BgtaskEvent,)) as subscription:
            for _ in range(3):
                task_id = tasks.start(quick)
                await _events_until_end(subscription, task_id)
                ids.append(task_id)
        # Only the newest two are kept...
        assert tasks.outcome(ids[0]) is None
        assert tasks.outcome(ids[2]) is not None
        # ...and only for the time given.
        await trio.sleep(0.1)
        assert tasks.outcome(ids[2]) is None
        nursery.cancel_scope.cancel()
