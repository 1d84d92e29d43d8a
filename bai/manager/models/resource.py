"""Where sessions can run: resource groups, their associations, agents and presets.

A *scaling group* (the spec's resource group) is a set of agents with one
scheduler.  Domains, projects and keypairs are allowed to use the resource
groups associated with them.

Agents have no occupied-slots column on purpose: what an agent holds is
derived from its kernels in the same transaction that reads it (see
:func:`bai.manager.models.usage.agent_occupancy`), so no counter can drift
from the truth.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

from bai.manager.models.base import (
    JSONType,
    ResourceSlotType,
    UTCDateTime,
    enum_type,
    metadata,
    utcnow,
)

__all__ = [
    "AgentStatus",
    "agents",
    "resource_presets",
    "scaling_groups",
    "sgroups_for_domains",
    "sgroups_for_groups",
    "sgroups_for_keypairs",
]


class AgentStatus(enum.StrEnum):
    """Liveness of an agent as the manager sees it."""

    ALIVE = "ALIVE"
    LOST = "LOST"
    RESTARTING = "RESTARTING"
    TERMINATED = "TERMINATED"


scaling_groups = sa.Table(
    "scaling_groups",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("is_active", sa.Boolean, nullable=False, default=True),
    # Whether users who are not associated through a domain, project or keypair may see it.
    sa.Column("is_public", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("wsproxy_addr", sa.String(1024), nullable=True),
    sa.Column("driver", sa.String(64), nullable=False, default="static"),
    sa.Column("driver_opts", JSONType, nullable=False, default=dict),
    sa.Column("scheduler", sa.String(64), nullable=False, default="fifo"),
    sa.Column("scheduler_opts", JSONType, nullable=False, default=dict),
    sa.Column("use_host_network", sa.Boolean, nullable=False, default=False),
)


def _sgroup_fk() -> sa.Column[str]:
    return sa.Column(
        "scaling_group",
        sa.String(64),
        sa.ForeignKey("scaling_groups.name", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    )


sgroups_for_domains = sa.Table(
    "sgroups_for_domains",
    metadata,
    _sgroup_fk(),
    sa.Column(
        "domain",
        sa.String(64),
        sa.ForeignKey("domains.name", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)

sgroups_for_groups = sa.Table(
    "sgroups_for_groups",
    metadata,
    _sgroup_fk(),
    sa.Column(
        "group",
        sa.Uuid,
        sa.ForeignKey("groups.id", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)

sgroups_for_keypairs = sa.Table(
    "sgroups_for_keypairs",
    metadata,
    _sgroup_fk(),
    sa.Column(
        "access_key",
        sa.String(20),
        sa.ForeignKey("keypairs.access_key", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", enum_type(AgentStatus, "agent_status"), nullable=False, index=True),
    sa.Column("status_changed", UTCDateTime, nullable=True),
    sa.Column("region", sa.String(64), nullable=False, default=""),
    sa.Column(
        "scaling_group",
        sa.String(64),
        sa.ForeignKey("scaling_groups.name", onupdate="CASCADE"),
        nullable=False,
        index=True,
    ),
    # False when an administrator excluded the agent from new placements.
    sa.Column("schedulable", sa.Boolean, nullable=False, default=True),
    # Capacity reported by the agent's compute plugins.
    sa.Column("available_slots", ResourceSlotType, nullable=False, default=dict),
    # The manager -> agent RPC address (nng URL).
    sa.Column("addr", sa.String(128), nullable=False),
    sa.Column("public_host", sa.String(256), nullable=True),
    sa.Column("first_contact", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("lost_at", UTCDateTime, nullable=True),
    sa.Column("version", sa.String(64), nullable=False, default=""),
    sa.Column("architecture", sa.String(32), nullable=False, default="x86_64"),
    sa.Column("compute_plugins", JSONType, nullable=False, default=dict),
)

resource_presets = sa.Table(
    "resource_presets",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("resource_slots", ResourceSlotType, nullable=False),
    # Bytes of /dev/shm; NULL means the image's or agent's default.
    sa.Column("shared_memory", sa.BigInteger, nullable=True),
)
