"""The session services' data: requests, sessions and kernels as read, results.

Plain frozen dataclasses; nothing here reads or writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bai.common.slots import ResourceSlot
from bai.common.types import (
    ACTIVE_STATUSES,
    AccessKey,
    AgentId,
    ClusterMode,
    KernelId,
    KernelStatus,
    SessionId,
    SessionResult,
    SessionStatus,
    SessionTypes,
)
from bai.manager.models.identity import UserRole

__all__ = [
    "BatchClaim",
    "DestroyResult",
    "EnqueueResult",
    "KernelInfo",
    "KernelRow",
    "Owner",
    "SessionInfo",
    "SessionRef",
    "SessionRequest",
]


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What a client asks for when creating a session (the API's parsed body).

    ``resources`` is the Creation Config's per-kernel Resource Slot Object,
    still raw (``{"cpu": "2", "mem": "4g"}``); ``group`` is the project's name
    (or id); ``dependencies`` are ids or names of the owner's sessions.
    ``starts_at`` must be timezone-aware.  ``mounts`` are the folder names
    (or ids) as the client sent them, ``mount_map`` their requested kernel
    paths (by the same names); ``vfolder_mounts`` are those folders,
    and the owner's auto-mounted dot-folders, resolved by the API layer
    (:mod:`bai.manager.vfolders.mounts`) into the session row's entries
    ``{"name", "vfid", "host", "host_path", "kernel_path", "mode"}``: the
    registry stores these, not ``mounts``.
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
    mount_map: Mapping[str, str] = field(default_factory=dict)
    vfolder_mounts: Sequence[Mapping[str, str]] = ()
    startup_command: str | None = None
    bootstrap_script: str | None = None
    starts_at: datetime | None = None
    batch_timeout: float | None = None
    dependencies: Sequence[str | uuid.UUID] = ()
    tag: str | None = None
    priority: int = 0
    callback_url: str | None = None
    designated_agent: str | None = None
    #: Per-kernel options beyond slots: ``shmem``, the bytes of the kernel's ``/dev/shm``.
    resource_opts: Mapping[str, int] = field(default_factory=dict)
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
    """The session that enqueueing made (``created``) or reused."""

    session: SessionInfo
    created: bool


@dataclass(frozen=True, slots=True)
class DestroyResult:
    """The session after a destroy, and its main kernel's last stats."""

    session: SessionInfo
    stats: Mapping[str, Any] | None


#: A session as the registry's methods take it: as read, or by id.
SessionRef = SessionInfo | uuid.UUID


@dataclass(frozen=True, slots=True)
class BatchClaim:
    """A batch job this manager now drives."""

    #: Whether a driver already sent it to its kernel (this one resumes it).
    started: bool
    deadline: datetime | None


@dataclass(slots=True)
class Owner:
    """The keypair a session is enqueued for, with its user."""

    access_key: str
    user_id: uuid.UUID
    email: str
    domain_name: str
    role: UserRole
    resource_policy: str


@dataclass(slots=True)
class KernelRow:
    """A kernel of a session being terminated."""

    id: uuid.UUID
    agent: str | None
    status: KernelStatus
