"""Latency and throughput of the session REST API on ``bai up`` (SQLite, one local agent).

Prints ONE JSON line:

* ``create_running_ms``: p50/p99 of ``POST /session`` with ``enqueueOnly``
  false, i.e. from the request to the answer that the session is RUNNING
  (one local python kernel, 1 CPU, sessions created one after another);
* ``destroy_ms``: p50/p99 of ``DELETE /session/:id`` of those sessions;
* ``execute_ms``: p50/p99 of one ``print(1)`` query-mode ``POST
  /session/:id`` round trip (answer ``finished``), one after another;
* ``get_session_rps``: authenticated ``GET /session/:id`` answers per second
  with 32 concurrent keep-alive connections, sent by a separate process
  (requests signed once, raw HTTP/1.1), over ``--seconds`` seconds.

Goals on the reference machine: create p50 <= 300 ms, execute p50 <= 3 ms,
>= 1,500 requests/s.  Usage: ``python bench/api.py [--quick]``; runs in well
under 60 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import sqlalchemy as sa
import trio

from bai.common.auth import sign_request
from bai.common.daemon import tune_collector
from bai.common.slots import BinarySize
from bai.embedded import EmbeddedHandle, EmbeddedService, embedded_configs
from bai.manager.models import keypairs

API_VERSION = "v6.20220615"
CONNECTIONS = 32


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 2), "p99": round(p99, 2), "n": len(ordered)}


class Client:
    """Signed JSON requests to the manager with one keypair."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str, access: str, secret: str) -> None:
        self.http = http
        self.endpoint = endpoint
        self.host = urlsplit(endpoint).netloc
        self.access = access
        self.secret = secret

    def headers(self, method: str, target: str) -> dict[str, str]:
        return sign_request(
            method=method,
            path=target,
            host=self.host,
            api_version=API_VERSION,
            access_key=self.access,
            secret_key=self.secret,
        )

    async def call(self, method: str, target: str, body: Any = None) -> Any:
        content = b"" if body is None else json.dumps(body).encode()
        response = await self.http.request(
            method,
            self.endpoint + target,
            content=content,
            headers=self.headers(method, target),
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {target}: {response.status_code} {response.text}")
        return response.json() if response.content else None


async def _create_and_destroy(client: Client, rounds: int) -> tuple[list[float], list[float]]:
    created, destroyed = [], []
    body = {"image": "python", "config": {"resources": {"cpu": "1", "mem": "256m"}}}
    for _ in range(rounds):
        start = time.perf_counter()
        answer = await client.call("POST", "/session", body)
        created.append((time.perf_counter() - start) * 1000)
        if answer["status"] != "RUNNING":
            raise RuntimeError(f"the session did not start: {answer}")
        start = time.perf_counter()
        await client.call("DELETE", f"/session/{answer['sessionId']}")
        destroyed.append((time.perf_counter() - start) * 1000)
    return created, destroyed


async def _execute(client: Client, session_id: str, rounds: int) -> list[float]:
    samples = []
    body = {"mode": "query", "code": "print(1)"}
    for index in range(rounds + 20):
        start = time.perf_counter()
        answer = await client.call("POST", f"/session/{session_id}", body)
        elapsed = (time.perf_counter() - start) * 1000
        result = answer["result"]
        if result["status"] != "finished" or result["console"] != [["stdout", "1\n"]]:
            raise RuntimeError(f"unexpected execute answer: {answer}")
        if index >= 20:  # the first runs warm the interpreter and the connection
            samples.append(elapsed)
    return samples


# ------------------------------------------------------------- load worker


async def _response(stream: trio.SocketStream, buffer: bytes) -> tuple[int, bool, bytes]:
    """Read one response: its status, whether the server closes after it, and what follows."""
    while True:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].lower()
            length = 0
            start = head.find(b"\r\ncontent-length:")
            if start >= 0:
                end = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : end if end >= 0 else len(head)])
            if len(buffer) >= head_end + 4 + length:
                closes = b"\r\nconnection: close" in head
                return int(head[9:12]), closes, buffer[head_end + 4 + length :]
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buffer += chunk


