"""Kernel images as the GraphQL API shows them: ``image(reference)`` and ``images``.

Every authenticated user may read the image catalog (the ``images`` table,
which agents fill from their catalogs and fixtures may extend).  An image is
found by its canonical name or an alias, for one architecture (default:
``x86_64`` when the name exists for several, else the only one).
``labels`` are ``[{key, value}]`` sorted by key; ``resource_limits`` are
``[{key, min, max}]`` with ``"Infinity"`` for no maximum;
``is_operation`` selects images whose ``ai.backend.features`` label lists
``operation`` (``true``) or does not (``false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa

from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.db import Connection
from bai.manager.models.image import image_aliases, images

__all__ = ["registry_of", "resolve_image", "resolve_images"]

_DEFAULT_ARCH: Final = "x86_64"
_FEATURES_LABEL: Final = "ai.backend.features"


def registry_of(ctx: GqlContext, name: str, architecture: str) -> str | None:
    """The registry of the image called *name* (``None`` if it is not registered);
    looked up once per request and image."""
    key = ("registry", name, architecture)
    if key not in ctx.memo:

        async def read(conn: Connection) -> str | None:
            rows = await conn.execute(
                sa.select(images.c.registry, images.c.architecture).where(images.c.name == name)
            )
            by_arch = {row.architecture: row.registry for row in rows}
            return by_arch.get(architecture, next(iter(by_arch.values()), None))

        ctx.memo[key] = ctx.read(read)
    registry: str | None = ctx.memo[key]
    return registry


def _features(labels: Any) -> set[str]:
    if not isinstance(labels, Mapping):
        return set()
    return {part.strip() for part in str(labels.get(_FEATURES_LABEL, "")).split() if part.strip()}


def _item(row: Any, aliases: list[str]) -> dict[str, Any]:
    labels = row.labels if isinstance(row.labels, Mapping) else {}
    resources = row.resources if isinstance(row.resources, Mapping) else {}
    limits = []
    for slot, bounds in sorted(resources.items()):
        bounds = bounds if isinstance(bounds, Mapping) else {}
        maximum = bounds.get("max")
        limits.append(
            {
                "key": slot,
                "min": None if bounds.get("min") is None else str(bounds["min"]),
                "max": "Infinity" if maximum is None else str(maximum),
            }
        )
    return {
        "id": row.id,
        "name": row.name,
        "registry": row.registry,
        "image": row.image,
        "tag": row.tag,
        "architecture": row.architecture,
        "digest": row.digest,
        "size_bytes": row.size_bytes,
        "labels": [{"key": k, "value": str(v)} for k, v in sorted(labels.items())],
        "aliases": aliases,
        "resource_limits": limits,
        "supported_accelerators": list(row.accelerators or ()),
        "created_at": row.created_at,
    }


async def _with_aliases(conn: Connection, rows: list[Any]) -> list[dict[str, Any]]:
    aliases: dict[Any, list[str]] = {row.id: [] for row in rows}
    if aliases:
        found = await conn.execute(
            sa.select(image_aliases.c.image_id, image_aliases.c.alias)
            .where(image_aliases.c.image_id.in_(list(aliases)))
            .order_by(image_aliases.c.alias)
        )
        for alias in found:
            aliases[alias.image_id].append(alias.alias)
    return [_item(row, aliases[row.id]) for row in rows]


def resolve_image(_root: Any, info: Info, reference: str, architecture: str | None = None) -> Any:
    """``image(reference, architecture)``: one image by name or alias, or ``null``."""
    ctx = context_of(info)

    async def read(conn: Connection) -> dict[str, Any] | None:
        aliased = sa.select(image_aliases.c.image_id).where(image_aliases.c.alias == reference)
        query = sa.select(images).where(
            sa.or_(images.c.name == reference, images.c.id.in_(aliased))
        )
        if architecture is not None:
            query = query.where(images.c.architecture == architecture)
        rows = list(await conn.execute(query))
        if not rows:
            return None
        rows.sort(key=lambda r: (r.name != reference, r.architecture != _DEFAULT_ARCH, r.name))
        return (await _with_aliases(conn, rows[:1]))[0]

    return ctx.read(read)


def resolve_images(
    _root: Any,
    info: Info,
    is_operation: bool | None = None,
    architecture: str | None = None,
) -> Any:
    """``images(is_operation, architecture)``: the image catalog, sorted by name."""
    ctx = context_of(info)

    async def read(conn: Connection) -> list[dict[str, Any]]:
        query = sa.select(images).order_by(images.c.name, images.c.architecture)
        if architecture is not None:
            query = query.where(images.c.architecture == architecture)
        rows = list(await conn.execute(query))
        if is_operation is not None:
            rows = [r for r in rows if ("operation" in _features(r.labels)) == is_operation]
        return await _with_aliases(conn, rows)

    items: list[dict[str, Any]] = ctx.read(read)
    return items
