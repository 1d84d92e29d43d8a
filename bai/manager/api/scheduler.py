"""``/manager/scheduler``: operator controls of the scheduler (superadmins only).

* ``POST /manager/scheduler/operation`` ``{"op": "include-agents" |
  "exclude-agents", "args": [agent ids]}`` -- let agents take new sessions or
  stop giving them any (their running kernels stay); 204.  An unknown agent
  id is 404 and changes nothing.
* ``POST /manager/scheduler/trigger`` ``{"event": "schedule" | "prepare"}``
  -- run a scheduling pass now (a pass also starts the sessions it placed,
  so both events ask for one); 204.
* ``GET /manager/scheduler/status`` -- whether the dispatcher runs, its
  interval, the passes so far, the pending sessions, the excluded agents and
  what the last pass did.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from quart import Blueprint, Response

from bai.manager.api.auth import superadmin_required
from bai.manager.api.helpers import current_ctx, json_response, no_content, read_json

__all__ = ["blueprint"]

blueprint = Blueprint("scheduler", __name__, url_prefix="/manager/scheduler")


class _Operation(msgspec.Struct, kw_only=True):
    op: Literal["include-agents", "exclude-agents"]
    args: list[str]


class _Trigger(msgspec.Struct, kw_only=True):
    event: Literal["schedule", "prepare"]


@blueprint.route("/operation", methods=["POST"])
@superadmin_required
async def operation() -> Response:
    """``POST /manager/scheduler/operation``: include or exclude agents (204)."""
    params = await read_json(_Operation)
    await current_ctx().dispatcher.operation(params.op, params.args)
    return no_content()


@blueprint.route("/trigger", methods=["POST"])
@superadmin_required
async def trigger() -> Response:
    """``POST /manager/scheduler/trigger``: ask for a scheduling pass now (204)."""
    await read_json(_Trigger)
    current_ctx().dispatcher.trigger()
    return no_content()


@blueprint.route("/status", methods=["GET"])
@superadmin_required
async def status() -> Response:
    """``GET /manager/scheduler/status``: the dispatcher's state."""
    return json_response(await current_ctx().dispatcher.status())
