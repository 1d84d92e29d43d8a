"""Dotfiles and bootstrap scripts in the database, and what a new kernel gets of them.

:func:`change` reads one owner's list (a user's, a project's or a domain's)
with its row locked, applies a pure change from :mod:`.rules` and writes the
result in the same transaction: two concurrent changes never lose one
another, and a refused change writes nothing.  :func:`kernel_home` reads, for
a session about to start, the dotfiles its kernels get (the owner's over the
session's project's over the domain's, :func:`.rules.merge`) and the owner's
stored bootstrap script.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from bai.manager.db import Connection, Database
from bai.manager.dotfiles import rules
from bai.manager.models.identity import domains, groups, users

__all__ = [
    "Scope",
    "change",
    "kernel_home",
    "read",
    "read_bootstrap_script",
    "write_bootstrap_script",
]


@dataclass(frozen=True)
class Scope:
    """Whose dotfiles: the table, its key column and the key's value, and how to name it."""

    table: sa.Table
    key: sa.Column[Any]
    value: Any
    label: str

    @classmethod
    def user(cls, user_id: uuid.UUID) -> Scope:
        return cls(users, users.c.uuid, user_id, "a user")

    @classmethod
    def group(cls, group_id: uuid.UUID) -> Scope:
        return cls(groups, groups.c.id, group_id, "a project")

    @classmethod
    def domain(cls, name: str) -> Scope:
        return cls(domains, domains.c.name, name, "a domain")


_MISSING: Final = object()


async def _load(conn: Connection, scope: Scope, *, lock: bool) -> Any:
    query = sa.select(scope.table.c.dotfiles).where(scope.key == scope.value)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _MISSING if row is None else row.dotfiles


async def read(db: Database, scope: Scope) -> list[rules.Stored] | None:
    """The dotfiles of *scope*; None when its row does not exist."""
    row = (
        await db.fetch(sa.select(scope.table.c.dotfiles).where(scope.key == scope.value))
    ).first()
    return None if row is None else rules.read_stored(row.dotfiles)


async def change(
    db: Database,
    scope: Scope,
    edit: Callable[[list[rules.Stored]], list[rules.Stored]],
) -> bool:
    """Apply *edit* to the dotfiles of *scope* and store the result; False if no such row.

    Whatever *edit* raises propagates and nothing is written.
    """

    async def run(conn: Connection) -> bool:
        stored = await _load(conn, scope, lock=True)
        if stored is _MISSING:
            return False
        updated = edit(rules.read_stored(stored))
        await conn.execute(
            sa.update(scope.table).where(scope.key == scope.value).values(dotfiles=updated)
        )
        return True

    return await db.transaction(run)


async def read_bootstrap_script(db: Database, user_id: uuid.UUID) -> str:
    """The user's stored bootstrap script (empty when none)."""
    row = (
        await db.fetch(sa.select(users.c.bootstrap_script).where(users.c.uuid == user_id))
    ).first()
    return "" if row is None else (row.bootstrap_script or "")


async def write_bootstrap_script(db: Database, user_id: uuid.UUID, script: str) -> None:
    """Store *script* (checked by :func:`.rules.check_bootstrap_script`) as the user's."""

    async def run(conn: Connection) -> None:
        await conn.execute(
            sa.update(users).where(users.c.uuid == user_id).values(bootstrap_script=script)
        )

    await db.transaction(run)


async def kernel_home(
    db: Database, user_id: uuid.UUID, group_id: uuid.UUID | None, domain_name: str
) -> tuple[list[dict[str, Any]], str | None]:
    """The ``KernelConfig.dotfiles`` and ``user_bootstrap_script`` of a session's kernels.

    One read: the owner's row, the session's project's and the domain's.
    Dotfiles are ``{"path", "mode", "data"}`` maps (the agent's wire shape);
    the script is None when the owner stored none.
    """
    group_dotfiles = sa.select(groups.c.dotfiles).where(groups.c.id == group_id)
    domain_dotfiles = sa.select(domains.c.dotfiles).where(domains.c.name == domain_name)
    query = sa.select(
        users.c.dotfiles.label("user_dotfiles"),
        users.c.bootstrap_script,
        group_dotfiles.scalar_subquery().label("group_dotfiles"),
        domain_dotfiles.scalar_subquery().label("domain_dotfiles"),
    ).where(users.c.uuid == user_id)
    row = (await db.fetch(query)).first()
    if row is None:
        return [], None
    merged = rules.merge(
        rules.read_stored(row.user_dotfiles),
        rules.read_stored(row.group_dotfiles),
        rules.read_stored(row.domain_dotfiles),
    )
    dotfiles = [
        {"path": item["path"], "mode": int(item["perm"], 8), "data": item["data"]}
        for item in merged
    ]
    return dotfiles, (row.bootstrap_script or None)
