"""Virtual folders: the folders, invitations to them, and per-user permissions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-14

Column types are spelled out here (not imported from bai.manager.models), as
in 0001.  Names are unique per owning user and per owning project among the
folders that are not in the trash: two partial unique indexes whose WHERE
is the same SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

#: Timezone-aware timestamps (stored as UTC).
TIMESTAMP = sa.DateTime(timezone=True)
_LIVE = sa.text("status NOT IN ('delete-pending', 'delete-ongoing')")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _permission() -> sa.Enum:
    return _enum("vfolder_permission", "ro", "rw", "wd")


def upgrade() -> None:
    op.create_table(
        "vfolders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("quota_scope_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "usage_mode", _enum("vfolder_usage_mode", "general", "model", "data"), nullable=False
        ),
        sa.Column("permission", _permission(), nullable=False),
        sa.Column("max_files", sa.Integer(), nullable=False),
        sa.Column("quota", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_used", TIMESTAMP, nullable=True),
        sa.Column(
            "ownership_type", _enum("vfolder_ownership_type", "user", "group"), nullable=False
        ),
        sa.Column("user", sa.Uuid(), nullable=True),
        sa.Column("group", sa.Uuid(), nullable=True),
        sa.Column("creator", sa.String(length=128), nullable=True),
        sa.Column("unmanaged_path", sa.Text(), nullable=True),
        sa.Column("cloneable", sa.Boolean(), nullable=False),
        sa.Column(
            "status",
            _enum(
                "vfolder_status",
                "ready",
                "performing",
                "cloning",
                "mounted",
                "error",
                "delete-pending",
                "delete-ongoing",
            ),
            nullable=False,
        ),
        sa.Column("status_changed", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            '(ownership_type = \'user\' AND "user" IS NOT NULL AND "group" IS NULL)'
            ' OR (ownership_type = \'group\' AND "group" IS NOT NULL AND "user" IS NULL)',
            name=op.f("ck_vfolders_ownership"),
        ),
        sa.ForeignKeyConstraint(
            ["group"], ["groups.id"], name=op.f("fk_vfolders_group_groups"), onupdate="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user"], ["users.uuid"], name=op.f("fk_vfolders_user_users"), onupdate="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vfolders")),
    )
    op.create_index(op.f("ix_vfolders_name"), "vfolders", ["name"], unique=False)
    op.create_index(op.f("ix_vfolders_user"), "vfolders", ["user"], unique=False)
    op.create_index(op.f("ix_vfolders_group"), "vfolders", ["group"], unique=False)
    op.create_index(
        "ix_vfolders_user_name_live",
        "vfolders",
        ["user", "name"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index(
        "ix_vfolders_group_name_live",
        "vfolders",
        ["group", "name"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_table(
        "vfolder_invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("permission", _permission(), nullable=False),
        sa.Column("inviter", sa.String(length=64), nullable=False),
        sa.Column("invitee", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            _enum("vfolder_invitation_state", "pending", "accepted", "rejected", "canceled"),
            nullable=False,
        ),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("modified_at", TIMESTAMP, nullable=False),
        sa.Column("vfolder", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vfolder"],
            ["vfolders.id"],
            name=op.f("fk_vfolder_invitations_vfolder_vfolders"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vfolder_invitations")),
    )
    for column in ("inviter", "invitee", "vfolder"):
        op.create_index(
            op.f(f"ix_vfolder_invitations_{column}"),
            "vfolder_invitations",
            [column],
            unique=False,
        )
    op.create_table(
        "vfolder_permissions",
        sa.Column("vfolder", sa.Uuid(), nullable=False),
        sa.Column("user", sa.Uuid(), nullable=False),
        sa.Column("permission", _permission(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user"],
            ["users.uuid"],
            name=op.f("fk_vfolder_permissions_user_users"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vfolder"],
            ["vfolders.id"],
            name=op.f("fk_vfolder_permissions_vfolder_vfolders"),
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("vfolder", "user", name=op.f("pk_vfolder_permissions")),
    )
    op.create_index(
        op.f("ix_vfolder_permissions_user"), "vfolder_permissions", ["user"], unique=False
    )


def downgrade() -> None:
    op.drop_table("vfolder_permissions")
    op.drop_table("vfolder_invitations")
    op.drop_table("vfolders")
