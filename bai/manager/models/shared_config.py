"""The shared configuration: a key-value table that replaces the spec's etcd.

Keys are ``/``-separated paths such as ``config/docker/registry/cr.example.com``;
values are any JSON document.  A *prefix* selects a key and every key below
it (``a/b`` selects ``a/b`` and ``a/b/c`` but not ``a/bc``), which is what
``/config/get|set|delete`` with ``prefix`` and ``bai manager config ...
--prefix`` need.  The prefix :data:`ROOT` (``""``) selects every key, for the
spec's whole-tree backup and restore (``get --prefix ""``).  All functions run
inside the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bai.common.errors import InvalidValue
from bai.manager.db import Connection
from bai.manager.models.base import JSONType, UTCDateTime, metadata, utcnow

__all__ = [
    "MAX_KEY_LENGTH",
    "ROOT",
    "check_config_key",
    "delete_config",
    "get_config",
    "get_config_prefix",
    "get_config_tree",
    "nest_config",
    "put_config",
    "put_config_many",
    "shared_config",
]

#: The longest key the table holds.
MAX_KEY_LENGTH: Final = 512

#: The prefix that selects every key; it is not a key itself.
ROOT: Final = ""

shared_config = sa.Table(
    "shared_config",
    metadata,
    sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
    sa.Column("value", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
)


def check_config_key(key: object, *, field: str = "key") -> str:
    """Return *key* if it is a valid config key, else raise :class:`InvalidValue`.

    A key is 1 to 512 printable characters without spaces, made of non-empty
    ``/``-separated parts (so no leading, trailing or doubled ``/``).
    """
    if not isinstance(key, str):
        raise InvalidValue("a config key must be a string", value=key, field=field)
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidValue(
            f"a config key must have 1 to {MAX_KEY_LENGTH} characters", value=key, field=field
        )
    if not key.isprintable() or any(ch.isspace() for ch in key):
        raise InvalidValue(
            "a config key must be printable and have no spaces", value=key, field=field
        )
    if "" in key.split("/"):
        raise InvalidValue(
            "a config key must not start or end with '/' or contain '//'", value=key, field=field
        )
    return key


def _under(prefix: str) -> sa.ColumnElement[bool]:
    if prefix == ROOT:
        return sa.true()
    below = prefix + "/"
    return sa.or_(
        shared_config.c.key == prefix,
        sa.func.substr(shared_config.c.key, 1, len(below)) == below,
    )


async def get_config(conn: Connection, key: str, default: Any = None) -> Any:
    """The value stored at exactly *key*, or *default* when there is none."""
    check_config_key(key)
    row = (
        await conn.execute(sa.select(shared_config.c.value).where(shared_config.c.key == key))
    ).first()
    return default if row is None else row[0]


async def get_config_prefix(conn: Connection, prefix: str) -> dict[str, Any]:
    """Every key at or below *prefix* (every key for :data:`ROOT`) with its value, in key order."""
    if prefix != ROOT:
        check_config_key(prefix, field="prefix")
    rows = await conn.execute(
        sa.select(shared_config.c.key, shared_config.c.value)
        .where(_under(prefix))
        .order_by(shared_config.c.key)
    )
    return {row.key: row.value for row in rows}


def nest_config(prefix: str, items: dict[str, Any]) -> dict[str, Any]:
    """The tree of *items* (keys at or below *prefix*) relative to *prefix*.

    A key that is both a value and the prefix of other keys keeps its value
    under ``""`` in its subtree.
    """
    root: dict[str, Any] = {}
    trees = {id(root)}
    for key, value in items.items():
        rest = key[len(prefix) :].lstrip("/")
        parts = rest.split("/") if rest else [""]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not (isinstance(child, dict) and id(child) in trees):
                subtree: dict[str, Any] = {} if part not in node else {"": child}
                trees.add(id(subtree))
                node[part] = child = subtree
            node = child
        last = parts[-1]
        existing = node.get(last)
        if isinstance(existing, dict) and id(existing) in trees:
            existing[""] = value
        else:
            node[last] = value
    return root


async def get_config_tree(conn: Connection, prefix: str) -> dict[str, Any]:
    """The keys at or below *prefix* as one nested tree (:func:`nest_config`)."""
    return nest_config(prefix, await get_config_prefix(conn, prefix))


async def put_config(conn: Connection, key: str, value: Any) -> None:
    """Store *value* (any JSON document) at *key*, replacing what was there."""
    await put_config_many(conn, {key: value})


async def put_config_many(conn: Connection, items: Mapping[str, Any]) -> None:
    """Store every ``key: value`` of *items*; all keys and values are checked before any write."""
    for key, value in items.items():
        check_config_key(key)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidValue("a config value must be JSON", value=value, field=key) from None
    if not items:
        return
    now = utcnow()
    insert = postgresql.insert if conn.dialect_name == "postgresql" else sqlite.insert
    stmt = insert(shared_config)
    stmt = stmt.on_conflict_do_update(
        index_elements=[shared_config.c.key],
        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
    )
    await conn.execute(
        stmt, [{"key": key, "value": value, "updated_at": now} for key, value in items.items()]
    )


async def delete_config(conn: Connection, key: str, *, prefix: bool = False) -> int:
    """Delete *key* (and, with *prefix*, every key below it); return how many were deleted.

    With *prefix*, *key* may be :data:`ROOT`: every key is deleted.
    """
    if not (prefix and key == ROOT):
        check_config_key(key, field="prefix" if prefix else "key")
    where = _under(key) if prefix else shared_config.c.key == key
    return (await conn.execute(sa.delete(shared_config).where(where))).rowcount
