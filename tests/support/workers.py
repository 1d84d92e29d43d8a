"""Which pytest-xdist worker runs this process, for what one worker must not share with another.

Under ``pytest -n N`` (``nox -s tests`` on CI) each worker is a process of its
own with ``PYTEST_XDIST_WORKER`` set to ``gw0``, ``gw1``...; a plain
``pytest`` run has no such variable and counts as worker 0.  What the
harnesses key on the worker: the agents' host port ranges
(:func:`support.net.agent_port_range`) and each worker's ``TMPDIR`` and
``XDG_CONFIG_HOME`` (``tests/conftest.py``).  PostgreSQL databases, Redis key
prefixes and Redis databases, scratch folders, cgroups and network namespaces
are unique per process or per test already (see ``tests/integration/conftest.py``
and :mod:`support.registry`, :mod:`support.distributed`).
"""

from __future__ import annotations

import os

__all__ = ["worker_name", "worker_number"]


def worker_name() -> str:
    """``gw0``, ``gw1``... in an xdist worker; empty in a plain run."""
    return os.environ.get("PYTEST_XDIST_WORKER", "")


def worker_number() -> int:
    """0, 1... for ``gw0``, ``gw1``...; 0 in a plain run."""
    name = worker_name()
    return int(name.removeprefix("gw")) if name.startswith("gw") else 0
