"""The session lifecycle: enqueue, start on agents, relay to kernels, destroy, reconcile.

:class:`SessionRegistry` is the manager's one authority on compute sessions
between the API and the agents.  Every status change goes through
:mod:`bai.manager.transitions` inside one transaction, and the events a
transition returns are published only after it committed.  No agent RPC is
ever awaited inside a transaction.

Life of a session
=================

1. :meth:`SessionRegistry.enqueue_session` validates the request and inserts
   the session and its kernels (``main1``, ``sub1`` ... ``subN``) in PENDING
   in one transaction, publishes ``session_enqueued`` and asks every
   manager's dispatcher for a pass (``do_schedule``).
2. The dispatcher (:mod:`bai.manager.scheduler.dispatcher`) moves it to
   SCHEDULED with an agent per kernel and hands it to
   :meth:`SessionRegistry.start_scheduled`.
3. Starting moves it to PREPARING (a compare-and-set: one manager wins), then
   CREATING, calls ``create_kernels`` on each agent of the session (all of
   its kernels there, with the whole cluster's ``BACKENDAI_CLUSTER_*``
   layout and the session's ``bootstrap_script``, which every kernel runs
   before it is ready) under ``manager.kernel-creation-timeout``, and moves
   each kernel to RUNNING with what the agent reported.  A failure or the
   deadline moves the session to ERROR with a reason (``failed-to-start``,
   ``bootstrap-failed``, ``creation-timeout``, ``unknown-image``,
   ``insufficient-resource``, ``agent-unavailable``, ``agent-error``) and
   the agent's message in ``status_data["error"]`` (for ``bootstrap-failed``
   it ends with the script's last output), and destroys whatever the agents
   did create (what an agent or the database keeps it from destroying is
   left to that agent's next kernel sync, see :mod:`bai.manager.agents`).
   That move publishes ``session_cancelled`` with the reason
   (see :mod:`bai.manager.transitions` for the events of ERROR).
4. A batch session then runs its ``startup_command`` in batch mode
   (``execution_started``, then ``execution_finished``, ``execution_timeout``
   or, when its kernel went away, ``execution_cancelled``); when it
   finishes the session is destroyed with result SUCCESS (exit code 0,
   reason ``task-finished``) or FAILURE (reason ``task-failed``, or
   ``batch-timeout`` after ``batch_timeout`` seconds), so the
   ``session_success``/``session_failure`` events come before
   ``session_terminated``.  The job's driver is recoverable from the
   database alone: before it starts the job, a manager claims it
   (``sessions.batch_driver``, a lease in ``batch_lease`` renewed every
   third of :data:`BATCH_LEASE`, taken under the session's row lock) and
   records ``batch_deadline`` (start + ``batch_timeout``).  A RUNNING batch
   session whose lease ran out (its manager died) is claimed by the next
   reconcile pass of any manager, which asks the agent for the run with
   ``continue`` (the run id is ``batch-<session hex>``; the agent answers
   ``finished`` with the exit code again for a run already collected) and
   ends it like the first driver would, or with ``batch-timeout`` at the
   recorded deadline.  The job is never sent twice: a resumed run the agent
   does not know fails the session (``task-failed``, exit code -1).
5. :meth:`SessionRegistry.destroy_session` cancels a session that has not
   started and otherwise moves it to TERMINATING, calls ``destroy_kernel`` for
   each kernel under ``manager.kernel-termination-timeout`` and moves the
   kernels (and so the session) to TERMINATED.
6. ``agent_kernel_terminated`` reports from agents (one manager handles each)
   end the kernel: TERMINATED when it had started, ERROR when it died while
   being created; the public ``kernel_terminated`` comes from that
   transition.  A kernel in ERROR stays there (ERROR is sticky until the
   session is destroyed), so a failure's reason is never overwritten by a
   later report.

Deadlines: a reconcile loop (every few seconds) starts SCHEDULED sessions
nobody started (a manager that died mid-way), records RUNNING the sessions
in CREATING that no task of its own is starting once their agents say (the
``describe_kernels`` RPC, after :data:`ADOPT_GRACE`) that all their kernels
are up, as their creator would have (a creator still alive leaves kernels
so recorded as they are), moves sessions stuck in PREPARING/CREATING for
longer than the creation deadline (plus the RPC deadline) to ERROR
``creation-timeout``, retries the destruction of sessions
TERMINATING for longer than the termination deadline and, after twice that,
ends them ``termination-timeout``, moves sessions stuck RESTARTING to
ERROR ``restart-timeout``, and resumes the batch jobs no manager holds (see
4. above).  So no session stays PREPARING, CREATING, TERMINATING or
RESTARTING forever, nor a batch session RUNNING past its deadline.  Its
first pass comes as the registry starts.

Whenever a pending session may now fit (one was enqueued, or a session
ended and freed its slots) the registry asks for a scheduling pass with
:func:`~bai.manager.agents.request_schedule`: this manager's dispatcher at
once, every other manager's through ``do_schedule``.

Validation at enqueue
=====================

* The image must be registered in the ``images`` table, by name or alias.
  Agents register their catalog's images there with each changed heartbeat
  (:mod:`bai.manager.agents`), and fixtures may add more; the scheduler does
  not check which agent holds an image, so an agent that cannot run it makes
  the session end in ERROR ``unknown-image``.
* Resources are parsed with the slot types the alive agents' compute plugins
  declare (cpu and mem when no agent is alive); slots the request leaves out
  get the image's minimum (``ai.backend.resource.min.*``), and a request below
  the minimum is refused.
* Over policy (the keypair policy's total resource slots or
  ``max_containers_per_session``, the project's or the domain's caps):
  :class:`QuotaExceeded`.  Over the capacity of every alive agent of the
  resource group, or a slot no agent there has: :class:`ResourceLimitExceeded`.
  With no alive agent in the group the capacity check is skipped and the
  session waits for one.
* A name already used by an active session of the same owner:
  :class:`SessionAlreadyExists` (or, with ``reuse_if_exists`` and the same
  image, the existing session is returned).

Every error raised here is a :class:`~bai.common.errors.BaiError` with an
``http_status`` and a kebab-case ``error_type`` class attribute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import math
import re
import secrets
import tarfile
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
import trio

from bai.agent.files import ScratchPathError, split_path, split_upload_paths
from bai.agent.requests import MAX_BOOTSTRAP_SCRIPT
from bai.common.errors import BaiError, InvalidValue
from bai.common.events import (
    AgentKernelTerminated,
    Event,
    EventBusError,
    ExecutionCancelled,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    SessionEnqueued,
    SessionEvent,
    follow_events,
)
from bai.common.rpc import RemoteError
from bai.common.slots import (
    DEFAULT_SLOT_TYPES,
    INTRINSIC_SLOT_TYPES,
    DefaultForUnspecified,
    ResourceSlot,
)
from bai.common.types import (
    AccessKey,
    AgentId,
    ClusterMode,
    InvalidTransition,
    KernelId,
    KernelStatus,
    SessionId,
    SessionResult,
    SessionStatus,
    SessionTypes,
    SlotTypes,
)
from bai.manager import transitions
from bai.manager.agents import (
    LIVE_KERNEL_STATUSES,
    STARTED_KERNEL_STATUSES,
    AgentNotFound,
    AgentUnavailable,
    publish_events,
    request_schedule,
)
from bai.manager.db import UNAVAILABLE_ERRORS, Connection
from bai.manager.models.base import utcnow
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.image import image_aliases, images
from bai.manager.models.resource import (
    AgentStatus,
    agents,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from bai.manager.models.session import kernels, session_dependencies, sessions
from bai.manager.scheduler.types import AgentInfo, PendingSession
from bai.manager.scheduler.validation import (
    MAX_CLUSTER_SIZE,
    MAX_PRIORITY,
    UnsatisfiableRequest,
    check_satisfiable,
    normalize_architecture,
)
from bai.manager.transitions import check_reason, initial_status

if TYPE_CHECKING:
    from bai.manager.context import ManagerContext

__all__ = [
    "ACTIVE_STATUSES",
    "EXECUTE_MODES",
    "MAX_UPLOAD_FILES",
    "MAX_UPLOAD_FILE_SIZE",
    "STARTING_STATUSES",
    "AgentError",
    "DestroyResult",
    "EnqueueResult",
    "ImageNotFound",
    "InvalidSessionRequest",
    "KernelFileError",
    "KernelInfo",
    "QuotaExceeded",
    "ResourceGroupNotAllowed",
    "ResourceLimitExceeded",
    "SessionAlreadyExists",
    "SessionBusy",
    "SessionFileTooLarge",
    "SessionInfo",
    "SessionNotFound",
    "SessionNotRunning",
    "SessionRegistry",
    "SessionRequest",
    "TooManySessionsMatched",
    "cap_limits",
    "keypair_limits",
    "slot_types_of",
]

log = logging.getLogger(__name__)

#: Files one upload may carry, and bytes per file (the spec's limits).
MAX_UPLOAD_FILES: Final = 20
MAX_UPLOAD_FILE_SIZE: Final = 1024 * 1024
#: Paths one download may name.
MAX_DOWNLOAD_FILES: Final = 5
#: The execute modes of the spec.
EXECUTE_MODES: Final = ("query", "batch", "continue", "input", "complete")
#: Statuses of a session that has not started yet (what ``enqueueOnly=false`` waits out).
STARTING_STATUSES: Final = frozenset(
    SessionStatus(name) for name in transitions.NOT_STARTED_STATUSES
)
#: Statuses of a session that is not over (its name is taken).
ACTIVE_STATUSES: Final = frozenset(SessionStatus) - {
    SessionStatus.TERMINATED,
    SessionStatus.CANCELLED,
}
_PRE_START: Final = frozenset(
    {
        SessionStatus.PREPARING,
        SessionStatus.PULLING,
        SessionStatus.PREPARED,
        SessionStatus.CREATING,
    }
)
_RUNNING: Final = frozenset({SessionStatus.RUNNING, SessionStatus.RUNNING_DEGRADED})
_KERNEL_PRE_START: Final = frozenset(
    {
        KernelStatus.PREPARING,
        KernelStatus.PULLING,
        KernelStatus.PREPARED,
        KernelStatus.CREATING,
    }
)
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,62}[A-Za-z0-9]\Z", re.ASCII)
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
_HEX_PREFIX_RE: Final = re.compile(r"[0-9a-fA-F-]{4,36}\Z", re.ASCII)
_RUN_ID_MAX: Final = 256
#: How long one batch-mode execute call waits before answering ``continued``.
BATCH_FLUSH_TIMEOUT: Final = 30.0
#: Seconds a manager's claim on a batch job holds unless renewed (it renews every third of it).
BATCH_LEASE: Final = 15.0
#: Seconds between two tries to resume a batch job whose run a dead driver's call still holds.
BATCH_RESUME_RETRY: Final = 1.0
# What the agent's refusals of a ``continue`` say (bai.agent.server, bai.agent.runnerlink).
_RUN_BUSY: Final = "another execute call is already waiting"
_RUN_UNKNOWN: Final = "no run "
#: How often counted queries are written to ``sessions.num_queries``.
QUERY_COUNT_FLUSH: Final = 1.0
#: Seconds a SCHEDULED session may wait for the manager that scheduled it.
SCHEDULED_GRACE: Final = 2.0
#: Seconds a session may be PREPARING/CREATING before a manager that is not starting it asks
#: its agents whether its kernels are up (its creator may have died).
ADOPT_GRACE: Final = 2.0
#: Bound on that question (a trivial call): an agent too slow to answer is asked again next pass,
#: and one pass of the reconcile loop is not held up for long by an agent that is down.
ADOPT_ASK_TIMEOUT: Final = 2.0
#: Seconds between two polls of a waiter, in case an event was missed.
WAIT_POLL: Final = 2.0


# --------------------------------------------------------------------------- errors


class SessionNotFound(transitions.SessionNotFound):
    """No session matches the given id or name (for this owner)."""

    http_status = 404
    error_type = "session-not-found"


class TooManySessionsMatched(BaiError):
    """A name or id prefix matches several sessions; ``matches`` lists them."""

    http_status = 400
    error_type = "too-many-sessions-matched"
    error_title = "Too many sessions matched."

    def __init__(self, message: str, matches: Sequence[SessionInfo]) -> None:
        super().__init__(message)
        self.matches = tuple(matches)

    @property
    def extra_data(self) -> dict[str, Any]:
        """What the official client reads from the problem's ``data``."""
        return {"matches": [match.match_json() for match in self.matches]}


class SessionAlreadyExists(BaiError):
    """The owner already has an active session of that name; ``session_id`` is its id."""

    http_status = 409
    error_type = "session-already-exists"
    error_title = "The session already exists."

    def __init__(self, message: str, session_id: uuid.UUID) -> None:
        super().__init__(message)
        self.session_id = session_id

    @property
    def extra_data(self) -> dict[str, Any]:
        """What the official client reads from the problem's ``data``."""
        return {"existingSessionId": str(self.session_id)}


class InvalidSessionRequest(InvalidValue):
    """A request parameter is malformed or not allowed; ``field`` names it."""

    http_status = 400
    error_type = "invalid-api-params"


class ImageNotFound(InvalidValue):
    """No registered image has that name or alias (for that architecture)."""

    http_status = 404
    error_type = "image-not-found"


