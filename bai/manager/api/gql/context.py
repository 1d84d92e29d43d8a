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

Nested fields read in batches (:meth:`GqlContext.batch`): the items of a
list carry their siblings (:func:`with_siblings`), and the first item whose
nested field resolves loads that field for all of them in one query, so a
page of N objects costs a bounded number of queries, not N.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, cast

import sqlalchemy as sa
import trio
from graphql import GraphQLResolveInfo

from bai.manager.api.auth import AuthContext
from bai.manager.api.errors import Forbidden
from bai.manager.db import Connection, Database
from bai.manager.idle import IdleChecker
from bai.manager.livestats import LiveStats
from bai.manager.models.identity import UserRole
from bai.manager.protocols import StorageClient

__all__ = ["GqlContext", "Info", "context_of", "with_siblings"]

T = TypeVar("T")
Item: TypeAlias = dict[str, Any]
#: Loads a nested field for many parents at once: their keys in, values by key out.
BatchLoader: TypeAlias = Callable[[list[Any]], Mapping[Any, T]]

_SIBLINGS = "_siblings"


def with_siblings(items: list[Item]) -> list[Item]:
    """Marks *items* as one batch for :meth:`GqlContext.batch`; returns them."""
    for item in items:
        item[_SIBLINGS] = items
    return items


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
    #: The running kernels' newest samples, when the manager follows them.
    live_stats: LiveStats | None = None
    #: The idle checker, for ``idle_checks``, when the manager runs one.
    idle: IdleChecker | None = None

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

    def live_samples(self, kernel_ids: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
        """The live samples of those of *kernel_ids* that have one, by kernel id text."""
        if self.live_stats is None or not kernel_ids:
            return {}
        return trio.from_thread.run_sync(self.live_stats.kernels, kernel_ids)

    def idle_reports(self, session_ids: list[Any]) -> dict[Any, dict[str, Any]]:
        """``idle_checks`` of those of *session_ids* that run, by session id."""
        if self.idle is None or not session_ids:
            return {}
        return trio.from_thread.run(self.idle.reports, session_ids)

    def batch(
        self,
        field: Hashable,
        item: Mapping[str, Any],
        key: str,
        load: BatchLoader[T],
        default: T,
    ) -> T:
        """The value of the nested *field* (a name, with its arguments) for ``item[key]``:
        *load* finds it for the keys of all of *item*'s siblings not loaded yet, in one
        go (*default* for keys it leaves out)."""
        loaded: dict[Any, Any] = self.memo.setdefault(("batch", field), {})
        wanted = item[key]
        if wanted not in loaded:
            siblings = item.get(_SIBLINGS) or (item,)
            keys = list(dict.fromkeys(s[key] for s in siblings if s[key] not in loaded))
            if wanted not in keys:
                keys.append(wanted)
            found = load(keys)
            for k in keys:
                loaded[k] = found.get(k, default)
        value: T = loaded[wanted]
        return value

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
