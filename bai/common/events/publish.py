"""Publishing events whose truth is already stored elsewhere: bounded, logged, never raised.

:func:`publish_event` and :func:`publish_events` are for the events a
committed transaction (or a report already acted on) returned: a bus failure
or a publish slower than :data:`PUBLISH_TIMEOUT` is logged as a warning and
swallowed, because the database already holds the truth.  Guarantees: each
event's publish is bounded by :data:`PUBLISH_TIMEOUT`; events go out in the
order given; only :class:`~bai.common.events.bus.EventBusError` and a closed
bus are swallowed, any other exception propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

import trio

from bai.common.events.bus import EventBus, EventBusError
from bai.common.events.types import Event

__all__ = ["PUBLISH_TIMEOUT", "publish_event", "publish_events"]

log = logging.getLogger(__name__)

#: How long publishing one event may take before it is given up (logged).
PUBLISH_TIMEOUT: Final = 5.0


async def publish_event(bus: EventBus, event: Event) -> bool:
    """Publish *event*, bounded by :data:`PUBLISH_TIMEOUT`; return whether the bus took it."""
    with trio.move_on_after(PUBLISH_TIMEOUT) as scope:
        try:
            await bus.publish(event)
            return True
        except (EventBusError, trio.ClosedResourceError) as exc:
            log.warning("could not publish %s: %s", event.name, exc)
    if scope.cancelled_caught:
        log.warning("publishing %s timed out", event.name)
    return False


async def publish_events(bus: EventBus, events: Iterable[Event]) -> None:
    """Publish *events* in order, each as :func:`publish_event` does."""
    for event in events:
        await publish_event(bus, event)