class QuotaExceeded(InvalidValue):
    """The request exceeds a resource policy (keypair, project or domain)."""

    http_status = 412
    error_type = "quota-exceeded"


class ResourceLimitExceeded(InvalidValue):
    """No agent of the resource group could ever host the request."""

    http_status = 406
    error_type = "resource-limit-exceeded"


class ResourceGroupNotAllowed(InvalidValue):
    """The owner may not use the named resource group (or may use none)."""

    http_status = 403
    error_type = "resource-group-not-allowed"


class SessionNotRunning(BaiError):
    """The operation needs a running session (or kernel) and this one is not."""

    http_status = 409
    error_type = "session-not-running"


class SessionBusy(BaiError):
    """The session is being created, restarted or terminated; retry, or destroy with ``forced``."""

    http_status = 409
    error_type = "session-busy"


class SessionFileTooLarge(InvalidValue):
    """An upload or download exceeds its size limit."""

    http_status = 413
    error_type = "file-too-large"


class KernelFileError(BaiError):
    """A file operation inside the kernel failed (missing file, not a folder, ...)."""

    http_status = 404
    error_type = "kernel-file-error"


class AgentError(BaiError):
    """The agent answered with an error the manager did not expect; the message carries it."""

    http_status = 502
    error_type = "agent-error"


# ----------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What a client asks for when creating a session (the API's parsed body).

    ``resources`` is the Creation Config's per-kernel Resource Slot Object,
    still raw (``{"cpu": "2", "mem": "4g"}``); ``group`` is the project's name
    (or id); ``dependencies`` are ids or names of the owner's sessions.
    ``starts_at`` must be timezone-aware.
    """

    image: str
    name: str | None = None
    session_type: SessionTypes = SessionTypes.INTERACTIVE
    architecture: str | None = None
    group: str = "default"
    domain: str | None = None
    scaling_group: str | None = None
    cluster_size: int = 1
    cluster_mode: ClusterMode = ClusterMode.SINGLE_NODE
    resources: Mapping[str, Any] | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[str] = ()
    startup_command: str | None = None
    bootstrap_script: str | None = None
    starts_at: datetime | None = None
    batch_timeout: float | None = None
    dependencies: Sequence[str | uuid.UUID] = ()
    tag: str | None = None
    priority: int = 0
    callback_url: str | None = None
    designated_agent: str | None = None
    reuse_if_exists: bool = False


@dataclass(frozen=True, slots=True)
class KernelInfo:
    """One kernel of a session, as the database has it."""

    id: KernelId
    session_id: SessionId
    cluster_role: str
    cluster_idx: int
    local_rank: int
    cluster_hostname: str
    agent: AgentId | None
    agent_addr: str | None
    image: str
    architecture: str
    status: KernelStatus
    status_info: str | None
    status_changed: datetime
    requested_slots: ResourceSlot
    occupied_slots: ResourceSlot
    attached_devices: Mapping[str, Any]
    service_ports: tuple[Mapping[str, Any], ...]
    kernel_host: str | None
    container_id: str | None
    exit_code: int | None
    created_at: datetime
    terminated_at: datetime | None
    last_stat: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session and its kernels (main kernel first, then by local rank)."""

    id: SessionId
    name: str
    access_key: AccessKey
    user_uuid: uuid.UUID
    domain_name: str
    group_id: uuid.UUID
    scaling_group: str | None
    session_type: SessionTypes
    cluster_mode: ClusterMode
    cluster_size: int
    priority: int
    image: str
    architecture: str
    tag: str | None
    status: SessionStatus
    status_info: str | None
    status_data: Mapping[str, Any] | None
    status_history: tuple[Mapping[str, Any], ...]
    status_changed: datetime
    created_at: datetime
    terminated_at: datetime | None
    starts_at: datetime | None
    batch_timeout: int | None
    startup_command: str | None
    bootstrap_script: str | None
    callback_url: str | None
    result: SessionResult
    requested_slots: ResourceSlot
    occupying_slots: ResourceSlot
    vfolder_mounts: tuple[Any, ...]
    environ: Mapping[str, str]
    num_queries: int
    designated_agent: str | None
    kernels: tuple[KernelInfo, ...]

    @property
    def main_kernel(self) -> KernelInfo:
        """The kernel the REST API talks to."""
        return self.kernels[0]

    @property
    def service_ports(self) -> tuple[Mapping[str, Any], ...]:
        """The main kernel's service ports (``[{name, protocol, container_ports, host_ports}]``)."""
        return self.main_kernel.service_ports

    @property
    def is_active(self) -> bool:
        """Whether the session is not over (TERMINATED or CANCELLED)."""
        return self.status in ACTIVE_STATUSES

    def match_json(self) -> dict[str, Any]:
        """How the API lists this session among matches: ``{id, name, status}``."""
        return {"id": str(self.id), "name": self.name, "status": self.status.value}


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The session :meth:`SessionRegistry.enqueue_session` made (``created``) or reused."""

    session: SessionInfo
    created: bool


@dataclass(frozen=True, slots=True)
class DestroyResult:
    """The session after a destroy, and its main kernel's last stats."""

    session: SessionInfo
    stats: Mapping[str, Any] | None


SessionRef = SessionInfo | uuid.UUID


@dataclass(frozen=True, slots=True)
class _BatchClaim:
    """A batch job this manager now drives."""

    #: Whether a driver already sent it to its kernel (this one resumes it).
    started: bool
    deadline: datetime | None


@dataclass(slots=True)
class _Owner:
    access_key: str
    user_id: uuid.UUID
    email: str
    domain_name: str
    role: UserRole
    resource_policy: str


@dataclass(slots=True)
class _KernelRow:
    id: uuid.UUID
    agent: str | None
    status: KernelStatus


# --------------------------------------------------------------------------- loading

_KERNEL_COLUMNS: Final = (
    kernels.c.id.label("k_id"),
    kernels.c.cluster_role.label("k_cluster_role"),
    kernels.c.cluster_idx.label("k_cluster_idx"),
    kernels.c.local_rank.label("k_local_rank"),
    kernels.c.cluster_hostname.label("k_cluster_hostname"),
    kernels.c.agent.label("k_agent"),
    kernels.c.agent_addr.label("k_agent_addr"),
    kernels.c.image.label("k_image"),
    kernels.c.architecture.label("k_architecture"),
    kernels.c.status.label("k_status"),
    kernels.c.status_info.label("k_status_info"),
    kernels.c.status_changed.label("k_status_changed"),
    kernels.c.requested_slots.label("k_requested_slots"),
    kernels.c.occupied_slots.label("k_occupied_slots"),
    kernels.c.attached_devices.label("k_attached_devices"),
    kernels.c.service_ports.label("k_service_ports"),
    kernels.c.kernel_host.label("k_kernel_host"),
    kernels.c.container_id.label("k_container_id"),
    kernels.c.exit_code.label("k_exit_code"),
    kernels.c.created_at.label("k_created_at"),
    kernels.c.terminated_at.label("k_terminated_at"),
    kernels.c.last_stat.label("k_last_stat"),
)


def _kernel_info(row: Any) -> KernelInfo:
    return KernelInfo(
        id=KernelId(row.k_id),
        session_id=SessionId(row.id),
        cluster_role=row.k_cluster_role,
        cluster_idx=row.k_cluster_idx,
        local_rank=row.k_local_rank,
        cluster_hostname=row.k_cluster_hostname,
        agent=AgentId(row.k_agent) if row.k_agent is not None else None,
        agent_addr=row.k_agent_addr,
        image=row.k_image,
        architecture=row.k_architecture,
        status=KernelStatus(row.k_status),
        status_info=row.k_status_info,
        status_changed=row.k_status_changed,
        requested_slots=row.k_requested_slots,
        occupied_slots=row.k_occupied_slots,
        attached_devices=row.k_attached_devices or {},
        service_ports=tuple(row.k_service_ports or ()),
        kernel_host=row.k_kernel_host,
        container_id=row.k_container_id,
        exit_code=row.k_exit_code,
        created_at=row.k_created_at,
        terminated_at=row.k_terminated_at,
        last_stat=row.k_last_stat,
    )


def _session_info(row: Any, kernel_list: list[KernelInfo]) -> SessionInfo:
    kernel_list.sort(key=lambda k: (k.cluster_role != "main", k.local_rank, k.cluster_idx))
    return SessionInfo(
        id=SessionId(row.id),
        name=row.name,
        access_key=AccessKey(row.access_key),
        user_uuid=row.user_uuid,
        domain_name=row.domain_name,
        group_id=row.group_id,
        scaling_group=row.scaling_group_name,
        session_type=SessionTypes(row.session_type),
        cluster_mode=ClusterMode(row.cluster_mode),
        cluster_size=row.cluster_size,
        priority=row.priority,
        image=row.image,
        architecture=row.architecture,
        tag=row.tag,
        status=SessionStatus(row.status),
        status_info=row.status_info,
        status_data=row.status_data,
        status_history=tuple(row.status_history or ()),
        status_changed=row.status_changed,
        created_at=row.created_at,
        terminated_at=row.terminated_at,
        starts_at=row.starts_at,
        batch_timeout=row.batch_timeout,
        startup_command=row.startup_command,
        bootstrap_script=row.bootstrap_script,
        callback_url=row.callback_url,
        result=SessionResult(row.result),
        requested_slots=row.requested_slots,
        occupying_slots=row.occupying_slots,
        vfolder_mounts=tuple(row.vfolder_mounts or ()),
        environ=dict(row.environ or {}),
        num_queries=row.num_queries,
        designated_agent=row.designated_agent,
        kernels=tuple(kernel_list),
    )


def _session_query(where: sa.ColumnElement[bool], *, limit: int | None = None) -> sa.Select[Any]:
    """Sessions matching *where* (at most *limit*, newest first) joined with their kernels."""
    order = (sessions.c.created_at.desc(), sessions.c.id)
    chosen = sa.select(sessions.c.id).where(where).order_by(*order)
    if limit is not None:
        chosen = chosen.limit(limit)
    return (
        sa.select(sessions, *_KERNEL_COLUMNS)
        .select_from(sessions.join(kernels, kernels.c.session_id == sessions.c.id))
        .where(sessions.c.id.in_(chosen.scalar_subquery()))
        .order_by(*order)
    )


def _id_prefix(text: str) -> sa.ColumnElement[bool] | None:
    """Sessions whose id starts with the hex digits of *text* (dashes ignored); None if not hex."""
    digits = text.replace("-", "").lower()
    if not digits or any(c not in "0123456789abcdef" for c in digits):
        return None
    id_text = sa.func.replace(sa.cast(sessions.c.id, sa.String), "-", "")
    return id_text.like(f"{digits}%")


def _group_rows(rows: Iterable[Any]) -> list[SessionInfo]:
    order: list[Any] = []
    grouped: dict[Any, tuple[Any, list[KernelInfo]]] = {}
    for row in rows:
        entry = grouped.get(row.id)
        if entry is None:
            entry = grouped[row.id] = (row, [])
            order.append(row.id)
        entry[1].append(_kernel_info(row))
    return [_session_info(*grouped[sid]) for sid in order]


def _terminal_value() -> list[str]:
    return [SessionStatus.TERMINATED.value, SessionStatus.CANCELLED.value]


# ------------------------------------------------------------------------ helpers


def _problem(exc: InvalidValue, kind: type[InvalidValue], field: str) -> InvalidValue:
    inner = f"{field}.{exc.field}" if exc.field else field
    return kind(exc.problem, value=exc.value, field=inner)


def _check_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidSessionRequest(
            "a session name is 4 to 64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
            value=name,
            field=field,
        )
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise InvalidSessionRequest("a session name must not be a UUID", value=name, field=field)


def _reason_of(text: object, fallback: str) -> str:
    try:
        return check_reason(text)
    except InvalidValue:
        return fallback


def _kernel_gone(answer: object) -> bool:
    """Whether an agent answered that it does not have the kernel (nothing left to destroy)."""
    return isinstance(answer, RemoteError) and answer.remote_type == "KernelNotFound"


def _merge_status_data(current: Any, key: str, value: Any) -> dict[str, Any]:
    data = dict(current) if isinstance(current, Mapping) else {}
    data[key] = value
    return data


def slot_types_of(plugin_infos: Iterable[Any]) -> dict[str, SlotTypes]:
    """The slot types the compute plugins of some agents declare (intrinsic ones first)."""
    known: dict[str, SlotTypes] = dict(INTRINSIC_SLOT_TYPES)
    for plugins in plugin_infos:
        if not isinstance(plugins, Mapping):
            continue
        for info in plugins.values():
            declared = info.get("slot_types") if isinstance(info, Mapping) else None
            if not isinstance(declared, Mapping):
                continue
            for slot, kind in declared.items():
                try:
                    known.setdefault(str(slot), SlotTypes(kind))
                except ValueError:
                    continue
    return known


