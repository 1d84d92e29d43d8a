"""``/stream``: the routes that reach inside a running session.

* ``GET /stream/session/:id/execute`` (WebSocket) -- one streamed run of the
  execute loop (:mod:`~bai.manager.api.stream.execute`);
* ``GET /stream/session/:id/pty`` (WebSocket) -- a terminal
  (:mod:`~bai.manager.api.stream.pty`);
* ``GET /stream/session/:id/tcpproxy?app=`` and ``/httpproxy?app=``
  (WebSocket) -- one TCP connection to an app service per socket
  (:mod:`~bai.manager.api.stream.proxy`);
* ``GET /stream/session/:id/apps`` -- the session's app services:
  ``[{"name", "protocol", "ports", "url_template"?, "allowed_arguments"?,
  "allowed_envs"?}]``.

Each route is also served under the legacy ``/stream/kernel/:id/...`` form.
WebSocket requests are authenticated before the upgrade like any REST call
(:mod:`~bai.manager.api.stream.common`) and are not counted against the
keypair's rate limit.
"""

from __future__ import annotations

from quart import Blueprint, Response

from bai.manager.api.auth import auth_required, current_auth
from bai.manager.api.helpers import json_response
from bai.manager.api.session.lookup import find_session
from bai.manager.api.stream import execute, proxy, pty
from bai.manager.sessions.services import app_list

__all__ = ["blueprint"]

blueprint = Blueprint("stream", __name__, url_prefix="/stream")


@auth_required
async def apps(session_name: str) -> Response:
    """``GET /stream/session/:id/apps``: the session's app services."""
    info = await find_session(session_name, current_auth())
    return json_response(app_list(info))


for _prefix in ("session", "kernel"):
    blueprint.add_url_rule(f"/{_prefix}/<session_name>/apps", view_func=apps, methods=["GET"])
    blueprint.add_websocket(f"/{_prefix}/<session_name>/execute", view_func=execute.execute)
    blueprint.add_websocket(f"/{_prefix}/<session_name>/pty", view_func=pty.pty)
    blueprint.add_websocket(f"/{_prefix}/<session_name>/tcpproxy", view_func=proxy.tcpproxy)
    blueprint.add_websocket(f"/{_prefix}/<session_name>/httpproxy", view_func=proxy.httpproxy)
