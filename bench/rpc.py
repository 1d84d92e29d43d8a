"""Round-trip latency of bai.common.rpc against pynng's own Trio path.

Prints ONE JSON line: p50/p99 in µs of a 16-byte echo ``call`` over ipc and
tcp (server in a separate process, as between manager and agent) and inproc
(same process, as in embedded mode), with the CPU µs each side spent per call
(steadier than wall time on a shared machine; for inproc both sides share one
process and the figure is their sum); the same echo through pynng's
``asend``/``arecv`` under Trio, measured in the same run and topology, as the
baseline; and the throughput of 64 concurrent callers sharing one client.

Usage: ``python bench/rpc.py [--n N]``.  Runs in well under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pynng
import trio

from bai.common.rpc import RPCClient, RPCServer

PAYLOAD = b"x" * 16
WARMUP = 200
CONCURRENT_CALLERS = 64
CONCURRENT_CALLS_EACH = 100


async def _echo(args: Any) -> Any:
    return args


async def _cpu_seconds(args: Any) -> float:
    return time.process_time()


HANDLERS = {"echo": _echo, "cpu": _cpu_seconds}


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    samples_ns.sort()
    return {
        "p50_us": round(samples_ns[len(samples_ns) // 2] / 1000, 1),
        "p99_us": round(samples_ns[int(len(samples_ns) * 0.99)] / 1000, 1),
    }


async def _time(n: int, once: Callable[[], Awaitable[object]]) -> dict[str, float]:
    for _ in range(WARMUP):
        await once()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await once()
        samples.append(time.perf_counter_ns() - start)
    return _percentiles(samples)


async def _bai_latency(url: str, n: int) -> dict[str, float]:
    """Latency percentiles, plus CPU µs per call spent by each side."""
    async with RPCClient(url, timeout=10) as client:
        server_before = await client.call("cpu")
        client_before = time.process_time()
        figures = await _time(n, lambda: client.call("echo", PAYLOAD))
        client_cpu = time.process_time() - client_before
        server_cpu = await client.call("cpu") - server_before
    calls = n + WARMUP
    figures["client_cpu_us"] = round(client_cpu / calls * 1e6, 1)
    figures["server_cpu_us"] = round(server_cpu / calls * 1e6, 1)
    return figures


async def _bai_throughput(url: str) -> float:
    async with RPCClient(url, timeout=10) as client:
        await client.call("echo", PAYLOAD)

        async def caller() -> None:
            for _ in range(CONCURRENT_CALLS_EACH):
                await client.call("echo", PAYLOAD)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENT_CALLERS):
                nursery.start_soon(caller)
        elapsed = time.perf_counter() - start
    return round(CONCURRENT_CALLERS * CONCURRENT_CALLS_EACH / elapsed)


async def _pynng_latency(url: str, n: int) -> dict[str, float]:
    with pynng.Req0(dial=url, block_on_dial=False) as req:

        async def once() -> None:
            await req.asend(PAYLOAD)
            await req.arecv()

        with trio.fail_after(10):
            return await _time(n, once)


async def _pynng_echo_server(rep: pynng.Rep0) -> None:
    while True:
        await rep.asend(await rep.arecv())


def _spawn(kind: str, url: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    bound = proc.stdout.readline().strip()
    if not bound:
        proc.kill()
        raise RuntimeError(f"{kind} echo server for {url} did not start")
    return proc, bound


async def _serve(kind: str, url: str) -> None:
    if kind == "bai":
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(RPCServer(url, HANDLERS).serve)
            print(urls[0], flush=True)
    else:
        with pynng.Rep0(listen=url) as rep:
            print(url, flush=True)
            await _pynng_echo_server(rep)


async def _inproc(n: int) -> tuple[dict[str, float], dict[str, float]]:
    async with trio.open_nursery() as nursery:
        await nursery.start(RPCServer("inproc://bench-rpc", HANDLERS).serve)
        ours = await _bai_latency("inproc://bench-rpc", n)
        # One process: both readings are the same clock, covering both sides.
        del ours["server_cpu_us"]
        ours["cpu_us"] = ours.pop("client_cpu_us")
        with pynng.Rep0(listen="inproc://bench-pynng") as rep:
            async with trio.open_nursery() as pynng_nursery:
                pynng_nursery.start_soon(_pynng_echo_server, rep)
                baseline = await _pynng_latency("inproc://bench-pynng", n)
                pynng_nursery.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return ours, baseline


async def _main(n: int) -> None:
    workdir = tempfile.mkdtemp(prefix="bai-rpc-", dir="/tmp")
    results: dict[str, Any] = {"bench": "rpc", "payload_bytes": len(PAYLOAD), "n": n}
    baseline: dict[str, Any] = {}
    servers = []
    try:
        for transport, url in (
            ("ipc", f"ipc://{workdir}/bai.sock"),
            ("tcp", "tcp://127.0.0.1:0"),
        ):
            proc, bound = _spawn("bai", url)
            servers.append(proc)
            results[transport] = await _bai_latency(bound, n)
            if transport == "ipc":
                results["ipc_64_callers_calls_per_s"] = await _bai_throughput(bound)
        for transport, url in (
            ("ipc", f"ipc://{workdir}/pynng.sock"),
            ("tcp", f"tcp://127.0.0.1:{_free_port()}"),
        ):
            proc, bound = _spawn("pynng", url)
            servers.append(proc)
            baseline[transport] = await _pynng_latency(bound, n)
        results["inproc"], baseline["inproc"] = await _inproc(n)
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    results["pynng_async_baseline"] = baseline
    results["speedup_p50"] = {
        transport: round(baseline[transport]["p50_us"] / results[transport]["p50_us"], 1)
        for transport in ("ipc", "tcp", "inproc")
    }
    results["server"] = "ipc/tcp: separate process; inproc: same process"
    print(json.dumps(results))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="timed calls per transport")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "URL"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        trio.run(_serve, *options.serve)
    else:
        trio.run(_main, options.n)


if __name__ == "__main__":
    main()
