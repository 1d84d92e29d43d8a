"""Dotfiles of users, projects and domains, and each user's stored bootstrap script.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

``users.dotfiles``, ``groups.dotfiles`` and ``domains.dotfiles`` hold JSON
lists of ``{"path", "perm", "data"}``; ``users.bootstrap_script`` the script
every new kernel of the user runs before the session's own
(``bai.manager.dotfiles``).  Existing rows get no dotfiles and an empty script.
Column types are spelled out here, as in 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

#: JSON documents: JSONB on PostgreSQL.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TABLES = ("users", "groups", "domains")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("dotfiles", JSON_DOC, nullable=False, server_default=sa.text("'[]'"))
            )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("bootstrap_script", sa.Text(), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("bootstrap_script")
    for table in reversed(_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("dotfiles")
