"""Virtual folders: the folders, the invitations to them, and who else may use them.

A row of :data:`vfolders` is one folder on one storage volume: ``host`` is
``PROXY:VOLUME`` and the proxy names the folder by its id as 32 hex digits
(:func:`bai.common.storage_api.vfid_of`); ``quota_scope_id`` (``user:UUID``
or ``project:UUID``) is the budget its bytes count against.  A folder is
owned either by a user (``ownership_type = "user"``, ``user`` set, ``group``
NULL) or by a project (``"group"``, ``group`` set, ``user`` NULL); a CHECK
constraint holds the two columns to that.  ``permission`` is what project
members get on a project folder (an owner always has ``wd``).  ``quota`` is
the folder's byte limit (NULL: none).

``status`` is the folder's life: ``ready`` for use, ``cloning`` while a
clone fills it, ``delete-pending`` once it is in the trash (its data kept,
restorable by its owner), ``delete-ongoing`` while a purge removes its data.
:data:`TRASH_STATUSES` are the statuses of a folder in the trash; names are
unique per owner among the other, *live* folders (two partial unique
indexes), so a trashed folder's name can be reused.

:data:`vfolder_invitations` are offers from a folder's owner (``inviter``,
an email) to another user (``invitee``) to use a user-owned folder with
``permission``; accepting one writes a :data:`vfolder_permissions` row,
which also records the per-user permissions of project folders that admins
share directly.  Both go when their folder row goes.
"""

from __future__ import annotations

import enum
from typing import Final

import sqlalchemy as sa

from bai.manager.models.base import UTCDateTime, enum_type, metadata, new_uuid, utcnow

__all__ = [
    "LIVE_CONDITION",
    "TRASH_STATUSES",
    "VFolderInvitationState",
    "VFolderOwnershipType",
    "VFolderPermission",
    "VFolderStatus",
    "VFolderUsageMode",
    "vfolder_invitations",
    "vfolder_permissions",
    "vfolders",
]


class VFolderUsageMode(enum.StrEnum):
    """What a folder is for (informational: every mode is used the same way)."""

    GENERAL = "general"
    MODEL = "model"
    DATA = "data"


class VFolderPermission(enum.StrEnum):
    """Read-only, read-write, read-write-delete: each level includes the ones before."""

    READ_ONLY = "ro"
    READ_WRITE = "rw"
    RW_DELETE = "wd"


class VFolderOwnershipType(enum.StrEnum):
    """Whether a user or a project (``group``, the spec's word) owns a folder."""

    USER = "user"
    GROUP = "group"


class VFolderStatus(enum.StrEnum):
    """Where a folder is in its life (module docs)."""

    READY = "ready"
    PERFORMING = "performing"
    CLONING = "cloning"
    MOUNTED = "mounted"
    ERROR = "error"
    DELETE_PENDING = "delete-pending"
    DELETE_ONGOING = "delete-ongoing"


