"""Typed cluster events, their wire codec, and the event bus.

Each module of the package has one job:

* :mod:`bai.common.events.types` -- the event classes, one per event name;
* :mod:`bai.common.events.codec` -- :func:`encode_event` /
  :func:`decode_event`, an exact MessagePack round trip;
* :mod:`bai.common.events.bus` -- :class:`EventBus`, the one interface both
  deployment modes use, its delivery model, and the parts every bus shares;
* :mod:`bai.common.events.publish` -- :func:`publish_events`, publishing
  what a committed transaction returned: bounded, logged, never raised;
* :mod:`bai.common.events.inproc` -- :class:`InProcEventBus`, the Trio memory
  bus of the embedded ``bai up`` mode;
* :mod:`bai.common.events.redis` -- ``RedisEventBus``, the Redis Streams bus
  of the distributed mode;
* :mod:`bai.common.events.factory` -- the bus a daemon's ``[redis]`` section
  names.

Each module imports only those above it in this list, so the package has no
import cycle.  Every public name is re-exported here except ``RedisEventBus``:
import it from :mod:`bai.common.events.redis`, so that the embedded mode never
imports a Redis client.
"""

from bai.common.events.bus import (
    DEFAULT_MAX_BACKLOG,
    DEFAULT_SUBSCRIBER_BUFFER,
    Broadcaster,
    BusReadHealth,
    Consumer,
    Delivery,
    EventBus,
    EventBusError,
    SubscriberOverflow,
    Subscription,
    check_group_name,
    event_type_filter,
    follow_events,
    wanted,
)
from bai.common.events.codec import InvalidEvent, decode_event, encode_event
from bai.common.events.factory import event_bus_for, running_event_bus
from bai.common.events.inproc import InProcEventBus
from bai.common.events.publish import PUBLISH_TIMEOUT, publish_event, publish_events
from bai.common.events.types import (
    EVENT_TYPES,
    AgentEvent,
    AgentHeartbeat,
    AgentKernelTerminated,
    AgentStarted,
    AgentStatsReported,
    AgentTerminated,
    BgtaskCancelled,
    BgtaskDone,
    BgtaskEvent,
    BgtaskFailed,
    BgtaskUpdated,
    DoSchedule,
    Event,
    EventTypes,
    ExecutionCancelled,
    ExecutionEvent,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    KernelCancelled,
    KernelCreating,
    KernelEvent,
    KernelPreparing,
    KernelPulling,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
    SessionCancelled,
    SessionCreating,
    SessionEnqueued,
    SessionEvent,
    SessionFailure,
    SessionPreparing,
    SessionPulling,
    SessionResult,
    SessionScheduled,
    SessionStarted,
    SessionSuccess,
    SessionTerminated,
    SessionTerminating,
)

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_SUBSCRIBER_BUFFER",
    "EVENT_TYPES",
    "PUBLISH_TIMEOUT",
    "AgentEvent",
    "AgentHeartbeat",
    "AgentKernelTerminated",
    "AgentStarted",
    "AgentStatsReported",
    "AgentTerminated",
    "BgtaskCancelled",
    "BgtaskDone",
    "BgtaskEvent",
    "BgtaskFailed",
    "BgtaskUpdated",
    "Broadcaster",
    "BusReadHealth",
    "Consumer",
    "Delivery",
    "DoSchedule",
    "Event",
    "EventBus",
    "EventBusError",
    "EventTypes",
    "ExecutionCancelled",
    "ExecutionEvent",
    "ExecutionFinished",
    "ExecutionStarted",
    "ExecutionTimeout",
    "InProcEventBus",
    "InvalidEvent",
    "KernelCancelled",
    "KernelCreating",
    "KernelEvent",
    "KernelPreparing",
    "KernelPulling",
    "KernelStarted",
    "KernelTerminated",
    "KernelTerminating",
    "SessionCancelled",
    "SessionCreating",
    "SessionEnqueued",
    "SessionEvent",
    "SessionFailure",
    "SessionPreparing",
    "SessionPulling",
    "SessionResult",
    "SessionScheduled",
    "SessionStarted",
    "SessionSuccess",
    "SessionTerminated",
    "SessionTerminating",
    "SubscriberOverflow",
    "Subscription",
    "check_group_name",
    "decode_event",
    "encode_event",
    "event_bus_for",
    "event_type_filter",
    "follow_events",
    "publish_event",
    "publish_events",
    "running_event_bus",
    "wanted",
]
