"""Kernel images the cluster knows, and the short aliases users may type instead.

``name`` is the canonical reference (``registry/path:tag``); one name may
exist once per architecture.  ``labels`` are the image's ``ai.backend.*``
labels; ``resources`` maps slot names to ``{"min": ..., "max": ...}`` decimal
strings taken from the ``ai.backend.resource.min.*`` labels.
"""

from __future__ import annotations

import sqlalchemy as sa

from bai.manager.models.base import JSONType, UTCDateTime, metadata, new_uuid, utcnow

__all__ = ["image_aliases", "images"]

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column("name", sa.String(512), nullable=False, index=True),
    sa.Column("registry", sa.String(256), nullable=False),
    sa.Column("image", sa.String(256), nullable=False),
    sa.Column("tag", sa.String(128), nullable=False),
    sa.Column("architecture", sa.String(32), nullable=False, default="x86_64"),
    sa.Column("digest", sa.String(128), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("labels", JSONType, nullable=False, default=dict),
    sa.Column("resources", JSONType, nullable=False, default=dict),
    sa.Column("accelerators", JSONType, nullable=False, default=list),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.UniqueConstraint("name", "architecture"),
)

image_aliases = sa.Table(
    "image_aliases",
    metadata,
    sa.Column("alias", sa.String(256), primary_key=True),
    sa.Column(
        "image_id",
        sa.Uuid,
        sa.ForeignKey("images.id", onupdate="CASCADE", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)