def keypair_limits(
    total_resource_slots: ResourceSlot,
    default_for_unspecified: DefaultForUnspecified | str,
    slot_names: Iterable[str],
) -> ResourceSlot:
    """A keypair policy's limit for each of *slot_names* (and every slot the policy names).

    A slot the policy does not name is 0 under ``LIMITED`` and infinite under
    ``UNLIMITED``.
    """
    named = dict(total_resource_slots.items())
    unlimited = DefaultForUnspecified(default_for_unspecified) is DefaultForUnspecified.UNLIMITED
    fill = Decimal("Infinity") if unlimited else Decimal(0)
    return ResourceSlot({**{slot: fill for slot in slot_names}, **named})


def cap_limits(cap: object, slot_names: Iterable[str]) -> ResourceSlot | None:
    """A project's or domain's ``total_resource_slots`` as limits (None when it caps nothing).

    A cap limits only the slots it names; the others of *slot_names* are infinite.
    """
    if not isinstance(cap, ResourceSlot) or not len(cap):
        return None
    return ResourceSlot({**{slot: Decimal("Infinity") for slot in slot_names}, **dict(cap.items())})


def _excess(total: ResourceSlot, limit: ResourceSlot) -> str:
    parts = [
        f"{key} (requesting {total.get(key, Decimal(0))}, limit {limit.get(key, Decimal(0))})"
        for key in sorted(set(total) | set(limit))
        if total.get(key, Decimal(0)) > limit.get(key, Decimal(0))
    ]
    return ", ".join(parts)


#: Reasons an agent gives for a kernel that did not start that the session repeats.
_AGENT_START_REASONS: Final = frozenset({"bootstrap-failed"})


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        detail = exc.detail if isinstance(exc.detail, Mapping) else {}
        reasons = detail.get("reasons")
        if exc.remote_type == "KernelCreationFailed" and isinstance(reasons, Mapping):
            for reason in reasons.values():
                if reason in _AGENT_START_REASONS:
                    return str(reason)
        return {
            "KernelCreationFailed": "failed-to-start",
            "UnknownImage": "unknown-image",
            "InsufficientResource": "insufficient-resource",
            "FragmentedResource": "insufficient-resource",
            "InvalidAllocation": "insufficient-resource",
            "InsufficientPorts": "insufficient-resource",
            "KernelAlreadyExists": "kernel-already-exists",
        }.get(exc.remote_type, "agent-error")
    if isinstance(exc, trio.TooSlowError):
        return "creation-timeout"
    if isinstance(exc, AgentUnavailable | AgentNotFound):
        return "agent-unavailable"
    return "agent-error"


def _error_data(exc: BaseException, agent_id: str | None) -> dict[str, Any]:
    if isinstance(exc, RemoteError):
        return {
            "src": "agent",
            "agent_id": agent_id,
            "name": exc.remote_type,
            "repr": exc.remote_message,
            "detail": exc.detail if isinstance(exc.detail, Mapping | list | str) else None,
        }
    if isinstance(exc, trio.TooSlowError):
        return {
            "src": "manager",
            "agent_id": agent_id,
            "name": "CreationTimeout",
            "repr": "the agent did not create the kernels in time",
        }
    return {"src": "manager", "agent_id": agent_id, "name": type(exc).__name__, "repr": str(exc)}


def _map_remote(exc: RemoteError, path_field: str | None = None) -> BaiError:
    """The registry error for an error an agent answered to a kernel operation.

    *path_field* names the request's field that a refused path came from.
    """
    detail = exc.detail if isinstance(exc.detail, Mapping) else {}
    field_name = detail.get("field") if isinstance(detail.get("field"), str) else None
    problem = detail.get("problem")
    message = exc.remote_message
    kind = exc.remote_type
    if kind == "ScratchPathError" and path_field is not None:
        field_name = path_field
    if kind in ("InvalidRequest", "RunError", "ScratchPathError"):
        if isinstance(problem, str):
            # The agent's message already names its field and value: say them once.
            return InvalidSessionRequest(problem, value=detail.get("value"), field=field_name)
        return InvalidSessionRequest(message, value=None, field=field_name)
    if kind == "FileTooLarge" and isinstance(problem, str):
        return SessionFileTooLarge(problem, value=detail.get("value"), field=path_field)
    if kind == "KernelFileError":
        return KernelFileError(message)
    if kind == "FileOperationTimeout":
        return AgentUnavailable(message)
    if kind in ("KernelNotFound", "KernelNotRunning", "RunnerLinkError"):
        return SessionNotRunning(f"the session's kernel is not running: {message}")
    return AgentError(f"{kind}: {message}")


# ------------------------------------------------------------------------ registry


