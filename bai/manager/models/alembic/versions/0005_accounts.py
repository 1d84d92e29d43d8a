"""When a user's password was last set: ``users.password_changed_at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

The password login refuses a password older than ``[manager] max-password-age``
(``bai.manager.api.accounts``).  Existing users count from the time their
account was created; NULL (a row written without it) counts the same way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
    users = sa.table(
        "users",
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("password_changed_at", sa.DateTime(timezone=True)),
    )
    op.execute(sa.update(users).values(password_changed_at=users.c.created_at))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_changed_at")
