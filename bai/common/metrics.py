"""Prometheus metrics of bai's daemons: the text exposition and its ``GET /metrics`` app.

Each daemon keeps its own :class:`~prometheus_client.CollectorRegistry`
(never the process-global one: ``bai up`` runs the manager, an agent and
the proxies in one process, and their metrics must not mix), holding its
counters, and computes its gauges when scraped: a scrape reads the state as
it is, so nothing updates gauges in the background.

:func:`exposition` joins registries into one text page; :func:`snapshot`
makes a registry of families computed for one scrape; :class:`MetricsApp`
serves a page at ``GET /metrics`` as a plain ASGI app (the agent's
listener); the manager and the storage proxy answer the same route from
their own API apps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from bai.common.asgi import Receive, Scope, Send, serve_lifespan

__all__ = ["CONTENT_TYPE", "MetricsApp", "exposition", "snapshot"]

#: The ``Content-Type`` of the text exposition format: 0.0.4, which every Prometheus
#: reads (bai's metric names need none of 1.0.0's quoting).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _Fixed(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def snapshot(families: Iterable[Metric]) -> CollectorRegistry:
    """A registry that reports *families* (computed for one scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families)))
    return registry


def exposition(*registries: CollectorRegistry) -> bytes:
    """The text page of every metric of *registries* (their names must not repeat)."""
    return b"".join(generate_latest(registry) for registry in registries)


class MetricsApp:
    """``GET /metrics`` answered with *page()*; 404 for any other path, 405 for other methods."""

    def __init__(self, page: Callable[[], Awaitable[bytes]]) -> None:
        self._page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await _answer(send, 404, b"not found\n", b"text/plain")
        elif scope["method"] != "GET":
            await _answer(send, 405, b"method not allowed\n", b"text/plain")
        else:
            await _answer(send, 200, await self._page(), CONTENT_TYPE)


async def _answer(send: Send, status: int, body: bytes, content_type: str | bytes) -> None:
    kind = content_type.encode() if isinstance(content_type, str) else content_type
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