class SessionRegistry:
    """Compute sessions from enqueue to termination; see the module docstring.

    Built with the manager's context (config, db, bus; the agent pool and the
    dispatcher are reached through it).  Run :meth:`serve` in the manager's
    nursery: it handles agents' ``agent_kernel_terminated`` reports, runs the
    reconcile loop and owns the tasks that start sessions and run batch jobs.
    """

    def __init__(self, ctx: ManagerContext) -> None:
        self._ctx = ctx
        self._db = ctx.db
        self._bus = ctx.bus
        section = ctx.config.manager
        self.rpc_timeout = float(section.rpc_timeout)
        self.creation_timeout = float(section.kernel_creation_timeout)
        self.termination_timeout = float(section.kernel_termination_timeout)
        self.flush_timeout = float(section.execute_flush_timeout)
        self.reconcile_interval = max(0.2, min(5.0, float(section.scheduler_interval)))
        self._nursery: trio.Nursery | None = None
        self._starting: set[SessionId] = set()
        self._terminating: set[SessionId] = set()
        self._restarting: set[SessionId] = set()
        self._batches: set[SessionId] = set()
        # Names this registry in the batch jobs it drives (sessions.batch_driver).
        self._driver_id = secrets.token_hex(16)
        self.batch_lease = BATCH_LEASE
        self._waiters: dict[SessionId, trio.Event] = {}
        # Kernel-end reports about sessions this process is starting, applied after.
        self._deferred: dict[SessionId, list[AgentKernelTerminated]] = {}
        self._query_counts: dict[SessionId, int] = {}

    # ------------------------------------------------------------------ service

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled (see the class docstring); report started once events flow."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        follow_events,
                        self._bus,
                        (SessionEvent,),
                        self._on_session_event,
                        buffer_size=100_000,
                        on_overflow=self._on_session_overflow,
                    )
                )
                await nursery.start(self._consume_kernel_events)
                nursery.start_soon(self._reconcile_loop)
                nursery.start_soon(self._flush_query_counts)
                self._nursery = nursery
                task_status.started()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5.0
                await self._write_query_counts()

    async def _on_session_event(self, event: Event) -> None:
        assert isinstance(event, SessionEvent)
        self.notify([event.session_id])

    @staticmethod
    def _on_session_overflow() -> None:
        # Waiters also poll the database, so a missed wake-up only delays them.
        log.warning("session events came faster than they were handled")

    def notify(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Wake the :meth:`wait_for_start` callers of these sessions (their status changed).

        Session events from any manager wake them through the bus; the
        registry also calls this right after its own moves out of the starting
        statuses, so that its waiters do not depend on the bus.
        """
        for session_id in session_ids:
            waiter = self._waiters.pop(SessionId(session_id), None)
            if waiter is not None:
                waiter.set()

    async def _consume_kernel_events(self, *, task_status: trio.TaskStatus[None]) -> None:
        types = (AgentKernelTerminated,)
        async with self._bus.consume("manager.kernel-terminated", types=types) as c:
            task_status.started()
            async for delivery in c:
                event = delivery.event
                assert isinstance(event, AgentKernelTerminated)
                try:
                    await self.handle_kernel_terminated(event)
                except Exception:
                    log.exception("handling the end of kernel %s failed", event.kernel_id)
                try:
                    await delivery.ack()
                except trio.ClosedResourceError:
                    return
                except EventBusError as exc:
                    # Delivered again later; handling a report twice changes nothing.
                    log.warning("could not acknowledge agent_kernel_terminated: %s", exc)

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        nursery = self._nursery
        if nursery is None:
            return False
        nursery.start_soon(fn, *args)
        return True

    async def _commit_events(self, events: Iterable[Event]) -> None:
        await publish_events(self._bus, events)

    # ------------------------------------------------------------------- lookup

    async def get_session_by_id(self, session_id: uuid.UUID) -> SessionInfo:
        """The session with this id, in any status; :class:`SessionNotFound` otherwise."""
        found = _group_rows(await self._db.fetch(_session_query(sessions.c.id == session_id)))
        if not found:
            raise SessionNotFound(f"no session has the id {session_id}")
        return found[0]

    async def get_session(
        self,
        ref: str | uuid.UUID,
        *,
        access_key: str | None = None,
        include_terminated: bool = False,
    ) -> SessionInfo:
        """Find a session by id, name or id prefix, as the API's ``:id`` parameter names it.

        With *access_key*, only that owner's sessions match.  Order of
        attempts: an exact id; a name among active sessions; an id prefix (4
        or more hex digits) among active sessions; then, with
        *include_terminated*, the newest ended session of that name or id
        prefix.  Raises :class:`SessionNotFound`, or
        :class:`TooManySessionsMatched` when a prefix is ambiguous.
        """
        owner = sessions.c.access_key == access_key if access_key is not None else sa.true()
        if isinstance(ref, uuid.UUID):
            exact: uuid.UUID | None = ref
        else:
            # No session name holds a NUL, and PostgreSQL refuses one in a query.
            if not isinstance(ref, str) or not 0 < len(ref) <= 64 or "\x00" in ref:
                raise SessionNotFound(f"no session is called {ref!r}")
            try:
                exact = uuid.UUID(ref)
            except ValueError:
                exact = None
        if exact is not None:
            found = _group_rows(
                await self._db.fetch(_session_query(sa.and_(sessions.c.id == exact, owner)))
            )
            if found and (include_terminated or found[0].is_active):
                return found[0]
            raise SessionNotFound(f"no session has the id {exact}")
        assert isinstance(ref, str)
        active = sessions.c.status.notin_(_terminal_value())
        scopes = [active, sa.true()] if include_terminated else [active]
        for scope in scopes:
            named = _group_rows(
                await self._db.fetch(
                    _session_query(sa.and_(sessions.c.name == ref, owner, scope), limit=1)
                )
            )
            if named:
                return named[0]
            if _HEX_PREFIX_RE.match(ref):
                matches = await self._by_prefix(ref, owner, scope, limit=10)
                if len(matches) == 1:
                    return matches[0]
                if matches and scope is active:
                    raise TooManySessionsMatched(
                        f"{len(matches)} sessions have ids starting with {ref!r}", matches
                    )
                if matches:
                    return matches[0]
        raise SessionNotFound(f"no session is called {ref!r}")

    async def _by_prefix(
        self, prefix: str, owner: sa.ColumnElement[bool], scope: sa.ColumnElement[bool], limit: int
    ) -> list[SessionInfo]:
        by_id = _id_prefix(prefix)
        if by_id is None:
            return []
        return _group_rows(
            await self._db.fetch(_session_query(sa.and_(by_id, owner, scope), limit=limit))
        )

    async def match_sessions(
        self, access_key: str | None, text: str, *, limit: int = 10
    ) -> list[SessionInfo]:
        """Active sessions whose name or id starts with *text* (``match``), newest first."""
        if not isinstance(text, str) or not text or len(text) > 64:
            raise InvalidSessionRequest("must be 1 to 64 characters", value=text, field="id")
        if "\x00" in text:
            raise InvalidSessionRequest("must not contain NUL", value=text, field="id")
        owner = sessions.c.access_key == access_key if access_key is not None else sa.true()
        active = sessions.c.status.notin_(_terminal_value())
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        condition: sa.ColumnElement[bool] = sessions.c.name.like(f"{escaped}%", escape="\\")
        by_id = _id_prefix(text)
        if by_id is not None:
            condition = sa.or_(condition, by_id)
        rows = await self._db.fetch(
            _session_query(sa.and_(condition, owner, active), limit=max(1, min(limit, 100)))
        )
        return _group_rows(rows)

    async def _resolve(self, session: SessionRef) -> SessionInfo:
        if isinstance(session, SessionInfo):
            return session
        return await self.get_session_by_id(session)

    async def wait_for_start(
        self,
        session_id: uuid.UUID,
        timeout: float | None = None,  # noqa: ASYNC109 - maxWaitSeconds is the contract
    ) -> SessionInfo:
        """Wait until the session leaves PENDING … CREATING, at most *timeout* seconds.

        Returns the session as it is then (RUNNING, ERROR, CANCELLED, ... or,
        when the deadline passed first, still starting).  *timeout* ``None``
        waits without a limit (the spec's ``maxWaitSeconds`` of 0).
        """
        sid = SessionId(session_id)
        deadline = math.inf if timeout is None else trio.current_time() + max(timeout, 0.0)
        while True:
            event = self._waiters.setdefault(sid, trio.Event())
            info = await self.get_session_by_id(sid)
            if info.status not in STARTING_STATUSES or trio.current_time() >= deadline:
                return info
            with trio.move_on_at(min(deadline, trio.current_time() + WAIT_POLL)):
                await event.wait()

    # ------------------------------------------------------------------ enqueue

    async def enqueue_session(self, access_key: str, request: SessionRequest) -> EnqueueResult:
        """Validate *request* and queue a new session owned by *access_key*.

        Returns the new session (PENDING), or with ``reuse_if_exists`` the
        owner's active session of the same name and image.  Raises
        :class:`InvalidSessionRequest`, :class:`ImageNotFound`,
        :class:`QuotaExceeded`, :class:`ResourceLimitExceeded`,
        :class:`ResourceGroupNotAllowed` or :class:`SessionAlreadyExists`; the
        database is then unchanged.
        """
        request = _normalized(request)
        _check_request(request)
        name = request.name or f"session-{secrets.token_hex(5)}"
        if request.name is not None:
            _check_name(request.name)

        async def run(conn: Connection) -> EnqueueResult:
            return await self._enqueue(conn, access_key, request, name)

        result = await self._db.transaction(run)
        if result.created:
            info = result.session
            await self._commit_events(
                [
                    SessionEnqueued(
                        session_id=info.id,
                        owner_access_key=info.access_key,
                        session_name=info.name,
                        reason="enqueued",
                    )
                ]
            )
            await request_schedule(self._ctx)
        return result

    async def _enqueue(
        self, conn: Connection, access_key: str, request: SessionRequest, name: str
    ) -> EnqueueResult:
        owner = await _load_owner(conn, access_key)
        existing = (
            await conn.execute(
                sa.select(sessions.c.id, sessions.c.image).where(
                    sessions.c.access_key == owner.access_key,
                    sessions.c.name == name,
                    sessions.c.status.notin_(_terminal_value()),
                )
            )
        ).first()
        image_name, image_arch, image_resources = await _resolve_image(
            conn, request.image, request.architecture
        )
        if existing is not None:
            if request.reuse_if_exists and existing.image == image_name:
                found = _group_rows(
                    await conn.execute(_session_query(sessions.c.id == existing.id))
                )
                return EnqueueResult(found[0], created=False)
            raise SessionAlreadyExists(
                f"an active session called {name!r} already exists", existing.id
            )
        domain_name = await _check_domain(conn, owner, request.domain)
        group_id = await _check_group(conn, owner, domain_name, request.group)
        alive_rows = (
            await conn.execute(
                sa.select(
                    agents.c.id,
                    agents.c.scaling_group,
                    agents.c.architecture,
                    agents.c.available_slots,
                    agents.c.compute_plugins,
                ).where(agents.c.status == AgentStatus.ALIVE.value)
            )
        ).all()
        known_slots = (
            slot_types_of(row.compute_plugins for row in alive_rows)
            if alive_rows
            else dict(DEFAULT_SLOT_TYPES)
        )
        per_kernel = _kernel_slots(request.resources, image_resources, known_slots)
        total = per_kernel * request.cluster_size
        await _check_policies(conn, owner, group_id, domain_name, request, total, known_slots)
        allowed = await _allowed_groups(conn, owner, domain_name, group_id)
        if request.scaling_group is not None:
            if request.scaling_group not in allowed:
                raise ResourceGroupNotAllowed(
                    "the resource group does not exist or is not allowed for this owner",
                    value=request.scaling_group,
                    field="scaling_group",
                )
            candidates = [request.scaling_group]
        else:
            candidates = sorted(allowed)
        if not candidates:
            raise ResourceGroupNotAllowed(
                "the owner may use no resource group", value=owner.access_key, field="scaling_group"
            )
        now = utcnow()
        session_id = SessionId(uuid.uuid4())
        pending = PendingSession(
            id=session_id,
            access_key=AccessKey(owner.access_key),
            user_id=owner.user_id,
            group_id=group_id,
            domain_name=domain_name,
            resource_group=candidates[0],
            created_at=now,
            kernels=(per_kernel,) * request.cluster_size,
            priority=request.priority,
            cluster_mode=request.cluster_mode,
            architecture=image_arch,
            designated_agent=AgentId(request.designated_agent)
            if request.designated_agent
            else None,
        )
        chosen = await _choose_group(conn, pending, candidates, alive_rows, request.session_type)
        dependencies = await _resolve_dependencies(conn, owner, request.dependencies)
        await conn.execute(
            sa.insert(sessions).values(
                id=session_id,
                name=name,
                session_type=request.session_type,
                priority=request.priority,
                cluster_mode=request.cluster_mode,
                cluster_size=request.cluster_size,
                domain_name=domain_name,
                group_id=group_id,
                user_uuid=owner.user_id,
                access_key=owner.access_key,
                scaling_group_name=chosen,
                designated_agent=request.designated_agent,
                image=image_name,
                architecture=image_arch,
                tag=request.tag,
                created_at=now,
                starts_at=request.starts_at,
                batch_timeout=(
                    math.ceil(request.batch_timeout) if request.batch_timeout is not None else None
                ),
                startup_command=request.startup_command,
                bootstrap_script=request.bootstrap_script,
                callback_url=request.callback_url,
                requested_slots=total,
                occupying_slots=ResourceSlot(),
                vfolder_mounts=list(request.mounts),
                environ=dict(request.environ),
                **initial_status(SessionStatus.PENDING, "enqueued", now=now),
            )
        )
        kernel_rows = []
        for rank in range(request.cluster_size):
            role, idx = ("main", 1) if rank == 0 else ("sub", rank)
            kernel_rows.append(
                {
                    "id": uuid.uuid4(),
                    "session_id": session_id,
                    "cluster_role": role,
                    "cluster_idx": idx,
                    "local_rank": rank,
                    "cluster_hostname": f"{role}{idx}",
                    "image": image_name,
                    "architecture": image_arch,
                    "requested_slots": per_kernel,
                    "occupied_slots": ResourceSlot(),
                    "created_at": now,
                    **initial_status(KernelStatus.PENDING, "enqueued", now=now),
                }
            )
        await conn.execute(sa.insert(kernels), kernel_rows)
        if dependencies:
            await conn.execute(
                sa.insert(session_dependencies),
                [{"session_id": session_id, "depends_on": dep} for dep in dependencies],
            )
        found = _group_rows(await conn.execute(_session_query(sessions.c.id == session_id)))
        return EnqueueResult(found[0], created=True)

    # -------------------------------------------------------------------- start

    def start_scheduled(self, session_ids: Iterable[uuid.UUID]) -> None:
        """Start each SCHEDULED session in the background (the dispatcher's hand-off).

        A session another task or manager already started is left alone.
        Without a running registry the sessions stay SCHEDULED until the
        reconcile loop of some manager starts them.
        """
        for raw in session_ids:
            sid = SessionId(raw)
            if sid in self._starting or self._nursery is None:
                continue
            self._starting.add(sid)
            self._spawn(self._start_task, sid)

    async def _start_task(self, session_id: SessionId) -> None:
        try:
            await self._start(session_id)
        except Exception:
            log.exception("starting session %s failed", session_id)
        finally:
            self._starting.discard(session_id)
        for event in self._deferred.pop(session_id, []):
            try:
                await self.handle_kernel_terminated(event)
            except Exception:
                log.exception("handling the end of kernel %s failed", event.kernel_id)

    async def _start(self, session_id: SessionId) -> None:
        events: list[Event] = []

        async def prepare(conn: Connection) -> tuple[Any, list[Any]] | None:
            events.clear()
            try:
                result = await transitions.transition_session(
                    conn, session_id, SessionStatus.PREPARING, "preparing", cascade_kernels=True
                )
            except (InvalidTransition, transitions.SessionNotFound):
                return None
            events.extend(result.events)
            session_row = (
                await conn.execute(sa.select(sessions).where(sessions.c.id == session_id))
            ).one()
            kernel_rows = (
                await conn.execute(
                    sa.select(kernels)
                    .where(kernels.c.session_id == session_id)
                    .order_by(kernels.c.local_rank)
                )
            ).all()
            return session_row, kernel_rows

        loaded = await self._db.transaction(prepare)
        await self._commit_events(events)
        if loaded is None:
            return
        session_row, kernel_rows = loaded
        if any(k.agent is None for k in kernel_rows):
            await self._fail_start(session_id, {}, "agent-error", {"repr": "a kernel has no agent"})
            return

        async def creating(conn: Connection) -> bool:
            events.clear()
            try:
                result = await transitions.transition_session(
                    conn, session_id, SessionStatus.CREATING, "creating", cascade_kernels=True
                )
            except InvalidTransition:
                return False
            events.extend(result.events)
            return True

        proceed = await self._db.transaction(creating)
        await self._commit_events(events)
        if not proceed:
            return
        by_agent: dict[str, list[Any]] = {}
        for row in kernel_rows:
            by_agent.setdefault(row.agent, []).append(row)
        cluster = {
            "size": len(kernel_rows),
            "hosts": [row.cluster_hostname for row in kernel_rows],
            "replicas": _replicas(kernel_rows),
        }
        created: dict[str, dict[str, Any]] = {}
        failures: dict[str, BaseException] = {}

        async def create_on(agent_id: str, rows: list[Any]) -> None:
            args = {
                "session_id": str(session_id),
                "kernels": [_kernel_config(session_row, row) for row in rows],
                "cluster": cluster,
            }
            try:
                with trio.fail_after(self.creation_timeout):
                    results = await self._ctx.agents.call(
                        agent_id, "create_kernels", args, timeout=self.creation_timeout + 1.0
                    )
                for item in results:
                    created[str(item["kernel_id"])] = item
            except (RemoteError, AgentUnavailable, AgentNotFound, trio.TooSlowError) as exc:
                failures[agent_id] = exc
            except (KeyError, TypeError) as exc:
                failures[agent_id] = AgentError(f"malformed create_kernels reply: {exc!r}")

        async with trio.open_nursery() as nursery:
            for agent_id, rows in by_agent.items():
                nursery.start_soon(create_on, agent_id, rows)
        if failures:
            agent_id, exc = next(iter(failures.items()))
            reason = _failure_reason(exc)
            log.warning("session %s failed to start on %s: %s", session_id, agent_id, exc)
            # Whatever did start, and anything a timed-out agent may still create, goes.
            leftovers = {
                row.id: row.agent
                for row in kernel_rows
                if str(row.id) in created
                or isinstance(failures.get(row.agent), trio.TooSlowError | AgentUnavailable)
            }
            await self._fail_start(session_id, leftovers, reason, _error_data(exc, agent_id))
            return
        stale: dict[uuid.UUID, str] = {}

        async def running(conn: Connection) -> SessionStatus:
            events.clear()
            stale.clear()
            status = SessionStatus.CREATING
            for row in kernel_rows:
                item = created[str(row.id)]
                try:
                    result = await transitions.transition_kernel(
                        conn,
                        row.id,
                        KernelStatus.RUNNING,
                        "running",
                        values=_running_values(item),
                    )
                except InvalidTransition:
                    # Recorded by a reconcile pass that found it up (see _adopt_started).
                    if await _kernel_status(conn, row.id) is not KernelStatus.RUNNING:
                        stale[row.id] = row.agent
                    continue
                events.extend(result.events)
                status = result.session_status
            return status

        status = await self._db.transaction(running)
        await self._commit_events(events)
        if stale:
            # Destroyed (or failed) while the agents were creating it.
            await self._destroy_on_agents(stale, "user-requested")
            await self._finish_terminating(session_id)
            return
        if status is SessionStatus.RUNNING and session_row.session_type == SessionTypes.BATCH:
            self._spawn(self._batch_task, session_id)

    async def _fail_start(
        self,
        session_id: SessionId,
        leftovers: Mapping[uuid.UUID, str],
        reason: str,
        error: Mapping[str, Any],
    ) -> None:
        """Move a session that could not start to ERROR and clean up what the agents made."""
        events: list[Event] = []

        async def write(conn: Connection) -> None:
            events.clear()
            row = (
                await conn.execute(
                    sa.select(sessions.c.status, sessions.c.status_data).where(
                        sessions.c.id == session_id
                    )
                )
            ).first()
            if row is None:
                return
            status = SessionStatus(row.status)
            data = _merge_status_data(row.status_data, "error", dict(error))
            if status in _PRE_START or status is SessionStatus.SCHEDULED:
                result = await transitions.transition_session(
                    conn,
                    session_id,
                    SessionStatus.ERROR,
                    reason,
                    status_data=data,
                    cascade_kernels=True,
                )
                events.extend(result.events)
            elif status is SessionStatus.ERROR:
                await conn.execute(
                    sa.update(sessions).where(sessions.c.id == session_id).values(status_data=data)
                )

        await self._db.transaction(write)
        await self._commit_events(events)
        self.notify([session_id])
        await request_schedule(self._ctx)
        if leftovers:
            await self._destroy_leftovers(leftovers, reason)

    async def _destroy_leftovers(self, targets: Mapping[uuid.UUID, str], reason: str) -> None:
        """Destroy the kernels a session that went to ERROR left on *targets* (kernel -> agent).

        A kernel that could not be destroyed now is left to its agent's next
        kernel sync, which destroys whatever the database does not have alive.
        """
        outcome = await self._destroy_on_agents(targets, reason)
        for kernel_id, answer in outcome.items():
            if isinstance(answer, BaseException) and not _kernel_gone(answer):
                agent_id = targets[kernel_id]
                log.warning(
                    "could not destroy kernel %s on agent %s (%s); left to its next kernel sync",
                    kernel_id,
                    agent_id,
                    answer,
                )
                self._ctx.agents.resync(agent_id)

    async def _destroy_on_agents(
        self, targets: Mapping[uuid.UUID, str], reason: str
    ) -> dict[uuid.UUID, dict[str, Any] | BaseException]:
        """Call ``destroy_kernel`` for each kernel on its agent (see :meth:`_call_each_kernel`).

        A kernel the agent does not have answers ``KernelNotFound``.
        """
        return await self._call_each_kernel(
            targets, "destroy_kernel", {"reason": reason}, self.termination_timeout
        )

    async def _call_each_kernel(
        self,
        targets: Mapping[uuid.UUID, str],
        method: str,
        args: Mapping[str, Any],
        limit: float,
    ) -> dict[uuid.UUID, dict[str, Any] | BaseException]:
        """Call *method* for each kernel on its agent, concurrently, within *limit* seconds.

        Returns the agent's answer per kernel, or the error that call met (a
        database that fails to give the agent's address included).
        """
        outcome: dict[uuid.UUID, dict[str, Any] | BaseException] = {}

        async def call(kernel_id: uuid.UUID, agent_id: str) -> None:
            try:
                with trio.fail_after(limit):
                    answer = await self._ctx.agents.call(
                        agent_id,
                        method,
                        {"kernel_id": str(kernel_id), **args},
                        timeout=limit + 1.0,
                    )
                outcome[kernel_id] = answer if isinstance(answer, dict) else {}
            except (
                RemoteError,
                AgentUnavailable,
                AgentNotFound,
                trio.TooSlowError,
                *UNAVAILABLE_ERRORS,
            ) as exc:
                outcome[kernel_id] = exc

        async with trio.open_nursery() as nursery:
            for kernel_id, agent_id in targets.items():
                nursery.start_soon(call, kernel_id, agent_id)
        return outcome

    # ----------------------------------------------------------------- destroy

    async def destroy_session(
        self, session: SessionRef, *, forced: bool = False, reason: str = "user-requested"
    ) -> DestroyResult:
        """Destroy a session and wait (bounded) until its kernels are gone.

        A PENDING or SCHEDULED session is CANCELLED.  A running (or ERROR)
        session goes TERMINATING, its kernels are destroyed on their agents
        within ``manager.kernel-termination-timeout``, and it ends TERMINATED
        (the reconcile loop finishes what a failed agent call left
        TERMINATING).  A session being created, restarted or terminated
        raises :class:`SessionBusy` unless *forced*, which terminates it
        anyway and marks kernels whose agent does not answer TERMINATED.  An
        ended session is returned as it is.  Raises :class:`SessionNotFound`.
        """
        check_reason(reason)
        info = await self._resolve(session)
        return await self._terminate(info.id, reason=reason, forced=forced)

    async def _terminate(
        self,
        session_id: SessionId,
        *,
        reason: str,
        forced: bool,
        result: SessionResult | None = None,
        exit_codes: Mapping[uuid.UUID, int] | None = None,
        busy_ok: bool = False,
    ) -> DestroyResult:
        events: list[Event] = []

        async def begin(conn: Connection) -> list[_KernelRow]:
            events.clear()
            row = (
                await conn.execute(sa.select(sessions.c.status).where(sessions.c.id == session_id))
            ).first()
            if row is None:
                raise SessionNotFound(f"no session has the id {session_id}")
            status = SessionStatus(row.status)
            if status in (SessionStatus.TERMINATED, SessionStatus.CANCELLED):
                return []
            if status in (SessionStatus.PENDING, SessionStatus.SCHEDULED):
                moved = await transitions.transition_session(
                    conn, session_id, SessionStatus.CANCELLED, reason, cascade_kernels=True
                )
                events.extend(moved.events)
                return []
            busy = status in _PRE_START or status in (
                SessionStatus.TERMINATING,
                SessionStatus.RESTARTING,
            )
            if busy and not forced and not busy_ok:
                raise SessionBusy(
                    f"the session is {status.value}; wait, or destroy it with forced=true"
                )
            if status is not SessionStatus.TERMINATING:
                moved = await transitions.transition_session(
                    conn,
                    session_id,
                    SessionStatus.TERMINATING,
                    reason,
                    result=result,
                    cascade_kernels=True,
                )
                events.extend(moved.events)
            for kernel_id, code in (exit_codes or {}).items():
                # The batch command's exit code, which the kernel's own end must not replace.
                await conn.execute(
                    sa.update(kernels).where(kernels.c.id == kernel_id).values(exit_code=code)
                )
            rows = await conn.execute(
                sa.select(kernels.c.id, kernels.c.agent, kernels.c.status).where(
                    kernels.c.session_id == session_id
                )
            )
            return [_KernelRow(r.id, r.agent, KernelStatus(r.status)) for r in rows]

        self._terminating.add(session_id)
        try:
            kernel_rows = await self._db.transaction(begin)
            await self._commit_events(events)
            targets = {
                k.id: k.agent
                for k in kernel_rows
                if k.agent is not None and k.status is KernelStatus.TERMINATING
            }
            outcome = await self._destroy_on_agents(targets, reason) if targets else {}
            stats = await self._finish_terminating(
                session_id,
                outcome=outcome,
                forced=forced,
                reason=reason,
                unplaced=[k.id for k in kernel_rows if k.agent is None],
            )
        finally:
            self._terminating.discard(session_id)
        await request_schedule(self._ctx)
        return DestroyResult(await self.get_session_by_id(session_id), stats)

    async def _finish_terminating(
        self,
        session_id: SessionId,
        *,
        outcome: Mapping[uuid.UUID, dict[str, Any] | BaseException] | None = None,
        forced: bool = True,
        reason: str = "user-requested",
        unplaced: Sequence[uuid.UUID] = (),
    ) -> Mapping[str, Any] | None:
        """Move the session's TERMINATING kernels to TERMINATED after their agents answered.

        A kernel whose agent answered (or does not have it) ends with the
        agent's reason and exit code; one whose agent failed ends only when
        *forced*.  Returns the main kernel's last stats when known.
        """
        events: list[Event] = []
        outcome = outcome or {}
        stats: list[Mapping[str, Any] | None] = [None]

        async def write(conn: Connection) -> None:
            events.clear()
            rows = await conn.execute(
                sa.select(
                    kernels.c.id, kernels.c.status, kernels.c.cluster_role, kernels.c.exit_code
                ).where(kernels.c.session_id == session_id)
            )
            for row in rows:
                if KernelStatus(row.status) is not KernelStatus.TERMINATING:
                    continue
                answer = outcome.get(row.id)
                kernel_reason = reason
                exit_code: int | None = None
                values: dict[str, Any] = {}
                if isinstance(answer, dict):
                    kernel_reason = _reason_of(answer.get("reason"), reason)
                    code = answer.get("exit_code")
                    if isinstance(code, int) and row.exit_code is None:
                        exit_code = code
                    last_stat = answer.get("last_stat")
                    if isinstance(last_stat, Mapping):
                        values["last_stat"] = dict(last_stat)
                        if row.cluster_role == "main":
                            stats[0] = dict(last_stat)
                elif _kernel_gone(answer) or row.id in unplaced:
                    kernel_reason = reason
                elif isinstance(answer, BaseException) or answer is None:
                    if not forced:
                        continue
                    kernel_reason = "force-terminated" if answer is not None else reason
                try:
                    moved = await transitions.transition_kernel(
                        conn,
                        row.id,
                        KernelStatus.TERMINATED,
                        kernel_reason,
                        exit_code=exit_code,
                        values=values,
                    )
                except InvalidTransition:
                    continue
                events.extend(moved.events)

        await self._db.transaction(write)
        await self._commit_events(events)
        return stats[0]

    # ----------------------------------------------------------------- restart

    async def restart_session(self, session: SessionRef) -> SessionInfo:
        """Restart every kernel of a RUNNING session (same files, fresh interpreter state).

        The session goes RESTARTING and back to RUNNING; a kernel that does
        not come back within ``manager.kernel-creation-timeout`` goes to ERROR
        (``restart-failed``).  Raises :class:`SessionNotFound`,
        :class:`SessionNotRunning` or :class:`SessionBusy`.
        """
        info = await self._resolve(session)
        session_id = info.id
        events: list[Event] = []

        async def begin(conn: Connection) -> list[Any]:
            events.clear()
            row = (
                await conn.execute(sa.select(sessions.c.status).where(sessions.c.id == session_id))
            ).first()
            if row is None:
                raise SessionNotFound(f"no session has the id {session_id}")
            status = SessionStatus(row.status)
            if status is not SessionStatus.RUNNING:
                if status in ACTIVE_STATUSES and status not in (
                    SessionStatus.ERROR,
                    SessionStatus.PENDING,
                ):
                    raise SessionBusy(f"the session is {status.value}, not RUNNING")
                raise SessionNotRunning(f"the session is {status.value}, not RUNNING")
            moved = await transitions.transition_session(
                conn, session_id, SessionStatus.RESTARTING, "restarting", cascade_kernels=True
            )
            events.extend(moved.events)
            return (
                await conn.execute(
                    sa.select(kernels.c.id, kernels.c.agent).where(
                        kernels.c.session_id == session_id,
                        kernels.c.status == KernelStatus.RESTARTING.value,
                    )
                )
            ).all()

        self._restarting.add(session_id)
        try:
            rows = await self._db.transaction(begin)
            await self._commit_events(events)
            answers = await self._call_each_kernel(
                {row.id: row.agent for row in rows}, "restart_kernel", {}, self.creation_timeout
            )

            async def finish(conn: Connection) -> None:
                events.clear()
                for kernel_id, answer in answers.items():
                    if isinstance(answer, dict):
                        target, why, values = (
                            KernelStatus.RUNNING,
                            "restarted",
                            _running_values(answer),
                        )
                    else:
                        target, why, values = KernelStatus.ERROR, "restart-failed", {}
                    try:
                        moved = await transitions.transition_kernel(
                            conn, kernel_id, target, why, values=values
                        )
                    except InvalidTransition:
                        continue
                    events.extend(moved.events)

            await self._db.transaction(finish)
            await self._commit_events(events)
        finally:
            self._restarting.discard(session_id)
        return await self.get_session_by_id(session_id)

    # ------------------------------------------------------------------ rename

    async def rename_session(self, session: SessionRef, new_name: str) -> SessionInfo:
        """Give an active session a new name (unique among the owner's active sessions).

        Raises :class:`InvalidSessionRequest`, :class:`SessionNotFound` (also
        for an ended session) or :class:`SessionAlreadyExists`.
        """
        _check_name(new_name, "name")
        info = await self._resolve(session)

        async def write(conn: Connection) -> None:
            row = (
                await conn.execute(
                    sa.select(sessions.c.status, sessions.c.access_key)
                    .where(sessions.c.id == info.id)
                    .with_for_update()
                )
            ).first()
            if row is None or SessionStatus(row.status) not in ACTIVE_STATUSES:
                raise SessionNotFound(f"no active session has the id {info.id}")
            await conn.execute(
                sa.select(keypairs.c.access_key)
                .where(keypairs.c.access_key == row.access_key)
                .with_for_update()
            )
            clash = await conn.scalar(
                sa.select(sessions.c.id).where(
                    sessions.c.access_key == row.access_key,
                    sessions.c.name == new_name,
                    sessions.c.status.notin_(_terminal_value()),
                    sessions.c.id != info.id,
                )
            )
            if clash is not None:
                raise SessionAlreadyExists(
                    f"an active session called {new_name!r} already exists", clash
                )
            await conn.execute(
                sa.update(sessions).where(sessions.c.id == info.id).values(name=new_name)
            )

        await self._db.transaction(write)
        return await self.get_session_by_id(info.id)

    # ------------------------------------------------------------- kernel relay

    def _running_main(self, info: SessionInfo) -> KernelInfo:
        kernel = info.main_kernel
        if info.status not in _RUNNING or kernel.status not in (
            KernelStatus.RUNNING,
            KernelStatus.RUNNING_DEGRADED,
        ):
            raise SessionNotRunning(f"session {info.name} is {info.status.value}, not RUNNING")
        if kernel.agent is None:
            raise SessionNotRunning(f"session {info.name} has no agent")
        return kernel

    async def _kernel_call(
        self,
        kernel: KernelInfo,
        method: str,
        args: Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per-call deadline
        path_field: str | None = None,
    ) -> Any:
        assert kernel.agent is not None
        try:
            return await self._ctx.agents.call(kernel.agent, method, dict(args), timeout=timeout)
        except RemoteError as exc:
            raise _map_remote(exc, path_field) from None
        except AgentNotFound as exc:
            raise SessionNotRunning(str(exc)) from None

    async def execute(
        self,
        session: SessionRef,
        *,
        mode: str,
        code: str = "",
        run_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        flush_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One execute call of the spec's long-poll, relayed to the main kernel.

        *mode* is ``query`` or ``batch`` (a new run; *run_id* is generated
        when missing), ``continue`` or ``input`` (the same *run_id*; *code*
        carries the input), or ``complete``.  Returns the Execution Result
        Object ``{runId, status, exitCode, console, options}`` the agent
        answered once the run finished a step or *flush_timeout* seconds
        (``manager.execute-flush-timeout`` by default) passed (status
        ``continued``); for ``complete``, ``{"status": "finished",
        "completions": [...]}``.  Raises :class:`InvalidSessionRequest`,
        :class:`SessionNotRunning`, :class:`AgentUnavailable` or
        :class:`AgentError`.
        """
        if mode not in EXECUTE_MODES:
            raise InvalidSessionRequest(
                f"must be one of {', '.join(EXECUTE_MODES)}", value=mode, field="mode"
            )
        if not isinstance(code, str):
            raise InvalidSessionRequest("must be a string", value=code, field="code")
        info = await self._resolve(session)
        if mode == "complete":
            return {"status": "finished", "completions": await self.complete(info, code, options)}
        kernel = self._running_main(info)
        if run_id is None or run_id == "":
            if mode in ("continue", "input"):
                raise InvalidSessionRequest(
                    f"a {mode} call must name the run it continues", value=run_id, field="runId"
                )
            run_id = secrets.token_hex(8)
        if not isinstance(run_id, str) or len(run_id) > _RUN_ID_MAX:
            raise InvalidSessionRequest(
                f"must be a string of at most {_RUN_ID_MAX} characters", value=run_id, field="runId"
            )
        if options is not None and not isinstance(options, Mapping):
            raise InvalidSessionRequest("must be an object", value=options, field="options")
        flush = self.flush_timeout if flush_timeout is None else flush_timeout
        if not 0 < flush <= 3600:
            raise InvalidSessionRequest(
                "must be between 0 and 3600 seconds", value=flush, field="flush_timeout"
            )
        args: dict[str, Any] = {
            "kernel_id": str(kernel.id),
            "run_id": run_id,
            "mode": mode,
            "code": code,
            "flush_timeout": flush,
        }
        if mode == "batch":
            args["options"] = dict(options or {})
        result: dict[str, Any] = await self._kernel_call(
            kernel, "execute", args, timeout=flush + self.rpc_timeout
        )
        if mode in ("query", "batch"):
            self._query_counts[info.id] = self._query_counts.get(info.id, 0) + 1
        return result

    async def interrupt(self, session: SessionRef) -> None:
        """Send an interrupt to the main kernel's current run (no guarantee it stops)."""
        kernel = self._running_main(await self._resolve(session))
        await self._kernel_call(kernel, "interrupt_kernel", {"kernel_id": str(kernel.id)})

    async def complete(
        self, session: SessionRef, code: str, options: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Auto-completion candidates for *code* from the main kernel (may be empty)."""
        kernel = self._running_main(await self._resolve(session))
        args: dict[str, Any] = {"kernel_id": str(kernel.id), "code": code}
        if options:
            args["options"] = {
                k: options[k] for k in ("post", "line", "row", "col") if options.get(k) is not None
            }
        result = await self._kernel_call(kernel, "get_completions", args)
        return [item for item in result if isinstance(item, str)]

    async def upload_files(
        self, session: SessionRef, files: Sequence[tuple[str, bytes]]
    ) -> list[dict[str, Any]]:
        """Write *files* (``(path, data)``) under the main kernel's ``/home/work``.

        At most :data:`MAX_UPLOAD_FILES` files of :data:`MAX_UPLOAD_FILE_SIZE`
        bytes each, with paths inside ``/home/work`` (checked before anything
        is sent); the agent writes all of them or, when it refuses one, none.
        Returns ``[{"path": absolute path, "size": bytes}]``.
        """
        if len(files) > MAX_UPLOAD_FILES:
            raise InvalidSessionRequest(
                f"at most {MAX_UPLOAD_FILES} files may be uploaded at once",
                value=len(files),
                field="files",
            )
        for path, data in files:
            if len(data) > MAX_UPLOAD_FILE_SIZE:
                raise SessionFileTooLarge(
                    f"a file may have at most {MAX_UPLOAD_FILE_SIZE} bytes",
                    value=len(data),
                    field=path,
                )
        with _refused_paths():
            split_upload_paths([path for path, _ in files], field="files")
        kernel = self._running_main(await self._resolve(session))
        written: list[dict[str, Any]] = await self._kernel_call(
            kernel,
            "upload_files",
            {
                "kernel_id": str(kernel.id),
                "files": [{"path": path, "data": bytes(data)} for path, data in files],
            },
            path_field="files",
        )
        return written

    async def download_files(self, session: SessionRef, paths: Sequence[str]) -> list[bytes]:
        """A tar archive of each path (file or folder) under the main kernel's ``/home/work``."""
        if not 1 <= len(paths) <= MAX_DOWNLOAD_FILES:
            raise InvalidSessionRequest(
                f"name 1 to {MAX_DOWNLOAD_FILES} files", value=len(paths), field="files"
            )
        return await self._download(session, paths, "files")

    async def download_single(self, session: SessionRef, path: str) -> bytes:
        """The content of one regular file under the main kernel's ``/home/work``."""
        (archive,) = await self._download(session, [path], "file")
        return await trio.to_thread.run_sync(_single_file, archive, path)

    async def _download(
        self, session: SessionRef, paths: Sequence[str], path_field: str
    ) -> list[bytes]:
        with _refused_paths():
            for path in paths:
                split_path(path, field=path_field)
        kernel = self._running_main(await self._resolve(session))
        archives = []
        for path in paths:
            data = await self._kernel_call(
                kernel,
                "download_file",
                {"kernel_id": str(kernel.id), "path": path},
                path_field=path_field,
            )
            archives.append(bytes(data))
        return archives

    async def list_files(self, session: SessionRef, path: str = ".") -> dict[str, Any]:
        """The main kernel's listing of *path*: ``{"files": JSON text, "errors", "abspath"}``."""
        with _refused_paths():
            split_path(path, allow_root=True)
        kernel = self._running_main(await self._resolve(session))
        result: dict[str, Any] = await self._kernel_call(
            kernel, "list_files", {"kernel_id": str(kernel.id), "path": path}, path_field="path"
        )
        return result

    async def get_logs(self, session: SessionRef) -> str:
        """The main kernel's recent console log (the runner's output), as text."""
        info = await self._resolve(session)
        kernel = info.main_kernel
        if kernel.agent is None or kernel.status not in STARTED_KERNEL_STATUSES:
            raise SessionNotRunning(f"session {info.name} has no running kernel to read logs from")
        result = await self._kernel_call(kernel, "get_logs", {"kernel_id": str(kernel.id)})
        logs = result.get("logs", "") if isinstance(result, Mapping) else ""
        return logs if isinstance(logs, str) else ""

    async def _flush_query_counts(self) -> None:
        while True:
            await trio.sleep(QUERY_COUNT_FLUSH)
            try:
                await self._write_query_counts()
            except Exception:
                log.exception("could not record query counts")

    async def _write_query_counts(self) -> None:
        counts, self._query_counts = self._query_counts, {}
        if not counts:
            return

        async def write(conn: Connection) -> None:
            for sid, count in counts.items():
                await conn.execute(
                    sa.update(sessions)
                    .where(sessions.c.id == sid)
                    .values(num_queries=sessions.c.num_queries + count)
                )

        await self._db.transaction(write)

    # ------------------------------------------------------------------- batch

    async def _batch_task(self, session_id: SessionId) -> None:
        if session_id in self._batches:
            return
        self._batches.add(session_id)
        try:
            claim = await self._claim_batch(session_id)
            if claim is None:
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew_batch_lease, session_id, nursery.cancel_scope)
                await self._run_batch(session_id, claim)
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("the batch job of session %s failed", session_id)
        finally:
            self._batches.discard(session_id)

    async def _claim_batch(self, session_id: SessionId) -> _BatchClaim | None:
        """Make this manager the driver of a RUNNING batch job, unless another one holds it.

        The first claim starts the job: it records the deadline.  The row lock
        (the write transaction on SQLite) puts two managers' claims one after
        the other, so only one of them finds the job free.
        """

        async def write(conn: Connection) -> _BatchClaim | None:
            row = (
                await conn.execute(
                    sa.select(
                        sessions.c.status,
                        sessions.c.session_type,
                        sessions.c.batch_timeout,
                        sessions.c.batch_deadline,
                        sessions.c.batch_sent,
                        sessions.c.batch_driver,
                        sessions.c.batch_lease,
                    )
                    .where(sessions.c.id == session_id)
                    .with_for_update()
                )
            ).first()
            if (
                row is None
                or SessionStatus(row.status) not in _RUNNING
                or row.session_type != SessionTypes.BATCH
            ):
                return None
            now = utcnow()
            held = row.batch_lease is not None and row.batch_lease > now
            if row.batch_driver not in (None, self._driver_id) and held:
                return None
            started = row.batch_sent is not None
            deadline = row.batch_deadline
            if row.batch_driver is None and row.batch_timeout:
                deadline = now + timedelta(seconds=row.batch_timeout)
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id)
                .values(
                    batch_driver=self._driver_id,
                    batch_lease=now + timedelta(seconds=self.batch_lease),
                    batch_deadline=deadline,
                )
            )
            return _BatchClaim(started=started, deadline=deadline)

        return await self._db.transaction(write)

    async def _renew_batch_lease(self, session_id: SessionId, driver: trio.CancelScope) -> None:
        """Extend this manager's claim on a batch job; stop the driver once it lost the claim."""

        async def write(conn: Connection) -> bool:
            moved = await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id, sessions.c.batch_driver == self._driver_id)
                .values(batch_lease=utcnow() + timedelta(seconds=self.batch_lease))
            )
            return moved.rowcount > 0

        while True:
            await trio.sleep(self.batch_lease / 3)
            try:
                held = await self._db.transaction(write)
            except UNAVAILABLE_ERRORS as exc:
                # Two more tries before the lease runs out and another manager may resume it.
                log.warning("could not renew the batch lease of session %s: %s", session_id, exc)
                continue
            if not held:
                log.warning("another manager took over the batch job of session %s", session_id)
                driver.cancel()
                return

    async def _run_batch(self, session_id: SessionId, claim: _BatchClaim) -> None:
        info = await self.get_session_by_id(session_id)
        command = info.startup_command or ""
        run_id = f"batch-{session_id.hex[:16]}"
        limit = math.inf
        if claim.deadline is not None:
            limit = (claim.deadline - utcnow()).total_seconds()
        result: dict[str, Any] = {}
        if not claim.started:
            await self._mark_batch_sent(session_id)
            await self._commit_events([ExecutionStarted(session_id=session_id)])
        with trio.move_on_after(limit) as scope:
            try:
                if claim.started:
                    result = await self._resume_batch(info, run_id)
                else:
                    result = await self.execute(
                        info,
                        mode="batch",
                        run_id=run_id,
                        options={"exec": command},
                        flush_timeout=BATCH_FLUSH_TIMEOUT,
                    )
                while result.get("status") != "finished":
                    mode = "input" if result.get("status") == "waiting-input" else "continue"
                    result = await self.execute(
                        info, mode=mode, run_id=run_id, flush_timeout=BATCH_FLUSH_TIMEOUT
                    )
            except (SessionNotRunning, AgentUnavailable, AgentError, InvalidSessionRequest) as exc:
                # The kernel went away: its agent's report of its end ends the session.
                log.info("batch job of session %s ended early: %s", session_id, exc)
                await self._commit_events([ExecutionCancelled(session_id=session_id)])
                return
        ended: Event
        if scope.cancelled_caught:
            outcome, reason, exit_code = SessionResult.FAILURE, "batch-timeout", None
            ended = ExecutionTimeout(session_id=session_id)
        else:
            code = result.get("exitCode")
            exit_code = code if isinstance(code, int) else -1
            success = exit_code == 0
            outcome = SessionResult.SUCCESS if success else SessionResult.FAILURE
            reason = "task-finished" if success else "task-failed"
            ended = ExecutionFinished(session_id=session_id)
        await self._commit_events([ended])
        codes: dict[uuid.UUID, int] = {}
        if exit_code is not None:
            codes[info.main_kernel.id] = exit_code
        await self._terminate(
            session_id, reason=reason, forced=True, result=outcome, exit_codes=codes, busy_ok=True
        )

    async def _mark_batch_sent(self, session_id: SessionId) -> None:
        """Record, before the call, that this job goes to its kernel.

        A driver that dies before this leaves a job that never ran: the next
        one starts it.  One that dies after it leaves a job the next driver
        resumes, or fails if its kernel never got it: never a job run twice.
        """

        async def write(conn: Connection) -> None:
            await conn.execute(
                sa.update(sessions)
                .where(sessions.c.id == session_id, sessions.c.batch_driver == self._driver_id)
                .values(batch_sent=utcnow())
            )

        await self._db.transaction(write)

    async def _resume_batch(self, info: SessionInfo, run_id: str) -> dict[str, Any]:
        """The first answer about a job another driver started (most likely one that died).

        The dead driver's last ``continue`` may still wait on the run in the
        agent (for at most :data:`BATCH_FLUSH_TIMEOUT`), so a refusal that
        says so is tried again.  A run the agent does not know was lost on the
        way (its driver died between recording the call and making it) or was
        forgotten by its agent (restarted since): starting it again could run it twice, so
        it is answered ``finished`` with no exit code (recorded as -1) and the
        job fails.
        """
        while True:
            try:
                return await self.execute(
                    info, mode="continue", run_id=run_id, flush_timeout=BATCH_FLUSH_TIMEOUT
                )
            except InvalidSessionRequest as exc:
                if _RUN_BUSY in str(exc):
                    await trio.sleep(BATCH_RESUME_RETRY)
                    continue
                if _RUN_UNKNOWN not in str(exc):
                    raise
                log.warning("the batch job of session %s is lost: %s", info.id, exc)
                return {"runId": run_id, "status": "finished", "exitCode": None}

    # ------------------------------------------------------------ agent events

    async def handle_kernel_terminated(self, event: AgentKernelTerminated) -> None:
        """Apply an agent's ``agent_kernel_terminated`` report (see the module docstring).

        A report about a session this process is starting waits until the
        start is over, so the start's own outcome (and its error details) is
        written first.
        """
        if SessionId(event.session_id) in self._starting:
            self._deferred.setdefault(SessionId(event.session_id), []).append(event)
            return
        reason = _reason_of(event.reason, "kernel-terminated")
        events: list[Event] = []

        async def write(conn: Connection) -> SessionStatus | None:
            events.clear()
            row = (
                await conn.execute(
                    sa.select(kernels.c.status, kernels.c.exit_code).where(
                        kernels.c.id == event.kernel_id
                    )
                )
            ).first()
            if row is None:
                return None
            status = KernelStatus(row.status)
            if status in STARTED_KERNEL_STATUSES:
                target = KernelStatus.TERMINATED
            elif status in _KERNEL_PRE_START:
                target = KernelStatus.ERROR
            else:
                return None
            exit_code = event.exit_code if row.exit_code is None else None
            try:
                moved = await transitions.transition_kernel(
                    conn, event.kernel_id, target, reason, exit_code=exit_code
                )
            except (InvalidTransition, transitions.KernelNotFound):
                return None
            events.extend(moved.events)
            return moved.session_status

        status = await self._db.transaction(write)
        await self._commit_events(events)
        if status is not None and status not in _RUNNING:
            self.notify([event.session_id])
            await request_schedule(self._ctx)

    # --------------------------------------------------------------- reconcile

    async def _reconcile_loop(self) -> None:
        # The first pass comes at once: a restarted manager resumes what its predecessor left.
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("the session reconcile pass failed")
            await trio.sleep(self.reconcile_interval)

    async def reconcile(self) -> None:
        """One pass of the deadline keeper (see the module docstring)."""
        watched = [
            SessionStatus.SCHEDULED,
            *_PRE_START,
            SessionStatus.TERMINATING,
            SessionStatus.RESTARTING,
        ]
        rows = await self._db.fetch(
            sa.select(sessions.c.id, sessions.c.status, sessions.c.status_changed).where(
                sessions.c.status.in_([s.value for s in watched])
            )
        )
        now = utcnow()
        creation_limit = timedelta(seconds=self.creation_timeout + self.rpc_timeout)
        termination_limit = timedelta(seconds=self.termination_timeout)
        for row in rows:
            sid = SessionId(row.id)
            status = SessionStatus(row.status)
            age = now - row.status_changed
            if status is SessionStatus.SCHEDULED:
                if age > timedelta(seconds=SCHEDULED_GRACE):
                    self.start_scheduled([sid])
            elif status in _PRE_START:
                if sid in self._starting or age <= timedelta(seconds=ADOPT_GRACE):
                    continue
                if await self._adopt_started(sid):
                    continue
                if age > creation_limit:
                    await self._fail_stuck(sid, "creation-timeout")
            elif status is SessionStatus.RESTARTING:
                if sid not in self._restarting and age > creation_limit:
                    await self._fail_stuck(sid, "restart-timeout")
            elif sid not in self._terminating and age > termination_limit:
                self._terminating.add(sid)
                self._spawn(self._retry_termination, sid, age > 2 * termination_limit)
        await self._resume_batches()

    async def _resume_batches(self) -> None:
        """Drive the RUNNING batch jobs no manager holds (their driver died or never began)."""
        rows = await self._db.fetch(
            sa.select(sessions.c.id, sessions.c.batch_lease).where(
                sessions.c.status.in_([s.value for s in _RUNNING]),
                sessions.c.session_type == SessionTypes.BATCH,
            )
        )
        now = utcnow()
        for row in rows:
            sid = SessionId(row.id)
            # The claim decides; this only spares it the jobs plainly held.
            if sid not in self._batches and (row.batch_lease is None or row.batch_lease <= now):
                self._spawn(self._batch_task, sid)

    async def _adopt_started(self, session_id: SessionId) -> bool:
        """Record a session RUNNING if its agents run all its kernels (its creator died).

        Written as the creator would have, from the agents' descriptions;
        a creator still alive finds its kernels RUNNING and leaves them so.
        Returns whether the session was moved.
        """
        rows = await self._db.fetch(
            sa.select(kernels.c.id, kernels.c.agent).where(kernels.c.session_id == session_id)
        )
        by_agent: dict[str, list[str]] = {}
        for row in rows:
            if row.agent is None:
                return False
            by_agent.setdefault(row.agent, []).append(str(row.id))
        described: dict[str, Mapping[str, Any]] = {}
        for agent_id, kernel_ids in by_agent.items():
            try:
                answer = await self._ctx.agents.call(
                    agent_id,
                    "describe_kernels",
                    {"kernel_ids": kernel_ids},
                    timeout=ADOPT_ASK_TIMEOUT,
                )
            except (RemoteError, AgentUnavailable, AgentNotFound, *UNAVAILABLE_ERRORS) as exc:
                # Not known to be up: the deadline still applies (finding the agent's
                # address reads the database, which may be what fails).
                log.info("could not ask %s about session %s: %s", agent_id, session_id, exc)
                return False
            for item in answer if isinstance(answer, list) else []:
                if isinstance(item, Mapping):
                    described[str(item.get("kernel_id"))] = item
        if not rows or any(str(row.id) not in described for row in rows):
            return False
        events: list[Event] = []

        async def write(conn: Connection) -> bool:
            events.clear()
            for row in rows:
                # Only kernels in CREATING were asked of their agents.
                if await _kernel_status(conn, row.id, lock=True) is not KernelStatus.CREATING:
                    return False
            for row in rows:
                moved = await transitions.transition_kernel(
                    conn,
                    row.id,
                    KernelStatus.RUNNING,
                    "running",
                    values=_running_values(described[str(row.id)]),
                )
                events.extend(moved.events)
            return True

        adopted = await self._db.transaction(write)
        await self._commit_events(events)
        if adopted:
            log.info("session %s was up on its agents: recorded RUNNING", session_id)
            self.notify([session_id])
        return adopted

    async def _fail_stuck(self, session_id: SessionId, reason: str) -> None:
        rows = await self._db.fetch(
            sa.select(kernels.c.id, kernels.c.agent).where(
                kernels.c.session_id == session_id,
                kernels.c.agent.is_not(None),
                kernels.c.status.in_(sorted(s.value for s in LIVE_KERNEL_STATUSES)),
            )
        )
        leftovers: dict[uuid.UUID, str] = {row.id: row.agent for row in rows}
        log.warning("session %s is stuck; moving it to ERROR (%s)", session_id, reason)

        async def write(conn: Connection) -> list[Event]:
            row = (
                await conn.execute(
                    sa.select(sessions.c.status, sessions.c.status_data).where(
                        sessions.c.id == session_id
                    )
                )
            ).first()
            if row is None:
                return []
            data = _merge_status_data(
                row.status_data,
                "error",
                {"src": "manager", "name": "Timeout", "repr": f"stuck in {row.status}"},
            )
            try:
                moved = await transitions.transition_session(
                    conn,
                    session_id,
                    SessionStatus.ERROR,
                    reason,
                    status_data=data,
                    cascade_kernels=True,
                )
            except InvalidTransition:
                return []
            return list(moved.events)

        await self._commit_events(await self._db.transaction(write))
        self.notify([session_id])
        await request_schedule(self._ctx)
        if leftovers:
            self._spawn(self._destroy_leftovers, leftovers, reason)

    async def _retry_termination(self, session_id: SessionId, forced: bool) -> None:
        try:
            info = await self.get_session_by_id(session_id)
            if info.status is not SessionStatus.TERMINATING:
                return
            targets: dict[uuid.UUID, str] = {
                k.id: k.agent
                for k in info.kernels
                if k.agent is not None and k.status is KernelStatus.TERMINATING
            }
            reason = _reason_of(info.status_info, "user-requested")
            outcome = await self._destroy_on_agents(targets, reason)
            await self._finish_terminating(
                session_id,
                outcome=outcome,
                forced=forced,
                reason="termination-timeout" if forced else reason,
                unplaced=[k.id for k in info.kernels if k.agent is None],
            )
            await request_schedule(self._ctx)
        except Exception:
            log.exception("retrying the termination of session %s failed", session_id)
        finally:
            self._terminating.discard(session_id)


