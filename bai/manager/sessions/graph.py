"""A session's dependency graph: the sessions it waits for, and theirs, as a tree.

``GET /session/{id}/dependency-graph`` answers the original's shape, which
the official client's ``session show-graph`` parses::

    {"session_id": "…", "session_name": "…", "status": "KernelStatus.RUNNING",
     "status_changed": "2026-12-08 12:00:00.123456+00:00", "depends_on": [ … ]}

``status`` and ``status_changed`` are the main kernel's, written as Python's
``str`` writes them (the client splits on ``KernelStatus.`` and parses the
time up to the dot).  A session reached twice (two sessions depending on
the same one) appears under each, with its own dependencies listed under
the first only, so the answer grows with the number of sessions and edges,
never exponentially.  The walk reads each level in one query and stops
after :data:`MAX_DEPTH` levels, so a graph costs at most that many round
trips however wide it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from bai.common.types import KernelStatus
from bai.manager.db import Connection, Database
from bai.manager.models.session import kernels, session_dependencies, sessions

__all__ = ["MAX_DEPTH", "dependency_graph"]

#: Levels of dependencies followed below the root.
MAX_DEPTH: Final = 32


async def dependency_graph(db: Database, root: uuid.UUID) -> dict[str, Any]:
    """The dependency tree below the session *root* (module docs)."""
    async with db.begin_readonly() as conn:
        nodes: dict[uuid.UUID, dict[str, Any]] = {}
        edges: dict[uuid.UUID, list[uuid.UUID]] = {}
        level = [root]
        for _ in range(MAX_DEPTH + 1):
            fresh = [sid for sid in level if sid not in nodes]
            if not fresh:
                break
            nodes.update(await _nodes(conn, fresh))
            edges.update(await _edges(conn, fresh))
            level = sorted({dep for sid in fresh for dep in edges.get(sid, ())})
    return _tree(root, nodes, edges, depth=0, expanded=set())


async def _nodes(conn: Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    rows = await conn.execute(
        sa.select(
            sessions.c.id,
            sessions.c.name,
            kernels.c.status,
            kernels.c.status_changed,
        )
        .select_from(sessions.join(kernels, kernels.c.session_id == sessions.c.id))
        .where(sessions.c.id.in_(ids), kernels.c.cluster_role == "main")
    )
    return {
        row.id: {
            "session_id": str(row.id),
            "session_name": row.name,
            "status": f"KernelStatus.{KernelStatus(row.status).value}",
            "status_changed": str(row.status_changed),
        }
        for row in rows
    }


async def _edges(conn: Connection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    rows = await conn.execute(
        sa.select(session_dependencies.c.session_id, session_dependencies.c.depends_on)
        .where(session_dependencies.c.session_id.in_(ids))
        .order_by(session_dependencies.c.session_id, session_dependencies.c.depends_on)
    )
    found: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row in rows:
        found.setdefault(row.session_id, []).append(row.depends_on)
    return found


def _tree(
    node: uuid.UUID,
    nodes: dict[uuid.UUID, dict[str, Any]],
    edges: dict[uuid.UUID, list[uuid.UUID]],
    depth: int,
    expanded: set[uuid.UUID],
) -> dict[str, Any]:
    below: list[uuid.UUID] = []
    if depth < MAX_DEPTH and node not in expanded:
        expanded.add(node)
        below = [dep for dep in edges.get(node, []) if dep in nodes]
    return {
        **nodes[node],
        "depends_on": [_tree(dep, nodes, edges, depth + 1, expanded) for dep in below],
    }
