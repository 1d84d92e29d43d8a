"""``/resource/watcher``: the agents' watchers, relayed (superadmins only).

* ``GET /resource/watcher?agent_id=`` -> the watcher's ``{"agent-status",
  "watcher-status"}``;
* ``POST /resource/watcher/agent/start|stop|restart`` ``{"agent_id"}`` ->
  ``{"result": "ok"}``.

``agent`` is accepted for ``agent_id``, and a ``GET`` may carry it in a JSON
body, as the official client sends it.  The watcher's status and body are
answered as they are (:func:`bai.manager.watchers.call_watcher`); an unknown
agent is 404, a watcher that is not configured or does not answer 503.
"""

from __future__ import annotations

from typing import Final

import msgspec
from quart import Blueprint, Response, request

from bai.manager.api.auth import superadmin_required
from bai.manager.api.helpers import InvalidParameter, current_ctx, json_response, read_json
from bai.manager.watchers import call_watcher

__all__ = ["blueprint"]

blueprint = Blueprint("watcher", __name__, url_prefix="/resource/watcher")

#: Seconds to wait for a watcher's status, and for a start, stop or restart.
STATUS_TIMEOUT: Final = 5.0
ACTION_TIMEOUT: Final = 60.0


class _Target(msgspec.Struct, kw_only=True):
    agent_id: str | None = None
    agent: str | None = None


async def _agent_id() -> str:
    target = await read_json(_Target)
    agent_id = request.args.get("agent_id") or request.args.get("agent")
    agent_id = agent_id or target.agent_id or target.agent
    if not agent_id:
        raise InvalidParameter("is required", field="agent_id")
    return agent_id


async def _relay(method: str, path: str, timeout: float) -> Response:  # noqa: ASYNC109
    agent_id = await _agent_id()
    status, body = await call_watcher(current_ctx().db, agent_id, method, path, timeout=timeout)
    return json_response(body, status=status)


@blueprint.route("", methods=["GET"])
@superadmin_required
async def status() -> Response:
    """``GET /resource/watcher``: the agent's and its watcher's state."""
    return await _relay("GET", "/", STATUS_TIMEOUT)


@blueprint.route("/agent/start", methods=["POST"])
@superadmin_required
async def agent_start() -> Response:
    """``POST /resource/watcher/agent/start``."""
    return await _relay("POST", "/agent/start", ACTION_TIMEOUT)


@blueprint.route("/agent/stop", methods=["POST"])
@superadmin_required
async def agent_stop() -> Response:
    """``POST /resource/watcher/agent/stop``."""
    return await _relay("POST", "/agent/stop", ACTION_TIMEOUT)


@blueprint.route("/agent/restart", methods=["POST"])
@superadmin_required
async def agent_restart() -> Response:
    """``POST /resource/watcher/agent/restart``."""
    return await _relay("POST", "/agent/restart", ACTION_TIMEOUT)
