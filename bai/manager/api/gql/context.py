"""What a resolver knows about its request: the caller, the database, and who may see what.

Resolvers run synchronously in a worker thread (see
:mod:`bai.manager.api.gql.execution`); :meth:`GqlContext.read` and
:meth:`GqlContext.write` hand a coroutine function back to the Trio thread
with :func:`trio.from_thread.run` and block until it finishes, so every
database access still happens in Trio, under the database's own deadlines,
and a cancelled request cancels the statement that is running.

Visibility rules (:class:`GqlContext` methods), by the caller's effective role:

* superadmins see everything and may name any domain;
* domain admins see their own domain; naming another domain is refused
  (:class:`~bai.manager.api.errors.Forbidden`);
* users (and monitors) see their own keypair, user, sessions and the projects
  they belong to; naming another domain, access key or user is refused.

Agents are visible to superadmins only; when ``[manager] hide-agents`` is
set (the default), the agent fields of sessions and containers are ``null``
for everyone else.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, cast

import sqlalchemy as sa
import trio
from graphql import GraphQLResolveInfo

from bai.manager.api.auth import AuthContext
from bai.manager.api.errors import Forbidden
from bai.manager.db import Connection, Database
from bai.manager.models.identity import UserRole
from bai.manager.protocols import StorageClient

__all__ = ["GqlContext", "Info", "context_of"]

T = TypeVar("T")

#: What graphql-core passes every resolver as ``info``.
Info: TypeAlias = "GraphQLResolveInfo[Any]"


@dataclass
class GqlContext:
    """One GraphQL request's caller and services (``info.context`` of every resolver)."""

    auth: AuthContext
    db: Database
    hide_agents: bool
    #: Per-request memo for look-ups several resolvers share (e.g. image registries).
    memo: dict[Any, Any] = field(default_factory=dict)
    #: The storage proxies' client (folder usage), when the manager has one.
    storage: StorageClient | None = None

    # ------------------------------------------------------------------ database

    def read(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``await fn(conn)`` in one read-only transaction in the Trio thread."""
        return trio.from_thread.run(functools.partial(self.db.transaction, fn, readonly=True))

    def write(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``await fn(conn)`` in one read-write transaction in the Trio thread
        (retried on conflicts, so *fn* must have no other effects)."""
        return trio.from_thread.run(self.db.transaction, fn)

    def read_rows(self, query: sa.Select[Any]) -> list[Any]:
        """The rows *query* selects, read in one read-only transaction."""

        async def fetch(conn: Connection) -> list[Any]:
            return list(await conn.execute(query))

        return self.read(fetch)

    # ------------------------------------------------------------------- roles

    @property
    def is_superadmin(self) -> bool:
        return self.auth.is_superadmin

    @property
    def is_admin(self) -> bool:
        """Domain admin or superadmin."""
        return self.auth.is_admin

    @property
    def shows_agents(self) -> bool:
        """Whether agent ids and addresses may be shown to the caller."""
        return self.is_superadmin or not self.hide_agents

    def require_superadmin(self, what: str) -> None:
        if not self.is_superadmin:
            raise Forbidden(f"{what} needs superadmin privileges")

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{what} needs admin privileges")

    def domain_scope(self, requested: str | None) -> str | None:
        """The domain to restrict a query to (``None``: all, superadmins only)."""
        if self.is_superadmin:
            return requested
        if requested is not None and requested != self.auth.domain_name:
            raise Forbidden(f"you may not query the domain {requested!r}")
        return self.auth.domain_name

    def own_only(self, requested: str | None, mine: str, what: str) -> str | None:
        """For users, *requested* must be *mine* (or absent, which means *mine*);
        admins get *requested* back unchanged."""
        if self.is_admin:
            return requested
        if requested is not None and requested != mine:
            raise Forbidden(f"you may only query your own {what}")
        return mine

    def may_manage_user(self, domain_name: str, role: UserRole | str) -> bool:
        """Whether the caller may change things owned by a user of *domain_name* with *role*:
        superadmins anyone, domain admins the non-superadmins of their domain."""
        if self.is_superadmin:
            return True
        return (
            self.is_admin
            and domain_name == self.auth.domain_name
            and UserRole(role) is not UserRole.SUPERADMIN
        )


def context_of(info: Info) -> GqlContext:
    """The :class:`GqlContext` of the request a resolver runs for."""
    return cast(GqlContext, info.context)