# ------------------------------------------------------------ enqueue helpers


def _normalized(request: SessionRequest) -> SessionRequest:
    """*request* with ``session_type`` and ``cluster_mode`` given as strings turned into enums."""
    changes: dict[str, Any] = {}
    for name, kind, api_name in (
        ("session_type", SessionTypes, "type"),
        ("cluster_mode", ClusterMode, "cluster_mode"),
    ):
        value = getattr(request, name)
        if isinstance(value, str) and not isinstance(value, kind):
            try:
                changes[name] = kind(value)
            except ValueError:
                known = ", ".join(member.value for member in kind)
                raise InvalidSessionRequest(
                    f"must be one of {known}", value=value, field=api_name
                ) from None
    return dataclasses.replace(request, **changes) if changes else request


def _check_request(request: SessionRequest) -> None:
    """Checks of a request that need no database; raise :class:`InvalidSessionRequest`."""

    def bad(problem: str, value: object, field: str) -> InvalidSessionRequest:
        return InvalidSessionRequest(problem, value=value, field=field)

    if not isinstance(request.image, str) or not 0 < len(request.image) <= 512:
        raise bad("must be an image name or alias", request.image, "image")
    if not isinstance(request.session_type, SessionTypes) or request.session_type not in (
        SessionTypes.INTERACTIVE,
        SessionTypes.BATCH,
    ):
        raise bad("must be interactive or batch", request.session_type, "type")
    size = request.cluster_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CLUSTER_SIZE:
        raise bad(f"must be an integer from 1 to {MAX_CLUSTER_SIZE}", size, "cluster_size")
    if not isinstance(request.cluster_mode, ClusterMode):
        raise bad("must be single-node or multi-node", request.cluster_mode, "cluster_mode")
    priority = request.priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise bad("must be an integer", priority, "priority")
    if not 0 <= priority <= MAX_PRIORITY:
        raise bad(f"must be between 0 and {MAX_PRIORITY}", priority, "priority")
    if not isinstance(request.environ, Mapping):
        raise bad("must be an object of strings", request.environ, "environ")
    for key, value in request.environ.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise bad("not an environment variable name", key, "environ")
        if not isinstance(value, str) or "\x00" in value:
            raise bad("must be a string without NUL", value, f"environ.{key}")
    if isinstance(request.mounts, str) or not all(
        isinstance(m, str) and 0 < len(m) <= 256 for m in request.mounts
    ):
        raise bad("must be a list of folder names", request.mounts, "mounts")
    if request.session_type is SessionTypes.BATCH and not request.startup_command:
        raise bad("a batch session needs a startup command", None, "startup_command")
    for name in ("startup_command", "bootstrap_script", "callback_url"):
        value = getattr(request, name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            raise bad("must be a string", value, name)
    script = request.bootstrap_script
    if script is not None and len(script) > MAX_BOOTSTRAP_SCRIPT:
        raise bad(
            f"must be at most {MAX_BOOTSTRAP_SCRIPT} characters", len(script), "bootstrap_script"
        )
    if request.tag is not None and (not isinstance(request.tag, str) or len(request.tag) > 64):
        raise bad("must be a string of at most 64 characters", request.tag, "tag")
    if request.starts_at is not None and (
        not isinstance(request.starts_at, datetime) or request.starts_at.utcoffset() is None
    ):
        raise bad("must be a timezone-aware timestamp", request.starts_at, "starts_at")
    timeout = request.batch_timeout
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= 10**9
    ):
        raise bad("must be a positive number of seconds", timeout, "batch_timeout")
    if request.designated_agent is not None and (
        not isinstance(request.designated_agent, str) or not 0 < len(request.designated_agent) <= 64
    ):
        raise bad("must be an agent id", request.designated_agent, "designated_agent")
    if request.scaling_group is not None and not isinstance(request.scaling_group, str):
        raise bad("must be a resource group name", request.scaling_group, "scaling_group")
    if isinstance(request.dependencies, str) or len(request.dependencies) > 64:
        raise bad("must be a list of at most 64 sessions", request.dependencies, "dependencies")


