"""Compute sessions, their kernels, dependencies between sessions, and session templates.

Status columns (``status``, ``status_info``, ``status_data``,
``status_history``, ``status_changed``) are written only by
:mod:`bai.manager.transitions` once a row exists; use
:func:`bai.manager.transitions.initial_status` for the values of a new row.
``status_history`` is a JSON list of ``{"status", "timestamp", "reason"}``
entries, oldest first.

A kernel's ``occupied_slots`` is what it holds on its agent while its status
is in :data:`~bai.common.types.RESOURCE_OCCUPYING_STATUSES`; the agent's
occupancy is the sum over such kernels.  A session's ``requested_slots`` and
``occupying_slots`` sum those of its kernels and are recorded for reporting
only: occupancy is always computed from the kernels.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

from bai.common.types import (
    ClusterMode,
    KernelStatus,
    SessionResult,
    SessionStatus,
    SessionTypes,
)
from bai.manager.models.base import (
    JSONType,
    NullableJSONType,
    ResourceSlotType,
    UTCDateTime,
    enum_type,
    metadata,
    new_uuid,
    utcnow,
)

__all__ = [
    "SessionTemplateType",
    "kernels",
    "session_dependencies",
    "session_templates",
    "sessions",
]


class SessionTemplateType(enum.StrEnum):
    """What a stored template creates: one session's parameters, or a cluster layout."""

    TASK = "task"
    CLUSTER = "cluster"


sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    # The client's token for an idempotent creation request.
    sa.Column("creation_id", sa.String(32), nullable=True),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column(
        "session_type",
        enum_type(SessionTypes, "session_type"),
        nullable=False,
        default=SessionTypes.INTERACTIVE,
    ),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column(
        "cluster_mode",
        enum_type(ClusterMode, "cluster_mode"),
        nullable=False,
        default=ClusterMode.SINGLE_NODE,
    ),
    sa.Column("cluster_size", sa.Integer, nullable=False, default=1),
    sa.Column(
        "domain_name",
        sa.String(64),
        sa.ForeignKey("domains.name", onupdate="CASCADE"),
        nullable=False,
    ),
    sa.Column("group_id", sa.Uuid, sa.ForeignKey("groups.id"), nullable=False),
    sa.Column("user_uuid", sa.Uuid, sa.ForeignKey("users.uuid"), nullable=False),
    sa.Column(
        "access_key",
        sa.String(20),
        sa.ForeignKey("keypairs.access_key", onupdate="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "scaling_group_name",
        sa.String(64),
        sa.ForeignKey("scaling_groups.name", onupdate="CASCADE"),
        nullable=True,
    ),
    # The only agent the caller allows (admins may pin a session); NULL lets the scheduler choose.
    sa.Column("designated_agent", sa.String(64), nullable=True),
    # The main kernel's image reference.
    sa.Column("image", sa.String(512), nullable=False),
    sa.Column("architecture", sa.String(32), nullable=False, default="x86_64"),
    sa.Column("tag", sa.String(64), nullable=True),
    sa.Column("status", enum_type(SessionStatus, "session_status"), nullable=False),
    sa.Column("status_info", sa.String(64), nullable=True),
    sa.Column("status_data", NullableJSONType, nullable=True),
    sa.Column("status_history", JSONType, nullable=False, default=list),
    sa.Column("status_changed", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("terminated_at", UTCDateTime, nullable=True),
    # Earliest time a batch session may start.
    sa.Column("starts_at", UTCDateTime, nullable=True),
    # Seconds a batch session may run before it is terminated.
    sa.Column("batch_timeout", sa.BigInteger, nullable=True),
    # When a batch job's batch_timeout runs out (set as its job starts; NULL without one).
    sa.Column("batch_deadline", UTCDateTime, nullable=True),
    # When the job was about to be sent to its kernel: without it, it never ran.
    sa.Column("batch_sent", UTCDateTime, nullable=True),
    # The manager driving a RUNNING batch job (NULL until its job starts), and until when that
    # claim holds unless renewed: see bai.manager.sessions.batch.
    sa.Column("batch_driver", sa.String(32), nullable=True),
    sa.Column("batch_lease", UTCDateTime, nullable=True),
    sa.Column("startup_command", sa.Text, nullable=True),
    sa.Column("bootstrap_script", sa.Text, nullable=True),
    sa.Column("callback_url", sa.Text, nullable=True),
    sa.Column(
        "result",
        enum_type(SessionResult, "session_result"),
        nullable=False,
        default=SessionResult.UNDEFINED,
    ),
    sa.Column("requested_slots", ResourceSlotType, nullable=False, default=dict),
    sa.Column("occupying_slots", ResourceSlotType, nullable=False, default=dict),
    sa.Column("vfolder_mounts", JSONType, nullable=False, default=list),
    sa.Column("environ", JSONType, nullable=False, default=dict),
    sa.Column("num_queries", sa.BigInteger, nullable=False, default=0),
    # The last time a user ran code, typed in a terminal or moved bytes through a proxy
    # (bai.manager.sessions.activity); NULL until the first such use.
    sa.Column("last_access", UTCDateTime, nullable=True),
    sa.Index(None, "access_key", "status"),
    sa.Index(None, "status", "scaling_group_name"),
)

kernels = sa.Table(
    "kernels",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column(
        "session_id",
        sa.Uuid,
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # "main" for the kernel the REST API talks to, "sub" for the others.
    sa.Column("cluster_role", sa.String(16), nullable=False, default="main"),
    sa.Column("cluster_idx", sa.Integer, nullable=False, default=1),
    sa.Column("local_rank", sa.Integer, nullable=False, default=0),
    sa.Column("cluster_hostname", sa.String(64), nullable=False, default="main1"),
    sa.Column(
        "agent",
        sa.String(64),
        sa.ForeignKey("agents.id", onupdate="CASCADE"),
        nullable=True,
    ),
    sa.Column("agent_addr", sa.String(128), nullable=True),
    sa.Column("image", sa.String(512), nullable=False),
    sa.Column("architecture", sa.String(32), nullable=False, default="x86_64"),
    sa.Column("container_id", sa.String(64), nullable=True),
    sa.Column("status", enum_type(KernelStatus, "kernel_status"), nullable=False, index=True),
    sa.Column("status_info", sa.String(64), nullable=True),
    sa.Column("status_data", NullableJSONType, nullable=True),
    sa.Column("status_history", JSONType, nullable=False, default=list),
    sa.Column("status_changed", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("requested_slots", ResourceSlotType, nullable=False, default=dict),
    sa.Column("occupied_slots", ResourceSlotType, nullable=False, default=dict),
    # Devices the agent assigned, per compute plugin.
    sa.Column("attached_devices", JSONType, nullable=False, default=dict),
    sa.Column("resource_opts", JSONType, nullable=False, default=dict),
    # Where the kernel runner's sockets are reachable from the agent.
    sa.Column("kernel_host", sa.String(128), nullable=True),
    sa.Column("repl_in_port", sa.Integer, nullable=True),
    sa.Column("repl_out_port", sa.Integer, nullable=True),
    sa.Column("stdin_port", sa.Integer, nullable=True),
    sa.Column("stdout_port", sa.Integer, nullable=True),
    sa.Column("service_ports", JSONType, nullable=False, default=list),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("terminated_at", UTCDateTime, nullable=True),
    sa.Column("last_stat", NullableJSONType, nullable=True),
    sa.Index(None, "agent", "status"),
)

session_dependencies = sa.Table(
    "session_dependencies",
    metadata,
    sa.Column(
        "session_id",
        sa.Uuid,
        sa.ForeignKey("sessions.id", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "depends_on",
        sa.Uuid,
        sa.ForeignKey("sessions.id", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    sa.CheckConstraint("session_id <> depends_on", name="no_self_dependency"),
)

session_templates = sa.Table(
    "session_templates",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("is_active", sa.Boolean, nullable=False, default=True),
    sa.Column(
        "domain_name",
        sa.String(64),
        sa.ForeignKey("domains.name", onupdate="CASCADE"),
        nullable=False,
    ),
    sa.Column("group_id", sa.Uuid, sa.ForeignKey("groups.id"), nullable=True),
    sa.Column("user_uuid", sa.Uuid, sa.ForeignKey("users.uuid"), nullable=False, index=True),
    sa.Column(
        "type",
        enum_type(SessionTemplateType, "session_template_type"),
        nullable=False,
        default=SessionTemplateType.TASK,
    ),
    sa.Column("name", sa.String(128), nullable=True),
    sa.Column("template", JSONType, nullable=False),
)
