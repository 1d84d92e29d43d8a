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

``GET /config/resource-slots`` (any user) lists the slot types the cluster
knows: ``{"cpu": "count", "mem": "bytes", ...}``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from quart import Blueprint, Response

from bai.common.errors import InvalidValue
from bai.manager.api.auth import auth_required, superadmin_required
from bai.manager.api.helpers import current_ctx, json_response, read_json
from bai.manager.api.resource import cluster_slot_types
from bai.manager.models.shared_config import (
    check_config_key,
    delete_config,
    get_config,
    get_config_tree,
    put_config_many,
)

__all__ = ["MAX_SET_KEYS", "blueprint", "flatten_config"]

#: The most keys one ``/config/set`` may write.
MAX_SET_KEYS: Final = 256

blueprint = Blueprint("config", __name__, url_prefix="/config")


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
@auth_required
async def resource_slots() -> Response:
    """``GET /config/resource-slots``: slot name -> slot type."""
    async with current_ctx().db.begin_readonly() as conn:
        slot_types = await cluster_slot_types(conn)
    return json_response({name: str(kind) for name, kind in slot_types.items()})