async def _load_owner(conn: Connection, access_key: str) -> _Owner:
    row = (
        await conn.execute(
            sa.select(
                keypairs.c.access_key,
                keypairs.c.is_active,
                keypairs.c.resource_policy,
                users.c.uuid,
                users.c.email,
                users.c.domain_name,
                users.c.role,
                users.c.status,
            )
            .select_from(keypairs.join(users, keypairs.c.user == users.c.uuid))
            .where(keypairs.c.access_key == access_key)
            # Serialises the owner's enqueues, so a name cannot be taken twice.
            .with_for_update(of=keypairs)
        )
    ).first()
    if row is None or not row.is_active or UserStatus(row.status) is not UserStatus.ACTIVE:
        raise InvalidSessionRequest(
            "no active keypair has this access key", value=access_key, field="owner_access_key"
        )
    return _Owner(
        access_key=row.access_key,
        user_id=row.uuid,
        email=row.email,
        domain_name=row.domain_name,
        role=UserRole(row.role),
        resource_policy=row.resource_policy,
    )


async def _resolve_image(
    conn: Connection, ref: str, architecture: str | None
) -> tuple[str, str, Mapping[str, Any]]:
    """The canonical name, architecture and ``resources`` of the image *ref* names."""
    by_name = sa.select(images.c.name, images.c.architecture, images.c.resources).where(
        images.c.name == ref
    )
    by_alias = (
        sa.select(images.c.name, images.c.architecture, images.c.resources)
        .select_from(images.join(image_aliases, image_aliases.c.image_id == images.c.id))
        .where(image_aliases.c.alias == ref)
    )
    rows = (await conn.execute(by_name)).all()
    if not rows:
        alias_rows = (await conn.execute(by_alias)).all()
        if alias_rows:
            # An alias points at one image; every architecture of that name qualifies.
            rows = (
                await conn.execute(
                    sa.select(images.c.name, images.c.architecture, images.c.resources).where(
                        images.c.name == alias_rows[0].name
                    )
                )
            ).all()
    if not rows:
        raise ImageNotFound("no registered image has this name or alias", value=ref, field="image")
    if architecture is not None:
        wanted = normalize_architecture(architecture)
        for row in rows:
            if normalize_architecture(row.architecture) == wanted:
                return row.name, row.architecture, row.resources or {}
        raise ImageNotFound(
            f"the image exists, but not for {wanted}", value=ref, field="architecture"
        )
    preferred = normalize_architecture(_host_architecture())
    rows.sort(key=lambda r: (normalize_architecture(r.architecture) != preferred, r.architecture))
    row = rows[0]
    return row.name, row.architecture, row.resources or {}


