"""The Sokovan-style scheduler core: predicates, sequencers and agent selection.

:func:`schedule` is a pure function from a :class:`SchedulingInput` (pending
sessions, agents, running sessions, policies, per-group options) to a
:class:`SchedulingResult` (a decision per session and the agents' new
occupancy).  The dispatcher around it does the I/O.
"""

from bai.manager.scheduler.core import schedule
from bai.manager.scheduler.options import (
    DEFAULT_OPTIONS,
    AgentSelector,
    SchedulerConfigError,
    SchedulerOptions,
    Sequencer,
)
from bai.manager.scheduler.predicates import PREDICATES
from bai.manager.scheduler.selectors import DEFAULT_ENGINE, ENGINES
from bai.manager.scheduler.sequencers import dominant_share
from bai.manager.scheduler.types import (
    AgentInfo,
    Decision,
    DependencyState,
    InvalidSchedulingInput,
    KeypairPolicy,
    NotScheduled,
    PendingSession,
    PredicateFailure,
    RunningSession,
    Scheduled,
    SchedulerError,
    SchedulingInput,
    SchedulingResult,
)
from bai.manager.scheduler.validation import (
    UnsatisfiableRequest,
    check_satisfiable,
    validate_pending,
)

__all__ = [
    "DEFAULT_ENGINE",
    "DEFAULT_OPTIONS",
    "ENGINES",
    "PREDICATES",
    "AgentInfo",
    "AgentSelector",
    "Decision",
    "DependencyState",
    "InvalidSchedulingInput",
    "KeypairPolicy",
    "NotScheduled",
    "PendingSession",
    "PredicateFailure",
    "RunningSession",
    "Scheduled",
    "SchedulerConfigError",
    "SchedulerError",
    "SchedulerOptions",
    "SchedulingInput",
    "SchedulingResult",
    "Sequencer",
    "UnsatisfiableRequest",
    "check_satisfiable",
    "dominant_share",
    "schedule",
    "validate_pending",
]
