"""Throughput of ResourceSlot's hot operations, pure Python against Cython.

Prints one JSON line:

    {"bench": "slots", "implementation_default": "cython", "slots_per_operand": [4, 6],
     "python": {"add_ops_per_s": ..., "sub_ops_per_s": ..., "fits_in_ops_per_s": ...,
                "compare_ops_per_s": ...},
     "cython": {...} or null, "speedup": {"add": ..., ...} or null}

Each implementation runs in its own interpreter (``BAI_NO_EXTENSIONS=1``
forces Python) on the same 100 agent-capacity (6 slots) and request (4 slots)
pairs, as a scheduler sees them: ``capacity + request``, ``capacity -
request``, ``request.fits_in(capacity)`` and ``capacity == request``.  Each
figure is the best of three timed runs of at least 0.2 s; the whole bench
takes about 12 s.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import timeit
from decimal import Decimal

from bai.common import slots
from bai.common.slots import ResourceSlot

PAIRS = 100
OPS = {
    "add_ops_per_s": "for capacity, request in pairs: capacity + request",
    "sub_ops_per_s": "for capacity, request in pairs: capacity - request",
    "fits_in_ops_per_s": "for capacity, request in pairs: request.fits_in(capacity)",
    "compare_ops_per_s": "for capacity, request in pairs: capacity == request",
}


def _pairs() -> list[tuple[ResourceSlot, ResourceSlot]]:
    rng = random.Random(20240601)
    pairs = []
    for _ in range(PAIRS):
        gpus = rng.choice([1, 2, 4, 8])
        capacity = ResourceSlot.parse(
            {
                "cpu": rng.choice([16, 32, 64, 128]),
                "mem": f"{rng.choice([64, 128, 256, 512])}g",
                "cuda.device": gpus,
                "cuda.shares": gpus,
                "cuda.mem": f"{gpus * 80}g",
                "tpu.device": 0,
            }
        )
        request = ResourceSlot.parse(
            {
                "cpu": rng.choice([1, 2, 4]),
                "mem": f"{rng.choice([1, 4, 16])}g",
                "cuda.shares": str(Decimal(rng.randint(1, 20)) / 10),
                "cuda.mem": f"{rng.choice([5, 10, 20])}g",
            }
        )
        pairs.append((capacity, request))
    return pairs


def _measure() -> dict[str, object]:
    pairs = _pairs()
    figures: dict[str, int] = {}
    for name, statement in OPS.items():
        timer = timeit.Timer(statement, globals={"pairs": pairs})
        number, _ = timer.autorange()
        best = min(timer.repeat(repeat=3, number=number))
        figures[name] = round(number * PAIRS / best)
    return {"implementation": slots.IMPLEMENTATION, "figures": figures}


def _run_worker(force_python: bool) -> tuple[str, dict[str, int]]:
    """Measure in a fresh interpreter; return its implementation and figures."""
    env = dict(os.environ)
    if force_python:
        env["BAI_NO_EXTENSIONS"] = "1"
    else:
        env.pop("BAI_NO_EXTENSIONS", None)
    done = subprocess.run(
        [sys.executable, __file__, "--worker"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(done.stdout)
    return str(result["implementation"]), {k: int(v) for k, v in result["figures"].items()}


def main() -> None:
    _, python = _run_worker(force_python=True)
    implementation, compiled = _run_worker(force_python=False)
    cython = compiled if implementation == "cython" else None
    speedup = None
    if cython is not None:
        speedup = {
            name.removesuffix("_ops_per_s"): round(cython[name] / python[name], 2) for name in OPS
        }
    print(
        json.dumps(
            {
                "bench": "slots",
                "implementation_default": slots.IMPLEMENTATION,
                "slots_per_operand": [4, 6],
                "python": python,
                "cython": cython,
                "speedup": speedup,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        print(json.dumps(_measure()))
    else:
        main()
