"""Opening a coredis client under Trio for a service that needs Redis to answer at once.

:func:`open_checked_redis` enters the client (which runs a task group from
entry to exit, so nothing but an exit stack may sit between the two, or
cancel scopes would cross) and sends a ``PING`` within *timeout* seconds.
On success it returns the client and the stack that closes it; on failure
the client is closed again and *unavailable* is raised naming the cause, so
the caller's own "store unavailable" error reaches its callers.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import coredis
import trio
from coredis.exceptions import RedisError

__all__ = ["open_checked_redis"]


async def open_checked_redis(
    url: str,
    timeout: float,  # noqa: ASYNC109 - the PING's bound is the contract
    unavailable: type[Exception],
) -> tuple[AsyncExitStack, coredis.Redis[Any]]:
    """A connected client of *url* and the stack that closes it (module docs)."""
    client: coredis.Redis[Any] = coredis.Redis.from_url(url, connect_timeout=timeout)
    stack = AsyncExitStack()
    await stack.enter_async_context(client)
    try:
        with trio.fail_after(timeout):
            await client.ping()
    except (trio.TooSlowError, RedisError, OSError) as exc:
        await stack.aclose()
        raise unavailable(f"Redis did not answer PING: {exc!r}") from exc
    except BaseException:
        await stack.aclose()
        raise
    return stack, client
