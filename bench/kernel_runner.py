"""Kernel runner start-up and round-trip times; prints ONE JSON line.

* ``ready_ms``: from spawning ``python -I -m bai.kernel`` to its answer to
  ``status`` (the client dials first, as the agent does), over several starts,
  with the runner's bytecode cached as in a deployed kernel (a private
  ``-X pycache_prefix``, warmed by one start); ``ready_ms_no_pyc``: the
  same without writing bytecode (``-B``), so bai's modules compile from source
  at each start unless the source tree has ``__pycache__`` directories;
* ``first_run_ms``: ``print(1)`` right after ready (the Python process may
  still be starting);
* ``roundtrip_ms``: ``print(1)`` from sending ``code`` to receiving
  ``finished``, on a warm kernel;
* ``flood_mb_per_s``: how fast the runner swallows a 50 MB print flood that
  it truncates (the run's wall time).

Usage: ``python bench/kernel_runner.py [--starts N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from bai.kernel.client import RunnerProcess


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _starts(
    workdir: str, count: int, env: dict[str, str], options: list[str]
) -> tuple[list[float], list[float]]:
    ready: list[float] = []
    first: list[float] = []
    for _ in range(count):
        runner = RunnerProcess(workdir, env=env, python_options=options)
        client = runner.client()
        try:
            started = time.perf_counter()
            runner.start()
            client.wait_ready(timeout=30)
            ready.append(time.perf_counter() - started)
            started = time.perf_counter()
            client.execute("print(1)")
            first.append(time.perf_counter() - started)
        finally:
            client.close()
            runner.stop()
    return ready, first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-kernel-", dir="/tmp")
    pycache = tempfile.mkdtemp(prefix="bench-pyc-", dir="/tmp")
    try:
        figures = _measure(workdir, pycache, args.starts, args.runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(pycache, ignore_errors=True)
    print(json.dumps(figures))


def _measure(workdir: str, pycache: str, starts: int, runs: int) -> dict[str, object]:
    # The runner runs isolated (-I) and takes interpreter options; the kernel's
    # Python takes the same setting from its environment.
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached["PYTHONPYCACHEPREFIX"] = pycache
    cached_options = ["-X", f"pycache_prefix={pycache}"]
    _starts(workdir, 1, cached, cached_options)  # writes the bytecode
    ready, first = _starts(workdir, starts, cached, cached_options)
    uncached = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    uncached["PYTHONDONTWRITEBYTECODE"] = "1"
    ready_no_pyc, _ = _starts(workdir, starts, uncached, ["-B"])
    runner = RunnerProcess(workdir)
    roundtrips: list[float] = []
    with runner, runner.client() as client:
        client.wait_ready(timeout=30)
        client.execute("print(1)")
        for _ in range(runs):
            started = time.perf_counter()
            step = client.execute("print(1)")
            roundtrips.append(time.perf_counter() - started)
            assert step.console == [["stdout", "1\n"]], step
        started = time.perf_counter()
        client.execute(
            "import sys\nfor _ in range(500): sys.stdout.write('x' * 100_000)", timeout=120
        )
        flood = time.perf_counter() - started
    return {
        "bench": "kernel_runner",
        "starts": starts,
        "ready_ms_median": _ms(statistics.median(ready)),
        "ready_ms_max": _ms(max(ready)),
        "ready_ms_no_pyc_median": _ms(statistics.median(ready_no_pyc)),
        "first_run_ms_median": _ms(statistics.median(first)),
        "runs": runs,
        "roundtrip_ms_median": _ms(statistics.median(roundtrips)),
        "roundtrip_ms_p90": _ms(statistics.quantiles(roundtrips, n=10)[-1]),
        "flood_mb_per_s": round(50 / flood, 1),
    }


if __name__ == "__main__":
    main()
