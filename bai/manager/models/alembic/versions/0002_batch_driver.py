"""Batch jobs recoverable from the database: the deadline and the driving manager's lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

A RUNNING batch session's ``batch_deadline`` is when ``batch_timeout`` runs
out (set when a manager first claims its job); ``batch_sent`` is when the job
was about to be sent to its kernel (set before the call, so a job without it
was never run and is started, not resumed); ``batch_driver`` names the manager
that drives the job and ``batch_lease`` how long that claim holds without
renewal, so that another manager resumes the job of one that died.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

#: Timezone-aware timestamps (stored as UTC).
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("batch_deadline", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("batch_sent", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("batch_driver", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("batch_lease", TIMESTAMP, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("batch_lease")
        batch.drop_column("batch_driver")
        batch.drop_column("batch_sent")
        batch.drop_column("batch_deadline")
