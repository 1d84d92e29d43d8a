"""Find the session a request names, and name registry errors' fields as the request did.

:func:`find_session` resolves ``:id`` (a session name, a full UUID or an
unambiguous id prefix) among the sessions of the caller's keypair (or, for
admins, of ``owner_access_key``).  Terminated sessions are found too, so
that acting on one says that it is not running instead of that it does not
exist.  A RUNNING session's record may be up to :data:`SESSION_CACHE_TTL`
seconds old (see :class:`SessionCache`) unless the route asks for a fresh
one (destroy, restart, rename and status-history do).

:func:`translated_errors` renames the fields of the registry's
:class:`~bai.common.errors.InvalidValue` errors to the names the request used
(``resources.cpu`` -> ``config.resources.cpu``, ``dependencies[0]`` ->
``dependencies.0``).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Final

import trio
from quart import current_app

from bai.common.errors import InvalidValue
from bai.common.types import SessionStatus
from bai.manager.api.auth import AuthContext
from bai.manager.api.helpers import current_ctx
from bai.manager.sessions.model import SessionInfo

__all__ = [
    "SESSION_CACHE_TTL",
    "SessionCache",
    "find_session",
    "session_cache",
    "translated_errors",
]

#: Registry field names -> the names the request used (longest prefix first).
_FIELD_NAMES: Final = (
    ("resources", "config.resources"),
    ("environ", "config.environ"),
    ("mounts", "config.mounts"),
    ("scaling_group", "config.scalingGroup"),
    ("designated_agent", "config.agentList"),
    ("startup_command", "startupCommand"),
)
_INDEX_RE: Final = re.compile(r"\[(\d+)\]")
#: Seconds a RUNNING session's record is reused (:class:`SessionCache`).
SESSION_CACHE_TTL: Final = 1.0
_CACHE_KEY: Final = "bai.session_cache"


def _api_field(name: str | None) -> str | None:
    if name is None:
        return None
    name = _INDEX_RE.sub(r".\1", name)
    for registry_name, api_name in _FIELD_NAMES:
        if name == registry_name or name.startswith(registry_name + "."):
            return api_name + name[len(registry_name) :]
    return name


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Name the fields of registry errors as the request spelled them."""
    try:
        yield
    except InvalidValue as exc:
        renamed = _api_field(exc.field)
        if renamed == exc.field or type(exc).__init__ is not InvalidValue.__init__:
            raise
        raise type(exc)(exc.problem, value=exc.value, field=renamed) from None


class SessionCache:
    """RUNNING sessions recently read by their full id or exact name, reused for *ttl* seconds.

    The spec lets session information lag "a few seconds"; this keeps the hot
    routes (``GET /session/:id``, execute, files) off the database while a
    session runs.  Only RUNNING sessions are kept, so a session that starts
    is seen at once; one that stops is seen within *ttl* (its kernel calls
    fail with 409 meanwhile, as they would have).  This manager's own
    destroy, restart and rename routes :meth:`forget` the session at once.
    At most *max_entries* records, the oldest dropped first.
    """

    def __init__(self, ttl: float = SESSION_CACHE_TTL, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, SessionInfo]] = {}

    def get(self, owner: str, ref: str) -> SessionInfo | None:
        """The record of *ref* for *owner*, if one younger than ``ttl`` is kept."""
        found = self._entries.get((owner, ref))
        if found is None:
            return None
        if found[0] <= trio.current_time():
            del self._entries[(owner, ref)]
            return None
        return found[1]

    def put(self, owner: str, ref: str, info: SessionInfo) -> None:
        """Keep *info* under *ref* when it is RUNNING and *ref* is its id or name."""
        if info.status is not SessionStatus.RUNNING or ref not in (str(info.id), info.name):
            return
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[(owner, ref)] = (trio.current_time() + self.ttl, info)

    def forget(self, session_id: uuid.UUID) -> None:
        """Drop every record of the session."""
        stale = [key for key, (_, info) in self._entries.items() if info.id == session_id]
        for key in stale:
            del self._entries[key]


def session_cache() -> SessionCache:
    """The :class:`SessionCache` of the app serving the request."""
    cache = current_app.extensions.get(_CACHE_KEY)
    if not isinstance(cache, SessionCache):
        cache = current_app.extensions[_CACHE_KEY] = SessionCache()
    return cache


async def find_session(ref: str, auth: AuthContext, *, fresh: bool = False) -> SessionInfo:
    """The session *ref* names among the sessions of ``auth.owner`` (ended ones included).

    A RUNNING session may come from the :class:`SessionCache` unless *fresh*.
    """
    owner = auth.owner.access_key
    cache = session_cache()
    if not fresh:
        cached = cache.get(owner, ref)
        if cached is not None:
            return cached
    with translated_errors():
        info = await current_ctx().registry.get_session(
            ref, access_key=owner, include_terminated=True
        )
    cache.put(owner, ref, info)
    return info
