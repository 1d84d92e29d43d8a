"""``/config``: raw access to the shared configuration, and the cluster's slot types.

The shared configuration is the key-value table of
:mod:`bai.manager.models.shared_config`, which stands in for the spec's etcd; keys
are ``/``-separated paths and a *prefix* selects a key and every key below
it (``a/b`` selects ``a/b`` and ``a/b/c``, not ``a/bc``).  The three raw
routes need a superadmin:

* ``POST /config/get`` ``{"key", "prefix"}`` answers ``{"result": value}``
  (``null`` when absent); with ``prefix`` true, ``result`` is the tree below
  the key as nested objects, the key's own value (if any) under ``""``.
* ``POST /config/set`` ``{"key", "value"}``: a JSON object value is
  flattened into one key per leaf (``{"a": {"b": 1}}`` at ``k`` writes
  ``k/a/b``; a ``""`` member writes the parent key itself), so what
  ``get`` with ``prefix`` returns can be written back as is; any other value
  is stored at the key.  At most :data:`MAX_SET_KEYS` keys per call, all
  written in one transaction or none.
* ``POST /config/delete`` ``{"key", "prefix"}``.

``GET /config/resource-slots`` (anyone) lists the slot types the cluster
knows: ``{"cpu": "count", "mem": "bytes", ...}``.
``GET /config/resource-slots/details`` (anyone; optional ``sgroup``) describes
those of them that :data:`KNOWN_SLOT_METADATA` describes, for display
(``slot_name``, ``description``, ``human_readable_name``, ``display_unit``,
``number_format``, ``display_icon``, as the original manager answers);
with ``sgroup``, only ``cpu``, ``mem`` and the slots that the group's live,
schedulable agents offer.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
import sqlalchemy as sa
from quart import Blueprint, Response

from bai.common.errors import InvalidValue
from bai.manager.api.auth import public, superadmin_required
from bai.manager.api.helpers import current_ctx, json_response, read_json, read_query
from bai.manager.api.resource import cluster_slot_types
from bai.manager.models.resource import AgentStatus, agents
from bai.manager.models.shared_config import (
    check_config_key,
    delete_config,
    get_config,
    get_config_tree,
    put_config_many,
)

__all__ = ["KNOWN_SLOT_METADATA", "MAX_SET_KEYS", "blueprint", "flatten_config"]

#: The most keys one ``/config/set`` may write.
MAX_SET_KEYS: Final = 256

blueprint = Blueprint("config", __name__, url_prefix="/config")


def _metadata(
    slot: str, name: str, description: str, unit: str, binary: bool, digits: int, icon: str
) -> dict[str, Any]:
    return {
        "slot_name": slot,
        "description": description,
        "human_readable_name": name,
        "display_unit": unit,
        "number_format": {"binary": binary, "round_length": digits},
        "display_icon": icon,
    }


#: How clients display the slots bai's compute plugins offer (the original's values).
KNOWN_SLOT_METADATA: Final[dict[str, dict[str, Any]]] = {
    "cpu": _metadata("cpu", "CPU", "CPU", "Core", False, 0, "cpu"),
    "mem": _metadata("ram", "RAM", "Memory", "GiB", True, 0, "cpu"),
    "cuda.device": _metadata("cuda.device", "GPU", "CUDA-capable GPU", "GPU", False, 0, "gpu1"),
    "cuda.shares": _metadata(
        "cuda.shares", "fGPU", "CUDA-capable GPU (fractional)", "fGPU", False, 2, "gpu1"
    ),
}


def flatten_config(key: str, value: Any) -> dict[str, Any]:
    """The keys and values ``/config/set`` writes for *value* at *key* (module docs).

    Raises :class:`InvalidValue` for an invalid resulting key (``field`` is
    ``value`` plus the JSON path of the offending member) or more than
    :data:`MAX_SET_KEYS` keys.
    """
    out: dict[str, Any] = {}
    # An explicit stack: a deeply nested body must not exhaust Python's recursion.
    stack: list[tuple[str, str, Any]] = [(key, "value", value)]
    while stack:
        at, where, item = stack.pop()
        if isinstance(item, dict):
            for name, member in reversed(item.items()):
                child = at if name == "" else f"{at}/{name}"
                stack.append((child, f"{where}.{name}", member))
            continue
        check_config_key(at, field=where)
        out[at] = item
        if len(out) > MAX_SET_KEYS:
            raise InvalidValue(
                f"writes more than {MAX_SET_KEYS} keys; split it into smaller updates",
                value=f"{len(out)}+ keys",
                field="value",
            )
    return out


class _KeyParams(msgspec.Struct, kw_only=True):
    key: str
    prefix: bool = False


class _SetParams(msgspec.Struct, kw_only=True):
    key: str
    value: Any


@blueprint.route("/get", methods=["POST"])
@superadmin_required
async def get() -> Response:
    """``POST /config/get``."""
    params = await read_json(_KeyParams)
    check_config_key(params.key)
    async with current_ctx().db.begin_readonly() as conn:
        if params.prefix:
            result: Any = await get_config_tree(conn, params.key)
        else:
            result = await get_config(conn, params.key)
    return json_response({"result": result})


@blueprint.route("/set", methods=["POST"])
@superadmin_required
async def set_() -> Response:
    """``POST /config/set``."""
    params = await read_json(_SetParams)
    check_config_key(params.key)
    updates = flatten_config(params.key, params.value)
    async with current_ctx().db.begin() as conn:
        await put_config_many(conn, updates)
    return json_response({"result": "ok"})


@blueprint.route("/delete", methods=["POST"])
@superadmin_required
async def delete() -> Response:
    """``POST /config/delete``."""
    params = await read_json(_KeyParams)
    check_config_key(params.key)
    async with current_ctx().db.begin() as conn:
        await delete_config(conn, params.key, prefix=params.prefix)
    return json_response({"result": "ok"})


@blueprint.route("/resource-slots", methods=["GET"])
@public
async def resource_slots() -> Response:
    """``GET /config/resource-slots``: slot name -> slot type."""
    async with current_ctx().db.begin_readonly() as conn:
        slot_types = await cluster_slot_types(conn)
    return json_response({name: str(kind) for name, kind in slot_types.items()})


class _DetailsQuery(msgspec.Struct, kw_only=True):
    sgroup: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


@blueprint.route("/resource-slots/details", methods=["GET"])
@public
async def resource_slot_details() -> Response:
    """``GET /config/resource-slots/details``: display metadata of the known slots."""
    params = read_query(_DetailsQuery)
    async with current_ctx().db.begin_readonly() as conn:
        known = set(await cluster_slot_types(conn))
        if params.sgroup is not None:
            offered = {"cpu", "mem"}
            rows = await conn.execute(
                sa.select(agents.c.available_slots).where(
                    agents.c.status == AgentStatus.ALIVE,
                    agents.c.scaling_group == params.sgroup,
                    agents.c.schedulable.is_(True),
                )
            )
            for row in rows:
                offered.update(row.available_slots or {})
            known &= offered
    return json_response(
        {slot: meta for slot, meta in KNOWN_SLOT_METADATA.items() if slot in known}
    )
