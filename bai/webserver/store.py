"""Where the webserver keeps login sessions and login histories: in memory or in Redis.

A :class:`SessionStore` maps a session id (the ``AIOHTTP_SESSION`` cookie's
value) to its data, and a user name to its :class:`LoginHistory`.  Both
implementations use the original console server's keys and JSON shapes, so
a Redis database can be read by either:

* ``AIOHTTP_SESSION_<id>`` → ``{"created": <unix time>, "session": {...}}``,
  expiring ``max-age`` after it was written;
* ``login_history_<user name>`` → ``{"last_login_attempt": <unix time>,
  "login_fail_count": <n>}``, expiring ``login-block-time`` after it was written
  (the original keeps it forever; nothing reads it once that time has passed).

Guarantees: a session read after its expiry is absent (also in memory, where
expired entries are dropped on every write); :class:`RedisSessionStore`
bounds every operation by ``connect-timeout`` and turns every Redis failure into
:class:`StoreUnavailable` (the app answers 503 and changes nothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

import coredis
import trio
from coredis.exceptions import RedisError

from bai.common.config.schema import RedisConfig
from bai.common.errors import BaiError
from bai.common.redis_client import open_checked_redis

__all__ = [
    "SESSION_KEY_PREFIX",
    "LoginHistory",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionStore",
    "StoreUnavailable",
    "open_session_store",
]

#: Prefix of a session's key (the original's cookie name and ``_``).
SESSION_KEY_PREFIX: Final = "AIOHTTP_SESSION_"
_HISTORY_PREFIX: Final = "login_history_"


class StoreUnavailable(BaiError):
    """The session store could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class LoginHistory:
    """A user name's consecutive failed logins and the time of its last attempt."""

    last_login_attempt: float = 0.0
    login_fail_count: int = 0


class SessionStore(Protocol):
    """Sessions by id and login histories by user name."""

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The stored ``{"created", "session"}`` of *session_id*, or ``None``."""
        ...

    async def save(self, session_id: str, data: dict[str, Any], ttl: float) -> None:
        """Store *data* under *session_id* for *ttl* seconds."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget *session_id* (nothing happens if it is unknown)."""
        ...

    async def history(self, username: str) -> LoginHistory:
        """*username*'s login history (a fresh one if none is stored)."""
        ...

    async def set_history(self, username: str, history: LoginHistory, ttl: float) -> None:
        """Store *username*'s login history for *ttl* seconds."""
        ...

    async def flush(self) -> None:
        """Forget every session and login history."""
        ...


def _history_of(raw: bytes | str | None) -> LoginHistory:
    if raw is None:
        return LoginHistory()
    try:
        found = json.loads(raw)
        return LoginHistory(
            max(0.0, float(found["last_login_attempt"])),
            max(0, int(found["login_fail_count"])),
        )
    except (ValueError, TypeError, KeyError):
        return LoginHistory()


def _history_json(history: LoginHistory) -> str:
    return json.dumps(
        {
            "last_login_attempt": history.last_login_attempt,
            "login_fail_count": history.login_fail_count,
        }
    )


class MemorySessionStore:
    """The store of ``bai up`` (``[redis] type = "inproc"``): a dict with expiry times."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, str]] = {}

    def _get(self, key: str) -> str | None:
        found = self._entries.get(key)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]

    def _put(self, key: str, value: str, ttl: float) -> None:
        now = time.monotonic()
        # Dropping what expired on every write bounds the dict by the live entries.
        for stale in [k for k, (until, _) in self._entries.items() if until <= now]:
            del self._entries[stale]
        self._entries[key] = (now + ttl, value)

    async def load(self, session_id: str) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        raw = self._get(SESSION_KEY_PREFIX + session_id)
        return None if raw is None else _decode_session(raw)

    async def save(self, session_id: str, data: dict[str, Any], ttl: float) -> None:
        await trio.lowlevel.checkpoint()
        self._put(SESSION_KEY_PREFIX + session_id, json.dumps(data), ttl)

    async def delete(self, session_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._entries.pop(SESSION_KEY_PREFIX + session_id, None)

    async def history(self, username: str) -> LoginHistory:
        await trio.lowlevel.checkpoint()
        return _history_of(self._get(_HISTORY_PREFIX + username))

    async def set_history(self, username: str, history: LoginHistory, ttl: float) -> None:
        await trio.lowlevel.checkpoint()
        self._put(_HISTORY_PREFIX + username, _history_json(history), ttl)

    async def flush(self) -> None:
        await trio.lowlevel.checkpoint()
        self._entries.clear()


def _decode_session(raw: bytes | str) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class RedisSessionStore:
    """The store of the distributed mode: every webserver of a cluster shares it.

    Use it as an async context manager (it holds the connection pool).
    """

    def __init__(self, url: str, *, op_timeout: float) -> None:
        self._url = url
        self._op_timeout = op_timeout
        self._client: coredis.Redis[bytes] | None = None
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> RedisSessionStore:
        self._stack, self._client = await open_checked_redis(
            self._url, self._op_timeout, StoreUnavailable
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.__aexit__(*exc_info)  # type: ignore[arg-type]

    @asynccontextmanager
    async def _redis(self) -> AsyncIterator[coredis.Redis[bytes]]:
        if self._client is None:
            raise StoreUnavailable("the Redis session store is not open")
        try:
            with trio.fail_after(self._op_timeout):
                yield self._client
        except trio.TooSlowError:
            raise StoreUnavailable(f"Redis did not answer within {self._op_timeout:g} s") from None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis failed: {exc}") from exc

    async def load(self, session_id: str) -> dict[str, Any] | None:
        async with self._redis() as client:
            raw = await client.get(SESSION_KEY_PREFIX + session_id)
        return None if raw is None else _decode_session(raw)

    async def save(self, session_id: str, data: dict[str, Any], ttl: float) -> None:
        async with self._redis() as client:
            await client.set(
                SESSION_KEY_PREFIX + session_id, json.dumps(data), ex=max(1, round(ttl))
            )

    async def delete(self, session_id: str) -> None:
        async with self._redis() as client:
            await client.delete([SESSION_KEY_PREFIX + session_id])

    async def history(self, username: str) -> LoginHistory:
        async with self._redis() as client:
            raw = await client.get(_HISTORY_PREFIX + username)
        return _history_of(raw)

    async def set_history(self, username: str, history: LoginHistory, ttl: float) -> None:
        async with self._redis() as client:
            await client.set(
                _HISTORY_PREFIX + username, _history_json(history), ex=max(1, round(ttl))
            )

    async def flush(self) -> None:
        async with self._redis() as client:
            for pattern in (SESSION_KEY_PREFIX + "*", _HISTORY_PREFIX + "*"):
                keys = [key async for key in client.scan_iter(match=pattern)]
                if keys:
                    await client.delete(keys)


@asynccontextmanager
async def open_session_store(config: RedisConfig) -> AsyncIterator[SessionStore]:
    """The store a ``[redis]`` section names: Redis when ``type = "redis"``, else memory.

    Raises :class:`StoreUnavailable` when Redis does not answer.
    """
    if config.type == "redis":
        async with RedisSessionStore(config.url, op_timeout=float(config.connect_timeout)) as store:
            yield store
    else:
        yield MemorySessionStore()
