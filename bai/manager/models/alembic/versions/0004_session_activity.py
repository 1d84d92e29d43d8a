"""When a session was last used: ``sessions.last_access``, read by the idle checker.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

Execute calls, terminal messages and proxied bytes mark a session as used;
the manager writes the time in batches (``bai.manager.sessions.activity``).
NULL means never used since it started; the idle checker then counts from
the time the session became RUNNING.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("last_access", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("last_access")
