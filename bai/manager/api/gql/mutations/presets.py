"""Resource preset mutations (superadmins; the spec manages presets only here):
``create_resource_preset``, ``modify_resource_preset``, ``delete_resource_preset``.

``resource_slots`` is a slot map of finite, non-negative amounts
(``"mem": "4g"`` allowed); ``shared_memory`` a size string (``"64m"``) or
``null`` for none, and never more than the preset's memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize, ResourceSlot
from bai.manager.api.gql import resources
from bai.manager.api.gql.context import Info, context_of
from bai.manager.api.gql.mutations.common import answer, count, slot_types, write_unique
from bai.manager.db import Connection
from bai.manager.models.resource import resource_presets

__all__ = ["create_resource_preset", "delete_resource_preset", "modify_resource_preset"]


def _slots(value: Any, known: Mapping[str, Any]) -> ResourceSlot:
    try:
        slots = ResourceSlot.parse(value, known)
    except InvalidValue as exc:
        raise InvalidValue(exc.problem, value=exc.value, field="props.resource_slots") from None
    if not slots or any(not Decimal(v).is_finite() for v in slots.values()):
        raise InvalidValue(
            "must name at least one slot with a finite amount",
            value=value,
            field="props.resource_slots",
        )
    return slots


def _shared_memory(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(BinarySize.parse(value))
    except (InvalidValue, ValueError):
        raise InvalidValue(
            "must be a size such as 64m", value=value, field="props.shared_memory"
        ) from None


async def _values(
    conn: Connection, props: Mapping[str, Any], current: Any | None
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if props.get("resource_slots") is not None:
        values["resource_slots"] = _slots(props["resource_slots"], await slot_types(conn))
    if "shared_memory" in props:
        values["shared_memory"] = _shared_memory(props["shared_memory"])
    slots = values.get("resource_slots", current.resource_slots if current is not None else None)
    shm = values.get("shared_memory", current.shared_memory if current is not None else None)
    if slots is not None and shm is not None and "mem" in slots and shm > Decimal(slots["mem"]):
        raise InvalidValue(
            "must not exceed the preset's memory", value=shm, field="props.shared_memory"
        )
    return values


def create_resource_preset(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``create_resource_preset(name, props)``."""
    ctx = context_of(info)
    ctx.require_superadmin("creating resource presets")
    if not name or len(name) > 256:
        raise InvalidValue("must be 1 to 256 characters", value=name, field="name")
    if props.get("resource_slots") is None:
        raise InvalidValue("is required", value=None, field="props.resource_slots")

    async def write(conn: Connection) -> bool:
        values = await _values(conn, props, None)
        if await count(conn, resource_presets, resource_presets.c.name == name):
            return False
        await conn.execute(sa.insert(resource_presets).values(name=name, **values))
        return True

    if not write_unique(ctx, write, False):
        return answer(
            False, f"a resource preset named {name!r} already exists", resource_preset=None
        )
    preset = resources.resolve_resource_preset(None, info, name)
    return answer(True, "success", resource_preset=preset)


def modify_resource_preset(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``modify_resource_preset(name, props)``: unset fields keep their values."""
    ctx = context_of(info)
    ctx.require_superadmin("modifying resource presets")

    async def write(conn: Connection) -> bool:
        current = (
            await conn.execute(sa.select(resource_presets).where(resource_presets.c.name == name))
        ).first()
        if current is None:
            return False
        values = await _values(conn, props, current)
        if values:
            await conn.execute(
                sa.update(resource_presets).where(resource_presets.c.name == name).values(**values)
            )
        return True

    if not ctx.write(write):
        return answer(False, f"no resource preset is named {name!r}")
    return answer(True, "success")


def delete_resource_preset(_root: Any, info: Info, name: str) -> Any:
    """``delete_resource_preset(name)``."""
    ctx = context_of(info)
    ctx.require_superadmin("deleting resource presets")

    async def write(conn: Connection) -> bool:
        result = await conn.execute(
            sa.delete(resource_presets).where(resource_presets.c.name == name)
        )
        return bool(result.rowcount)

    if not ctx.write(write):
        return answer(False, f"no resource preset is named {name!r}")
    return answer(True, "success")
