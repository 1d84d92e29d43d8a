"""Error reports that clients and services file through ``/logs/error``."""

from __future__ import annotations

import enum

import sqlalchemy as sa

from bai.manager.models.base import (
    NullableJSONType,
    UTCDateTime,
    enum_type,
    metadata,
    new_uuid,
    utcnow,
)

__all__ = ["ErrorLogSeverity", "error_logs"]


class ErrorLogSeverity(enum.StrEnum):
    """How bad a reported error is."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"


error_logs = sa.Table(
    "error_logs",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow, index=True),
    sa.Column("severity", enum_type(ErrorLogSeverity, "error_log_severity"), nullable=False),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column(
        "user",
        sa.Uuid,
        sa.ForeignKey("users.uuid", onupdate="CASCADE", ondelete="SET NULL"),
        nullable=True,
        index=True,
    ),
    sa.Column("is_read", sa.Boolean, nullable=False, default=False),
    sa.Column("is_cleared", sa.Boolean, nullable=False, default=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("context_lang", sa.String(64), nullable=False),
    sa.Column("context_env", NullableJSONType, nullable=True),
    sa.Column("request_url", sa.Text, nullable=True),
    sa.Column("request_status", sa.Integer, nullable=True),
    sa.Column("traceback", sa.Text, nullable=True),
)
