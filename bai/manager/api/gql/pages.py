"""The paginated ``*_list`` fields: page bounds, their ``ORDER BY``, and reading one page.

A page is ``limit`` items from ``offset`` on, with ``total_count``: how many
items match in all.  Both are read in one transaction, so they agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.manager.api.gql.filters import Field, parse_order
from bai.manager.db import Connection

__all__ = ["MAX_PAGE_SIZE", "check_page", "order_terms", "read_page"]

#: The most items one page of a ``*_list`` field may ask for.
MAX_PAGE_SIZE: Final = 1000


def check_page(limit: int, offset: int) -> None:
    """Refuse a page that is empty by construction or too large."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidValue(f"must be 1 to {MAX_PAGE_SIZE}", value=limit, field="limit")
    if offset < 0:
        raise InvalidValue("must be 0 or more", value=offset, field="offset")


def order_terms(
    fields: Mapping[str, Field],
    default: Sequence[Any],
    tiebreak: Any,
    *,
    order: str | None,
    order_key: str | None = None,
    order_asc: bool | None = None,
) -> list[Any]:
    """The ``ORDER BY`` of a list: the ``order`` expression, else the older ``order_key``
    and ``order_asc``, each followed by *tiebreak* (a unique column, so that pages do not
    overlap); else *default*."""
    if order:
        return [*parse_order(order, fields), tiebreak]
    if order_key:
        spec = fields.get(order_key)
        if spec is None:
            raise InvalidValue(
                "is not a field you can order by", value=order_key, field="order_key"
            )
        return [spec.expr.asc() if order_asc in (None, True) else spec.expr.desc(), tiebreak]
    return list(default)


async def read_page(
    conn: Connection,
    source: sa.FromClause,
    columns: Sequence[Any],
    conditions: Sequence[sa.ColumnElement[bool]],
    order: Sequence[Any],
    *,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[Any], int]:
    """The rows of *columns* from *source* that match *conditions*, in *order*, and how
    many match in all; with *limit*, only that page of them."""
    where = sa.and_(sa.true(), *conditions)
    query = sa.select(*columns).select_from(source).where(where).order_by(*order)
    if limit is None:
        rows = list(await conn.execute(query))
        return rows, len(rows)
    total = await conn.scalar(sa.select(sa.func.count()).select_from(source).where(where))
    rows = list(await conn.execute(query.limit(limit).offset(offset)))
    return rows, int(total)