def _host_architecture() -> str:
    import platform

    return platform.machine() or "x86_64"


async def _check_domain(conn: Connection, owner: _Owner, requested: str | None) -> str:
    name = requested or owner.domain_name
    if name != owner.domain_name and owner.role is not UserRole.SUPERADMIN:
        raise InvalidSessionRequest(
            "sessions can only be created in the owner's domain", value=name, field="domain"
        )
    active = await conn.scalar(sa.select(domains.c.is_active).where(domains.c.name == name))
    if not active:
        raise InvalidSessionRequest("no active domain has this name", value=name, field="domain")
    return name


async def _check_group(conn: Connection, owner: _Owner, domain_name: str, ref: str) -> uuid.UUID:
    if not isinstance(ref, str) or not ref:
        raise InvalidSessionRequest("must be a project name", value=ref, field="group")
    condition = groups.c.name == ref
    with contextlib.suppress(ValueError):
        condition = sa.or_(condition, groups.c.id == uuid.UUID(ref))
    row = (
        await conn.execute(
            sa.select(groups.c.id, groups.c.is_active).where(
                condition, groups.c.domain_name == domain_name
            )
        )
    ).first()
    if row is None or not row.is_active:
        raise InvalidSessionRequest(
            f"no active project of this name in domain {domain_name!r}", value=ref, field="group"
        )
    if owner.role not in (UserRole.SUPERADMIN, UserRole.ADMIN):
        member = await conn.scalar(
            sa.select(association_groups_users.c.user_id).where(
                association_groups_users.c.user_id == owner.user_id,
                association_groups_users.c.group_id == row.id,
            )
        )
        if member is None:
            raise InvalidSessionRequest(
                "the owner is not a member of this project", value=ref, field="group"
            )
    group_id: uuid.UUID = row.id
    return group_id


