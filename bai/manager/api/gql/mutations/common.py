"""What every mutation module shares: the answer shape and checks of common input values.

Checks here raise :class:`~bai.common.errors.InvalidValue` naming the field
(``props.<name>`` for a field of the ``props`` input object), which
:mod:`~bai.manager.api.gql.execution` reports as a GraphQL error with that
message; nothing has been written when they raise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import DEFAULT_SLOT_TYPES, ResourceSlot
from bai.manager.api.gql.context import GqlContext
from bai.manager.api.resource import cluster_slot_types
from bai.manager.db import Connection

__all__ = [
    "MAX_LIMIT",
    "answer",
    "check_client_ips",
    "check_limit",
    "check_slug",
    "count",
    "host_permissions",
    "parse_slots",
    "slot_types",
    "write_unique",
]

T = TypeVar("T")
U = TypeVar("U")

#: The largest count or size limit a policy accepts (a BigInt's range; more is absurd).
MAX_LIMIT: Final = 2**53 - 1
# Names of domains, projects and resource groups: what the official manager calls a slug.
_SLUG: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?\Z")


def answer(ok: bool, msg: str, **extra: Any) -> dict[str, Any]:
    """The ``{ok, msg, ...}`` object every mutation returns."""
    return {"ok": ok, "msg": msg, **extra}


def check_slug(value: str, field: str) -> str:
    """*value* if it is 1 to 64 letters, digits, ``.``, ``_`` or ``-``, starting and ending
    with a letter or digit."""
    if not isinstance(value, str) or _SLUG.match(value) is None:
        raise InvalidValue(
            "must be 1 to 64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
            value=value,
            field=field,
        )
    return value


def check_limit(value: Any, field: str, *, minimum: int = 0) -> int:
    """*value* if it is an integer from *minimum* to :data:`MAX_LIMIT`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidValue(f"must be {minimum} or more", value=value, field=field)
    if value > MAX_LIMIT:
        raise InvalidValue(f"must be at most {MAX_LIMIT}", value=value, field=field)
    return value


async def slot_types(conn: Connection) -> dict[str, Any]:
    """The slot types values may name: the defaults and those of the cluster's agents."""
    return {**DEFAULT_SLOT_TYPES, **(await cluster_slot_types(conn))}


def parse_slots(value: Any, known: Mapping[str, Any], field: str) -> ResourceSlot:
    """A resource slot map from user input (a JSON object; ``Infinity`` allowed)."""
    try:
        return ResourceSlot.parse(value, known, allow_infinity=True)
    except InvalidValue as exc:
        raise InvalidValue(exc.problem, value=exc.value, field=field) from None


def host_permissions(value: Any, field: str) -> list[Any] | dict[str, Any]:
    """``allowed_vfolder_hosts``: a list of hosts or a map of hosts to permission lists."""
    if isinstance(value, list) and all(isinstance(host, str) for host in value):
        return value
    if isinstance(value, dict) and all(
        isinstance(perms, list) and all(isinstance(p, str) for p in perms)
        for perms in value.values()
    ):
        return value
    raise InvalidValue(
        "must be a list of hosts or a map of hosts to permission lists", value=value, field=field
    )


def check_client_ips(value: Any, field: str) -> list[str] | None:
    """``allowed_client_ip``: IP addresses or networks (``None`` or empty: anywhere)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidValue("must be a list of addresses or networks", value=value, field=field)
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            raise InvalidValue(
                "is not an IP address or network", value=entry, field=field
            ) from None
    return [str(entry) for entry in value] or None


async def count(conn: Connection, table: sa.FromClause, *conditions: sa.ColumnElement[bool]) -> int:
    """How many rows of *table* match *conditions*."""
    found = await conn.scalar(sa.select(sa.func.count()).select_from(table).where(*conditions))
    return int(found or 0)


def write_unique(ctx: GqlContext, fn: Callable[[Connection], Awaitable[T]], taken: U) -> T | U:
    """``ctx.write(fn)``, or *taken* when a unique key was taken meanwhile: *fn* checks
    names first, but a concurrent request may insert the same one between check and write."""
    try:
        return ctx.write(fn)
    except sa.exc.IntegrityError:
        return taken