async def _load_connection(
    host: str, port: int, request: bytes, deadline: float, counts: list[int]
) -> None:
    # Hypercorn closes a keep-alive connection after 1,000 requests: open the next one.
    while trio.current_time() < deadline:
        stream = await trio.open_tcp_stream(host, port)
        buffer = b""
        async with stream:
            while trio.current_time() < deadline:
                await stream.send_all(request)
                status, closes, buffer = await _response(stream, buffer)
                if status != 200:
                    raise RuntimeError(f"GET answered {status}")
                counts[0] += 1
                if closes:
                    break


async def _load(endpoint: str, target: str, headers: dict[str, str], seconds: float) -> float:
    parts = urlsplit(endpoint)
    host, port = parts.hostname, parts.port
    if host is None or port is None:
        raise ValueError(f"the endpoint {endpoint} names no host and port")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    counts = [0]
    warm_deadline = trio.current_time() + 0.5
    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTIONS):
            nursery.start_soon(_load_connection, host, port, request, warm_deadline, [0])
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(CONNECTIONS):
            nursery.start_soon(_load_connection, host, port, request, start + seconds, counts)
    return counts[0] / (trio.current_time() - start)


def _load_worker(spec: str) -> None:
    args = json.loads(spec)
    rps = trio.run(_load, args["endpoint"], args["target"], args["headers"], args["seconds"])
    print(json.dumps({"rps": rps}))


# ------------------------------------------------------------------- main


async def _bench(data: Path, rounds: int, executes: int, seconds: float) -> dict[str, Any]:
    manager, agent = embedded_configs(data, port=0)
    agent = msgspec.structs.replace(
        agent,
        agent=msgspec.structs.replace(agent.agent, allow_compute_plugins=()),
        resource=msgspec.structs.replace(
            agent.resource, reserved_cpu=0, reserved_mem=BinarySize(512 * 1024**2)
        ),
    )
    service = EmbeddedService(data, manager_config=manager, agent_config=agent)
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(service.serve)
        admin = handle.keypairs[0]
        async with handle.manager.ctx.db.begin() as conn:
            await conn.execute(sa.update(keypairs).values(rate_limit=10**9))
        async with httpx.AsyncClient(timeout=60) as http:
            client = Client(http, handle.endpoint, admin.access_key, admin.secret_key)
            created, destroyed = await _create_and_destroy(client, rounds)
            session = await client.call(
                "POST",
                "/session",
                {"image": "python", "config": {"resources": {"cpu": "1", "mem": "256m"}}},
            )
            session_id = session["sessionId"]
            executed = await _execute(client, session_id, executes)
            target = f"/session/{session_id}"
            spec = json.dumps(
                {
                    "endpoint": handle.endpoint,
                    "target": target,
                    "headers": client.headers("GET", target),
                    "seconds": seconds,
                }
            )
            done = await trio.run_process(
                [sys.executable, __file__, "--load-worker", spec],
                capture_stdout=True,
                check=True,
            )
            rps = json.loads(done.stdout)["rps"]
            await client.call("DELETE", target)
        nursery.cancel_scope.cancel()
    return {
        "create_running_ms": _percentiles(created),
        "destroy_ms": _percentiles(destroyed),
        "execute_ms": _percentiles(executed),
        "get_session_rps": round(rps),
        "get_session_connections": CONNECTIONS,
        "database": "sqlite",
        "goals": {"create_p50_ms": 300, "execute_p50_ms": 3, "get_session_rps": 1500},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the GET load")
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        _load_worker(args.load_worker)
        return
    rounds, executes = (5, 50) if args.quick else (30, 500)
    seconds = 1.0 if args.quick else args.seconds
    # The server side runs as `bai up` does.
    tune_collector()
    with tempfile.TemporaryDirectory(prefix="bai-bench-api-") as folder:
        figures = trio.run(_bench, Path(folder), rounds, executes, seconds)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