class VFolderInvitationState(enum.StrEnum):
    """An invitation waits, or was accepted, rejected (by the invitee) or canceled (inviter)."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELED = "canceled"


#: Statuses of a folder in the trash (or being purged from it): not usable, name free.
TRASH_STATUSES: Final = frozenset({VFolderStatus.DELETE_PENDING, VFolderStatus.DELETE_ONGOING})

# The WHERE of the partial unique indexes: the same SQL text on SQLite and PostgreSQL.
_LIVE_INDEX_WHERE: Final = sa.text("status NOT IN ('delete-pending', 'delete-ongoing')")

vfolders = sa.Table(
    "vfolders",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    # "PROXY:VOLUME".
    sa.Column("host", sa.String(128), nullable=False),
    # "user:UUID" or "project:UUID": whose storage budget the folder's bytes count against.
    sa.Column("quota_scope_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column(
        "usage_mode",
        enum_type(VFolderUsageMode, "vfolder_usage_mode"),
        nullable=False,
        default=VFolderUsageMode.GENERAL,
    ),
    sa.Column(
        "permission",
        enum_type(VFolderPermission, "vfolder_permission"),
        nullable=False,
        default=VFolderPermission.READ_WRITE,
    ),
    # Most files the folder may hold (0: no limit); kept for the spec's max_files field.
    sa.Column("max_files", sa.Integer, nullable=False, default=0),
    # The folder's byte limit as the proxy enforces it; NULL for none.
    sa.Column("quota", sa.BigInteger, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("last_used", UTCDateTime, nullable=True),
    sa.Column(
        "ownership_type",
        enum_type(VFolderOwnershipType, "vfolder_ownership_type"),
        nullable=False,
        default=VFolderOwnershipType.USER,
    ),
    sa.Column(
        "user",
        sa.Uuid,
        sa.ForeignKey("users.uuid", onupdate="CASCADE"),
        nullable=True,
        index=True,
    ),
    sa.Column(
        "group",
        sa.Uuid,
        sa.ForeignKey("groups.id", onupdate="CASCADE"),
        nullable=True,
        index=True,
    ),
    # The email of the user who created the folder.
    sa.Column("creator", sa.String(128), nullable=True),
    sa.Column("unmanaged_path", sa.Text, nullable=True),
    sa.Column("cloneable", sa.Boolean, nullable=False, default=False),
    sa.Column(
        "status",
        enum_type(VFolderStatus, "vfolder_status"),
        nullable=False,
        default=VFolderStatus.READY,
    ),
    # When status last changed (for a trashed folder: when it went to the trash).
    sa.Column("status_changed", UTCDateTime, nullable=False, default=utcnow),
    sa.CheckConstraint(
        '(ownership_type = \'user\' AND "user" IS NOT NULL AND "group" IS NULL)'
        ' OR (ownership_type = \'group\' AND "group" IS NOT NULL AND "user" IS NULL)',
        name="ownership",
    ),
    sa.Index(
        "ix_vfolders_user_name_live",
        "user",
        "name",
        unique=True,
        sqlite_where=_LIVE_INDEX_WHERE,
        postgresql_where=_LIVE_INDEX_WHERE,
    ),
    sa.Index(
        "ix_vfolders_group_name_live",
        "group",
        "name",
        unique=True,
        sqlite_where=_LIVE_INDEX_WHERE,
        postgresql_where=_LIVE_INDEX_WHERE,
    ),
)

#: A condition on :data:`vfolders` that holds for live (not trashed) folders.
LIVE_CONDITION: Final[sa.ColumnElement[bool]] = vfolders.c.status.not_in(sorted(TRASH_STATUSES))

vfolder_invitations = sa.Table(
    "vfolder_invitations",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column(
        "permission",
        enum_type(VFolderPermission, "vfolder_permission"),
        nullable=False,
        default=VFolderPermission.READ_WRITE,
    ),
    # Emails, as the spec's invitation object reports them.
    sa.Column("inviter", sa.String(64), nullable=False, index=True),
    sa.Column("invitee", sa.String(64), nullable=False, index=True),
    sa.Column(
        "state",
        enum_type(VFolderInvitationState, "vfolder_invitation_state"),
        nullable=False,
        default=VFolderInvitationState.PENDING,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("modified_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column(
        "vfolder",
        sa.Uuid,
        sa.ForeignKey("vfolders.id", onupdate="CASCADE", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)

vfolder_permissions = sa.Table(
    "vfolder_permissions",
    metadata,
    sa.Column(
        "vfolder",
        sa.Uuid,
        sa.ForeignKey("vfolders.id", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "user",
        sa.Uuid,
        sa.ForeignKey("users.uuid", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    sa.Column(
        "permission",
        enum_type(VFolderPermission, "vfolder_permission"),
        nullable=False,
        default=VFolderPermission.READ_WRITE,
    ),
)
