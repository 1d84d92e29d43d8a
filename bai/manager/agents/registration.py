"""Registering an agent from its heartbeat: its ``agents`` row and the images it announces.

:func:`register_agent` runs inside the caller's transaction, so the images
are there as soon as the agent is.  Guarantees: nothing is written for an
agent whose resource group does not exist; an image name and architecture
that already exist, and aliases already taken, are left alone; an agent that
was not ALIVE becomes ALIVE again (its ``lost_at`` cleared).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from bai.manager.agents.beats import Beat
from bai.manager.db import Connection
from bai.manager.models.base import utcnow
from bai.manager.models.image import image_aliases, images
from bai.manager.models.resource import AgentStatus, agents, scaling_groups

__all__ = ["register_agent"]


async def register_agent(
    conn: Connection, agent_id: str, beat: Beat, *, row: bool, images: bool
) -> bool:
    """Write the agent's row as ALIVE (if *row*) and its images (if *images*).

    Returns False (nothing written) if the agent's resource group does not exist.
    """
    group = await conn.scalar(
        sa.select(scaling_groups.c.name).where(scaling_groups.c.name == beat.scaling_group)
    )
    if group is None:
        return False
    if images:
        await _register_images(conn, beat.images)
    if row:
        await _upsert_agent(conn, agent_id, beat)
    return True


async def _upsert_agent(conn: Connection, agent_id: str, beat: Beat) -> None:
    values = beat.row()
    row = (
        await conn.execute(
            sa.select(agents.c.status).where(agents.c.id == agent_id).with_for_update()
        )
    ).first()
    now = utcnow()
    if row is None:
        await conn.execute(
            sa.insert(agents).values(
                id=agent_id,
                status=AgentStatus.ALIVE,
                status_changed=now,
                first_contact=now,
                **values,
            )
        )
        return
    if AgentStatus(row.status) is not AgentStatus.ALIVE:
        values.update(status=AgentStatus.ALIVE, status_changed=now, lost_at=None)
    await conn.execute(sa.update(agents).where(agents.c.id == agent_id).values(values))


async def _register_images(conn: Connection, image_list: Sequence[Mapping[str, Any]]) -> None:
    """Insert the announced images (and free aliases) the ``images`` table lacks."""
    for entry in image_list:
        name = entry.get("name")
        arch = entry.get("architecture")
        if not isinstance(name, str) or not isinstance(arch, str):
            continue
        if not 0 < len(name) <= 512 or not 0 < len(arch) <= 32:
            continue
        image_id = await conn.scalar(
            sa.select(images.c.id).where(images.c.name == name, images.c.architecture == arch)
        )
        if image_id is None:
            registry, path, tag = _split_image_name(name)
            labels = entry.get("labels")
            resources = entry.get("resources")
            image_id = uuid.uuid4()
            await conn.execute(
                sa.insert(images).values(
                    id=image_id,
                    name=name,
                    registry=registry[:256],
                    image=path[:256],
                    tag=tag[:128],
                    architecture=arch,
                    labels=labels if isinstance(labels, Mapping) else {},
                    resources=resources if isinstance(resources, Mapping) else {},
                )
            )
        aliases = entry.get("aliases")
        for alias in aliases if isinstance(aliases, list) else []:
            if not isinstance(alias, str) or not 0 < len(alias) <= 256:
                continue
            taken = await conn.scalar(
                sa.select(image_aliases.c.alias).where(image_aliases.c.alias == alias)
            )
            if taken is None:
                await conn.execute(sa.insert(image_aliases).values(alias=alias, image_id=image_id))


def _split_image_name(name: str) -> tuple[str, str, str]:
    """``registry``, ``image`` and ``tag`` of an image reference (``local`` when no registry)."""
    path, tag = name, "latest"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        path, tag = name[:colon], name[colon + 1 :]
    first, _, rest = path.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return "local", path, tag
