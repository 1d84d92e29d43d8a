"""Alembic's entry point: runs the migrations on the connection that ``migrate`` hands over.

:mod:`bai.manager.models.migrate` puts a synchronous SQLAlchemy connection,
already inside a transaction, in ``config.attributes["connection"]``; the
migrations run in that transaction.  SQLite gets batch mode, since it can
only alter tables by copying them.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.types import TypeDecorator

from bai.manager.models import metadata


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not depend on bai's Python types, which may change later:
    # render each column type as the plain type it stores.
    if type_ != "type":
        return False
    impl = obj.impl_instance if isinstance(obj, TypeDecorator) else obj
    if isinstance(impl, sa.JSON):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    if isinstance(impl, sa.DateTime):
        return f"sa.DateTime(timezone={impl.timezone!r})"
    return False


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise RuntimeError("run bai's migrations through bai.manager.models.migrate")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
