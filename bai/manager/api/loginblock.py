"""Blocking password logins after repeated failures, in memory or in Redis.

The rule (``[manager] login-allowed-fail-count`` and ``login-block-time``):
each failed password login of an account counts, and each failure keeps the
count alive for ``block_time`` seconds from that failure; once the count
reaches ``allowed`` the account's password logins are refused until the
count expires, with how long is left.  A successful login clears the count.
A refused (blocked) attempt is not checked and changes nothing, so hammering
a blocked account does not extend its block.

The login route keys an account by the user's id when the name it was given
names a user (so the email and the username count together), else by the
domain and the name as typed: unknown names are counted and blocked the
same way, and the answers do not tell which names exist.

:func:`blocked_for` and :func:`after_failure` are the pure arithmetic, used
by :class:`MemoryLoginBlocker` (``bai up``, one process);
:class:`RedisLoginBlocker` keeps the count in a Redis key with that expiry,
so every manager sharing the Redis shares the blocks.  Redis failures raise
:class:`LoginBlockerUnavailable`; the login route then serves without
blocking and logs a warning, as the rate limiter does.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import coredis
import trio
from coredis.commands.script import Script
from coredis.exceptions import RedisError

from bai.common.config import RedisConfig
from bai.common.errors import BaiError, InvalidValue
from bai.common.redis_client import open_checked_redis

__all__ = [
    "FailureCount",
    "LoginBlocker",
    "LoginBlockerUnavailable",
    "MemoryLoginBlocker",
    "RedisLoginBlocker",
    "after_failure",
    "blocked_for",
    "open_login_blocker",
]

#: Accounts the memory blocker holds before it sweeps out expired counts.
_SWEEP_AT: Final = 4096


# KEYS[1]: the account's failure count.  Returns {count, ms until it expires}.
_READ: Final = Script[bytes](
    script="""
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
return {count, redis.call('PTTL', KEYS[1])}
"""
)
# KEYS[1]: the account's failure count; ARGV[1]: the block time in ms.  Returns the count.
_FAIL: Final = Script[bytes](
    script="""
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return count
"""
)


class LoginBlockerUnavailable(BaiError):
    """The blocker's store (Redis) did not answer (in time)."""


@dataclass(frozen=True, slots=True)
class FailureCount:
    """Failed logins of one account, forgotten at ``expires_at`` (seconds, one clock)."""

    count: int
    expires_at: float


def blocked_for(record: FailureCount | None, now: float, allowed: int) -> float:
    """Seconds the account stays blocked at *now*: 0 when it may try to log in."""
    if record is None or record.expires_at <= now or record.count < allowed:
        return 0.0
    return record.expires_at - now


def after_failure(record: FailureCount | None, now: float, block_time: float) -> FailureCount:
    """The count after one more failure at *now* (an expired count starts again at 1)."""
    count = 1 if record is None or record.expires_at <= now else record.count + 1
    return FailureCount(count, now + block_time)


class LoginBlocker(abc.ABC):
    """Counts failed logins and says which accounts are blocked (module docs).

    Use it as an async context manager; the methods work only inside.
    """

    def __init__(self, *, block_time: float, allowed: int) -> None:
        if not block_time > 0:
            raise InvalidValue("must be positive", value=block_time, field="login_block_time")
        if allowed < 1:
            raise InvalidValue(
                "must be at least 1", value=allowed, field="login_allowed_fail_count"
            )
        self.block_time = block_time
        self.allowed = allowed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @abc.abstractmethod
    async def blocked_for(self, key: str) -> float:
        """Seconds *key* stays blocked; 0 when it may try."""

    @abc.abstractmethod
    async def fail(self, key: str) -> int:
        """Count one failed login of *key*; the count now."""

    @abc.abstractmethod
    async def clear(self, key: str) -> None:
        """Forget *key*'s failures (after a successful login)."""


class MemoryLoginBlocker(LoginBlocker):
    """Blocks in one process; *clock* returns seconds (monotonic)."""

    def __init__(
        self, *, block_time: float, allowed: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(block_time=block_time, allowed=allowed)
        self._clock = clock
        self._counts: dict[str, FailureCount] = {}

    async def blocked_for(self, key: str) -> float:
        await trio.lowlevel.checkpoint()
        return blocked_for(self._counts.get(key), self._clock(), self.allowed)

    async def fail(self, key: str) -> int:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        if len(self._counts) >= _SWEEP_AT:
            self._counts = {k: v for k, v in self._counts.items() if v.expires_at > now}
        record = self._counts[key] = after_failure(self._counts.get(key), now, self.block_time)
        return record.count

    async def clear(self, key: str) -> None:
        await trio.lowlevel.checkpoint()
        self._counts.pop(key, None)


class RedisLoginBlocker(LoginBlocker):
    """Blocks shared by every process using the same Redis and *prefix*.

    *url* is ``redis://[:password@]host:port/db``; each call must finish
    within *op_timeout* seconds.  Entering checks that Redis answers ``PING``.
    """

    def __init__(
        self,
        url: str,
        *,
        block_time: float,
        allowed: int,
        prefix: str = "bai:login-fail:",
        op_timeout: float = 2.0,
    ) -> None:
        super().__init__(block_time=block_time, allowed=allowed)
        self._url = url
        self._prefix = prefix
        self._op_timeout = op_timeout
        self._client: coredis.Redis[bytes] | None = None
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        self._stack, self._client = await open_checked_redis(
            self._url, self._op_timeout, LoginBlockerUnavailable
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    def _open(self) -> coredis.Redis[bytes]:
        if self._client is None:
            raise LoginBlockerUnavailable("the Redis login blocker is not open")
        return self._client

    async def blocked_for(self, key: str) -> float:
        client = self._open()
        try:
            with trio.fail_after(self._op_timeout):
                reply: Any = await _READ(keys=[self._prefix + key], client=client)
        except (trio.TooSlowError, RedisError, OSError) as exc:
            raise LoginBlockerUnavailable(f"Redis failed: {exc!r}") from exc
        count, ttl_ms = (int(part) for part in reply)
        # A negative PTTL: no such key (never failed, or expired).
        return max(0, ttl_ms) / 1000 if count >= self.allowed else 0.0

    async def fail(self, key: str) -> int:
        client = self._open()
        try:
            with trio.fail_after(self._op_timeout):
                count: Any = await _FAIL(
                    keys=[self._prefix + key],
                    args=[max(1, round(self.block_time * 1000))],
                    client=client,
                )
        except (trio.TooSlowError, RedisError, OSError) as exc:
            raise LoginBlockerUnavailable(f"Redis failed: {exc!r}") from exc
        return int(count)

    async def clear(self, key: str) -> None:
        client = self._open()
        try:
            with trio.fail_after(self._op_timeout):
                await client.delete([self._prefix + key])
        except (trio.TooSlowError, RedisError, OSError) as exc:
            raise LoginBlockerUnavailable(f"Redis failed: {exc!r}") from exc


@asynccontextmanager
async def open_login_blocker(
    config: RedisConfig, *, block_time: float, allowed: int
) -> AsyncIterator[LoginBlocker]:
    """The blocker a ``[redis]`` section asks for: in Redis when ``type = "redis"``,
    else in memory.  Raises :class:`LoginBlockerUnavailable` if Redis is down."""
    blocker: LoginBlocker
    if config.type == "redis":
        blocker = RedisLoginBlocker(
            config.url,
            block_time=block_time,
            allowed=allowed,
            op_timeout=float(config.connect_timeout),
        )
    else:
        blocker = MemoryLoginBlocker(block_time=block_time, allowed=allowed)
    async with blocker:
        yield blocker
