"""Terminal round trips and proxied HTTP, each beside the same thing with no bai in between.

Starts ``bai up`` as a separate process (a temporary data folder, the sample
image catalog ``configs/images.toml``), creates a
python session, and writes two files under the kernel's ``public/`` folder,
which the image's ``http`` app (``python -m http.server``) serves.  Then, in
one run:

* **terminal**: ``--keystrokes`` single keystrokes, each timed from the send
  to its echo.  The baseline types into a pseudo-terminal of this host
  (``os.forkpty`` running ``/bin/sh``, no bai in between); bai's path is the
  SDK's :func:`~bai.client.stream.stream_pty`: client WebSocket, manager,
  the kernel's ``ttyd`` service, its PTY, and back;
* **HTTP**: ``GET`` of ``--size`` MiB (``--rounds`` times) and of a 1-byte
  file (``--requests`` times), each on a new connection, three ways: direct
  to the service's host port, through ``httpproxy`` (one WebSocket per
  connection, :func:`~bai.client.stream.open_tcpproxy`), and through the app
  proxy (``start-service``, the token exchanged for a cookie, then plain
  HTTP to the proxy's port).

Prints ONE JSON line:

* ``pty_local_p50_ms`` / ``pty_local_p99_ms`` and ``pty_bai_p50_ms`` /
  ``pty_bai_p99_ms``: keystroke round trips;
* ``http_direct_mib_s``, ``http_httpproxy_mib_s``, ``http_appproxy_mib_s``:
  median download throughput; ``httpproxy_vs_direct`` and
  ``appproxy_vs_direct``: the medians of each round's ratio;
* ``latency_direct_ms``, ``latency_httpproxy_ms``, ``latency_appproxy_ms``:
  median time of a small request (connect, request, whole answer);
* ``size_mib``, ``rounds``, ``requests``, ``keystrokes``.

Goals (issue #11): both proxy ratios >= 0.5, ``pty_bai_p50_ms`` <= 2.
Usage: ``python bench/stream.py [--size MIB] [--rounds N] [--requests N]
[--keystrokes N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from bai.client import APIClient, ComputeSession
from bai.client.envfile import read_client_env
from bai.client.stream import open_tcpproxy, stream_pty

BAI = Path(sys.executable).with_name("bai")
#: The sample catalog: its python image declares the ``http`` app (``configs/service-defs``).
CATALOG = Path(__file__).resolve().parents[1] / "configs" / "images.toml"
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _local_pty_round_trips(count: int) -> list[float]:
    """Keystroke-to-echo times (seconds) in a pseudo-terminal of this host."""
    pid, master = os.forkpty()
    if pid == 0:
        os.execv("/bin/sh", ["/bin/sh"])
    try:
        time.sleep(0.3)
        os.read(master, 65536)  # the prompt
        times = []
        for _ in range(count):
            started = time.perf_counter()
            os.write(master, b"a")
            seen = b""
            while b"a" not in seen:
                select.select([master], [], [], 5)
                seen += os.read(master, 65536)
            times.append(time.perf_counter() - started)
        os.write(master, b"\x15exit\n")
        return times
    finally:
        os.close(master)
        os.waitpid(pid, 0)


async def _bai_pty_round_trips(session: ComputeSession, count: int) -> list[float]:
    times = []
    async with stream_pty(session) as pty:
        await pty.send_stdin(b"echo ready-$((6*7))\n")
        seen = b""
        while b"ready-42" not in seen:
            got = await pty.receive()
            seen += got if isinstance(got, bytes) else b""
        for _ in range(count):
            started = time.perf_counter()
            await pty.send_stdin(b"a")
            seen = b""
            while b"a" not in seen:
                got = await pty.receive()
                seen += got if isinstance(got, bytes) else b""
            times.append(time.perf_counter() - started)
        await pty.send_stdin(b"\x15exit\n")
    return times


def _request(path: str, cookie: str = "") -> bytes:
    extra = f"Cookie: {cookie}\r\n" if cookie else ""
    return f"GET {path} HTTP/1.0\r\nHost: app\r\n{extra}\r\n".encode()


async def _read_all(stream: trio.abc.Stream) -> int:
    """Bytes until the peer closes; checks the status line."""
    total = 0
    head = b""
    while chunk := await stream.receive_some(1024 * 1024):
        if len(head) < 12:
            head += chunk[:12]
        total += len(chunk)
    if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
        raise SystemExit(f"the app answered {head!r}")
    return total


def _direct(host: str, port: int) -> Callable[[str], Awaitable[int]]:
    async def get(path: str) -> int:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(_request(path))
            return await _read_all(stream)

    return get


def _via_httpproxy(session: ComputeSession) -> Callable[[str], Awaitable[int]]:
    async def get(path: str) -> int:
        async with open_tcpproxy(session, "http") as tunnel:
            await tunnel.send_all(_request(path))
            return await _read_all(tunnel)

    return get


def _via_appproxy(host: str, port: int, cookie: str) -> Callable[[str], Awaitable[int]]:
    async def get(path: str) -> int:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(_request(path, cookie))
            return await _read_all(stream)

    return get


async def _app_proxy_target(session: ComputeSession) -> tuple[str, int, str]:
    """The app proxy's host, port and cookie for the session's ``http`` app."""
    started = await session.start_service("http", login_session_token="bench")
    async with httpx.AsyncClient() as browser:
        added = await browser.get(
            f"{started['wsproxy_addr']}/v2/proxy/{started['token']}/{session.id}/add",
            params={"app": "http"},
        )
        added.raise_for_status()
        url = added.json()["url"]
        first = await browser.get(url)  # the token, exchanged for a cookie
        if first.status_code not in (200, 302, 303, 307):
            raise SystemExit(f"the app proxy answered {first.status_code}: {first.text}")
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port, cookie


async def _time(get: Callable[[str], Awaitable[int]], path: str) -> float:
    started = time.perf_counter()
    await get(path)
    return time.perf_counter() - started


async def _measure(args: argparse.Namespace, api: APIClient) -> dict[str, Any]:
    session = await ComputeSession.create(
        api, "python", name="bench-stream", resources={"cpu": 1, "mem": "512m"}
    )
    try:
        make = (
            "import os\nos.makedirs('public', exist_ok=True)\n"
            f"open('public/big.bin', 'wb').write(os.urandom({args.size * MIB}))\n"
            "open('public/small.txt', 'w').write('x')\n"
        )
        async for result in session.run(make):
            if result.is_final and result.exit_code:
                raise SystemExit(f"preparing the files failed: {result}")
        info = await session.info()
        http_port = next(p for p in info["servicePorts"] if p["name"] == "http")["host_ports"][0]
        via_proxy = _via_httpproxy(session)
        await via_proxy("/small.txt")  # starts the service
        ways = {
            "direct": _direct("127.0.0.1", http_port),
            "httpproxy": via_proxy,
            "appproxy": _via_appproxy(*(await _app_proxy_target(session))),
        }
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, get in ways.items():
                elapsed = await _time(get, "/big.bin")
                rates[name].append(args.size / elapsed)
        latency: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.requests):
            for name, get in ways.items():
                latency[name].append(await _time(get, "/small.txt"))
        local = await trio.to_thread.run_sync(_local_pty_round_trips, args.keystrokes)
        remote = await _bai_pty_round_trips(session, args.keystrokes)
    finally:
        await session.destroy(forced=True)
    ratio = {
        name: statistics.median(r / d for r, d in zip(rates[name], rates["direct"], strict=True))
        for name in ("httpproxy", "appproxy")
    }
    return {
        "pty_local_p50_ms": round(_percentile(local, 0.5) * 1000, 3),
        "pty_local_p99_ms": round(_percentile(local, 0.99) * 1000, 3),
        "pty_bai_p50_ms": round(_percentile(remote, 0.5) * 1000, 3),
        "pty_bai_p99_ms": round(_percentile(remote, 0.99) * 1000, 3),
        **{f"http_{name}_mib_s": round(statistics.median(v), 1) for name, v in rates.items()},
        "httpproxy_vs_direct": round(ratio["httpproxy"], 3),
        "appproxy_vs_direct": round(ratio["appproxy"], 3),
        **{
            f"latency_{name}_ms": round(statistics.median(v) * 1000, 3)
            for name, v in latency.items()
        },
        "size_mib": args.size,
        "rounds": args.rounds,
        "requests": args.requests,
        "keystrokes": args.keystrokes,
    }


async def _run(args: argparse.Namespace, data: Path, up: subprocess.Popen[bytes]) -> dict[str, Any]:
    with trio.fail_after(120):
        while not (data / "client.env").exists():
            if up.poll() is not None:
                raise SystemExit("bai up ended before it served")
            await trio.sleep(0.2)
    async with APIClient(read_client_env(data / "client.env")) as api:
        return await _measure(args, api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="MiB per download")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--keystrokes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bai-bench-stream-") as tmp:
        root = Path(tmp)
        with (root / "bai-up.log").open("wb") as log:
            up = subprocess.Popen(
                [
                    str(BAI),
                    "up",
                    "--data-dir",
                    str(root / "data"),
                    "--port",
                    str(_free_port()),
                    "--image-catalog",
                    str(CATALOG),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            figures = trio.run(_run, args, root / "data", up)
        except BaseException:
            sys.stderr.write((root / "bai-up.log").read_text()[-4000:])
            raise
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(60)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
