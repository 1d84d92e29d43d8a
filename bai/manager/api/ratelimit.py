"""Rate limiting over a rolling window, in memory or in Redis, behind one interface.

The spec's rule: a key (an access key, or the client's IP address for calls
without credentials) may make at most ``limit`` requests in the last
:data:`WINDOW` seconds, at any moment.  Each :meth:`RateLimiter.hit` asks to
admit one request now and answers with a :class:`RateDecision`.

Guarantees, the same for both implementations:

* In any span of ``window`` seconds, at most ``limit`` requests of one key
  are admitted (the window rolls; there are no fixed buckets to game).
* A refused request is not recorded, so a client that keeps knocking is let
  in again as soon as its oldest admitted request ages out, and memory per
  key is bounded by the limit.
* A limit of 0 refuses everything.

:class:`MemoryRateLimiter` keeps the admitted times of each key in a deque
(the embedded mode, one process).  :class:`RedisRateLimiter` keeps them in a
sorted set per key and decides in one Lua script, timed by the Redis server
clock, so every manager process sharing the Redis shares the limits; each
call has a deadline, and a failure raises :class:`RateLimiterUnavailable`.
"""

from __future__ import annotations

import abc
import logging
import math
import time
import uuid
from collections import deque
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
    "WINDOW",
    "MemoryRateLimiter",
    "RateDecision",
    "RateLimiter",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "open_rate_limiter",
]

log = logging.getLogger(__name__)

#: The spec's rolling window: 15 minutes.
WINDOW: Final = 900.0
#: Keys the memory limiter holds before it sweeps out those idle for a whole window.
_SWEEP_EVERY: Final = 4096


class RateLimiterUnavailable(BaiError):
    """The rate limiter's store did not answer (in time)."""


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer to one :meth:`RateLimiter.hit`.

    ``remaining`` is how many more requests the window admits now;
    ``retry_after`` is, for a refused request, the seconds until one more
    would be admitted (0 when admitted).
    """

    allowed: bool
    limit: int
    remaining: int
    window: float
    retry_after: float = 0.0

    def headers(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers (and ``Retry-After`` when refused)."""
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Window": str(int(self.window)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class RateLimiter(abc.ABC):
    """Admits requests per key over a rolling window (see the module docs).

    Use it as an async context manager; :meth:`hit` works only inside.
    """

    def __init__(self, *, window: float = WINDOW) -> None:
        if not window > 0:
            raise InvalidValue("the window must be positive", value=window, field="window")
        self.window = window

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
    async def hit(self, key: str, limit: int) -> RateDecision:
        """Admit one request of *key* now if fewer than *limit* were admitted in the window."""


class MemoryRateLimiter(RateLimiter):
    """A rate limiter for one process.  *clock* returns seconds (monotonic)."""

    def __init__(
        self, *, window: float = WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(window=window)
        self._clock = clock
        self._admitted: dict[str, deque[float]] = {}
        self._calls = 0

    def __len__(self) -> int:
        """How many keys are tracked now."""
        return len(self._admitted)

    async def hit(self, key: str, limit: int) -> RateDecision:
        # A cancellation point without a trip through the scheduler: this runs per request.
        await trio.lowlevel.checkpoint_if_cancelled()
        now = self._clock()
        horizon = now - self.window
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(horizon)
        admitted = self._admitted.get(key)
        if admitted is None:
            admitted = self._admitted[key] = deque()
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) >= limit:
            wait = admitted[0] - horizon if admitted else self.window
            return RateDecision(False, limit, 0, self.window, wait)
        admitted.append(now)
        return RateDecision(True, limit, limit - len(admitted), self.window)

    def _sweep(self, horizon: float) -> None:
        stale = [key for key, times in self._admitted.items() if not times or times[-1] <= horizon]
        for key in stale:
            del self._admitted[key]


# KEYS[1]: the key's sorted set of admitted requests, scored by milliseconds.
# ARGV: window in ms, limit, a member unique to this request.
# Returns {admitted (1/0), count in the window, ms until a slot frees}.
_HIT: Final = Script[bytes](
    script="""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, count + 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if oldest[2] then wait = tonumber(oldest[2]) + window - now end
return {0, count, wait}
"""
)


class RedisRateLimiter(RateLimiter):
    """A rate limiter shared by every process using the same Redis and *prefix*.

    *url* is ``redis://[:password@]host:port/db``; every Redis call must
    finish within *op_timeout* seconds.  Entering it connects and checks
    that Redis answers ``PING``; failures raise :class:`RateLimiterUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bai:ratelimit:",
        window: float = WINDOW,
        op_timeout: float = 2.0,
    ) -> None:
        super().__init__(window=window)
        if not op_timeout > 0:
            raise InvalidValue("must be positive", value=op_timeout, field="op_timeout")
        self._url = url
        self._prefix = prefix
        self._op_timeout = op_timeout
        self._client: coredis.Redis[bytes] | None = None
        self._stack: AsyncExitStack | None = None
        self._window_ms = max(1, round(window * 1000))

    async def __aenter__(self) -> Self:
        self._stack, self._client = await open_checked_redis(
            self._url, self._op_timeout, RateLimiterUnavailable
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

    async def hit(self, key: str, limit: int) -> RateDecision:
        client = self._client
        if client is None:
            raise RateLimiterUnavailable("the Redis rate limiter is not open")
        if limit <= 0:
            await trio.lowlevel.checkpoint()
            return RateDecision(False, limit, 0, self.window, self.window)
        reply: Any
        try:
            with trio.fail_after(self._op_timeout):
                reply = await _HIT(
                    keys=[self._prefix + key],
                    args=[self._window_ms, limit, uuid.uuid4().hex],
                    client=client,
                )
        except trio.TooSlowError:
            raise RateLimiterUnavailable(
                f"Redis did not answer within {self._op_timeout:g} s"
            ) from None
        except RedisError as exc:
            raise RateLimiterUnavailable(f"Redis failed: {exc}") from exc
        allowed, count, wait_ms = (int(part) for part in reply)
        return RateDecision(
            bool(allowed),
            limit,
            max(0, limit - count) if allowed else 0,
            self.window,
            0.0 if allowed else max(0, wait_ms) / 1000,
        )


@asynccontextmanager
async def open_rate_limiter(config: RedisConfig) -> AsyncIterator[RateLimiter]:
    """The limiter a ``[redis]`` section asks for: Redis-backed when ``type = "redis"``,
    else in memory.  Raises :class:`RateLimiterUnavailable` if Redis is down."""
    limiter: RateLimiter
    if config.type == "redis":
        limiter = RedisRateLimiter(config.url, op_timeout=float(config.connect_timeout))
    else:
        limiter = MemoryRateLimiter()
    async with limiter:
        yield limiter