def _kernel_slots(
    requested: Mapping[str, Any] | None,
    image_resources: Mapping[str, Any],
    known_slots: Mapping[str, SlotTypes],
) -> ResourceSlot:
    """One kernel's slots: the request, with the image's minimum for every slot it leaves out."""
    try:
        slots = ResourceSlot.parse(requested if requested is not None else {}, known_slots)
    except InvalidValue as exc:
        raise _problem(exc, InvalidSessionRequest, "resources") from None
    minimums: dict[str, Any] = {}
    for slot, spec in image_resources.items():
        amount = spec.get("min") if isinstance(spec, Mapping) else None
        if slot in known_slots and amount is not None:
            minimums[slot] = amount
    try:
        floor = ResourceSlot.parse(minimums, known_slots)
    except InvalidValue:
        floor = ResourceSlot()
    values: dict[str, Decimal] = dict(slots.items())
    for slot, amount in floor.items():
        if slot not in values:
            values[slot] = amount
        elif values[slot] < amount:
            raise InvalidSessionRequest(
                f"the image needs at least {amount} of this slot",
                value=str(values[slot]),
                field=f"resources.{slot}",
            )
    return ResourceSlot(values)


async def _check_policies(
    conn: Connection,
    owner: _Owner,
    group_id: uuid.UUID,
    domain_name: str,
    request: SessionRequest,
    total: ResourceSlot,
    known_slots: Mapping[str, SlotTypes],
) -> None:
    policy = (
        await conn.execute(
            sa.select(keypair_resource_policies).where(
                keypair_resource_policies.c.name == owner.resource_policy
            )
        )
    ).first()
    if policy is None:
        raise QuotaExceeded(
            "the keypair's resource policy does not exist",
            value=owner.resource_policy,
            field="resource_policy",
        )
    if request.cluster_size > policy.max_containers_per_session:
        raise QuotaExceeded(
            f"the keypair policy allows {policy.max_containers_per_session} kernels per session",
            value=request.cluster_size,
            field="cluster_size",
        )
    slot_names = set(known_slots) | set(total)
    limits: list[tuple[str, ResourceSlot]] = [
        (
            "keypair resource policy",
            keypair_limits(policy.total_resource_slots, policy.default_for_unspecified, slot_names),
        )
    ]
    caps = (
        ("project", groups, groups.c.id == group_id),
        ("domain", domains, domains.c.name == domain_name),
    )
    for label, table, condition in caps:
        cap = cap_limits(
            await conn.scalar(sa.select(table.c.total_resource_slots).where(condition)), slot_names
        )
        if cap is not None:
            limits.append((f"{label} resource limit", cap))
    for label, limit in limits:
        if not total.fits_in(limit):
            raise QuotaExceeded(
                f"the session exceeds the {label}: {_excess(total, limit)}",
                value=total.to_json(),
                field="resources",
            )


async def _allowed_groups(
    conn: Connection, owner: _Owner, domain_name: str, group_id: uuid.UUID
) -> set[str]:
    query = sa.union(
        sa.select(sgroups_for_domains.c.scaling_group).where(
            sgroups_for_domains.c.domain == domain_name
        ),
        sa.select(sgroups_for_groups.c.scaling_group).where(sgroups_for_groups.c.group == group_id),
        sa.select(sgroups_for_keypairs.c.scaling_group).where(
            sgroups_for_keypairs.c.access_key == owner.access_key
        ),
    ).subquery()
    rows = await conn.execute(
        sa.select(scaling_groups.c.name).where(
            scaling_groups.c.name.in_(sa.select(query.c[0])),
            scaling_groups.c.is_active.is_(True),
        )
    )
    return set(rows.scalars())


async def _choose_group(
    conn: Connection,
    pending: PendingSession,
    candidates: Sequence[str],
    alive_rows: Sequence[Any],
    session_type: SessionTypes,
) -> str:
    """The first candidate group that allows the session type and could host the session."""
    options = {
        row.name: row.scheduler_opts
        for row in await conn.execute(
            sa.select(scaling_groups.c.name, scaling_groups.c.scheduler_opts).where(
                scaling_groups.c.name.in_(list(candidates))
            )
        )
    }
    first_error: InvalidValue | None = None
    for group in candidates:
        opts = options.get(group) or {}
        allowed_types = opts.get("allowed_session_types") if isinstance(opts, Mapping) else None
        if isinstance(allowed_types, list) and session_type.value not in allowed_types:
            first_error = first_error or InvalidSessionRequest(
                f"resource group {group!r} does not allow {session_type.value} sessions",
                value=session_type.value,
                field="type",
            )
            continue
        hosts = [
            AgentInfo(
                id=AgentId(row.id),
                resource_group=row.scaling_group,
                available_slots=row.available_slots,
                occupied_slots=ResourceSlot(),
                architecture=row.architecture,
            )
            for row in alive_rows
            if row.scaling_group == group
            and (pending.designated_agent is None or row.id == pending.designated_agent)
        ]
        if not hosts:
            return group
        try:
            check_satisfiable(dataclasses.replace(pending, resource_group=group), hosts)
        except UnsatisfiableRequest as exc:
            first_error = first_error or _problem(exc, ResourceLimitExceeded, "resources")
            continue
        return group
    assert first_error is not None
    raise first_error


async def _resolve_dependencies(
    conn: Connection, owner: _Owner, refs: Sequence[str | uuid.UUID]
) -> list[uuid.UUID]:
    resolved: list[uuid.UUID] = []
    for index, ref in enumerate(refs):
        where = f"dependencies[{index}]"
        session_id: uuid.UUID | None = None
        if isinstance(ref, uuid.UUID):
            session_id = ref
        elif isinstance(ref, str):
            try:
                session_id = uuid.UUID(ref)
            except ValueError:
                session_id = await conn.scalar(
                    sa.select(sessions.c.id)
                    .where(sessions.c.access_key == owner.access_key, sessions.c.name == ref)
                    .order_by(sessions.c.created_at.desc())
                    .limit(1)
                )
        else:
            raise InvalidSessionRequest("must be a session id or name", value=ref, field=where)
        if session_id is not None:
            session_id = await conn.scalar(
                sa.select(sessions.c.id).where(
                    sessions.c.id == session_id, sessions.c.access_key == owner.access_key
                )
            )
        if session_id is None:
            raise InvalidSessionRequest(
                "the owner has no session with this id or name", value=ref, field=where
            )
        if session_id not in resolved:
            resolved.append(session_id)
    return resolved


# -------------------------------------------------------------- start helpers


def _replicas(kernel_rows: Sequence[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in kernel_rows:
        counts[row.cluster_role] = counts.get(row.cluster_role, 0) + 1
    return counts


def _kernel_config(session_row: Any, row: Any) -> dict[str, Any]:
    """The ``KernelConfig`` map of ``create_kernels`` for one kernel row."""
    config = {
        "kernel_id": str(row.id),
        "image": session_row.image,
        "architecture": row.architecture,
        "resource_slots": {k: v for k, v in row.requested_slots.to_json().items()},
        "environ": dict(session_row.environ or {}),
        "cluster_role": row.cluster_role,
        "cluster_idx": row.cluster_idx,
        "local_rank": row.local_rank,
        "cluster_hostname": row.cluster_hostname,
        "session_type": SessionTypes(session_row.session_type).value,
    }
    if session_row.bootstrap_script:
        config["bootstrap_script"] = session_row.bootstrap_script
    return config


async def _kernel_status(
    conn: Connection, kernel_id: uuid.UUID, *, lock: bool = False
) -> KernelStatus | None:
    """The kernel's status (None when it is gone); *lock* locks its row for the transaction."""
    query = sa.select(kernels.c.status).where(kernels.c.id == kernel_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    return None if row is None else KernelStatus(row.status)


def _running_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """Kernel columns to write from one ``create_kernels``/``restart_kernel`` answer."""
    values: dict[str, Any] = {}
    if isinstance(item.get("agent_addr"), str):
        values["agent_addr"] = item["agent_addr"][:128]
    if isinstance(item.get("kernel_host"), str):
        values["kernel_host"] = item["kernel_host"][:128]
    if isinstance(item.get("pid"), int):
        values["container_id"] = str(item["pid"])
    ports = item.get("service_ports")
    if isinstance(ports, list):
        values["service_ports"] = [p for p in ports if isinstance(p, Mapping)]
    with contextlib.suppress(InvalidValue):
        values["occupied_slots"] = ResourceSlot.from_json(item.get("occupied_slots") or {})
    for key in ("attached_devices", "resource_opts"):
        if isinstance(item.get(key), Mapping):
            values[key] = dict(item[key])
    return values


@contextlib.contextmanager
def _refused_paths() -> Iterator[None]:
    """Refuse a path the agent would refuse as a bad request, before asking it."""
    try:
        yield
    except ScratchPathError as exc:
        raise InvalidSessionRequest(exc.problem, value=exc.value, field=exc.field) from None


def _single_file(archive: bytes, path: str) -> bytes:
    """The content of the one regular file in a tar archive from ``download_file``."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            members = tar.getmembers()
            files = [m for m in members if m.isfile()]
            if len(files) != 1 or len(members) != 1:
                raise InvalidSessionRequest(
                    "names a folder, not a single file", value=path, field="file"
                )
            handle = tar.extractfile(files[0])
            if handle is None:
                raise InvalidSessionRequest("cannot be read", value=path, field="file")
            return handle.read()
    except tarfile.TarError as exc:
        raise AgentError(f"the agent sent an unreadable archive: {exc}") from None
