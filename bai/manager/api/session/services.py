"""The routes that start and stop a session's app services.

* ``POST /session/:id/start-service`` -- ``{"app", "port"?, "envs"?, "arguments"?,
  "login_session_token"?}``: starts the app in the main kernel unless it runs,
  registers it with the resource group's app proxy and answers
  ``{"token", "wsproxy_addr"}``; the browser URL comes from
  ``GET {wsproxy_addr}/v2/proxy/{token}/{session_id}/add?app=NAME``;
* ``POST /session/:id/shutdown-service`` -- ``{"service_name"}`` (204).

``envs`` and ``arguments`` are JSON objects, sent as objects or (as the
official client does) as JSON text.  :class:`ServiceParams` and
:func:`service_request` are shared with the ``/stream`` proxies, whose query
strings carry the same parameters.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
from quart import Response

from bai.manager.api.auth import auth_required, current_auth
from bai.manager.api.helpers import (
    InvalidParameter,
    current_ctx,
    json_response,
    no_content,
    read_json,
)
from bai.manager.api.session.lookup import find_session, translated_errors
from bai.manager.appproxy import register_app
from bai.manager.sessions.services import MAX_SERVICE_ENVS

__all__ = ["ServiceParams", "service_request", "shutdown_service", "start_service"]

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_ENV_VALUE: Final = 4096


class ServiceParams(msgspec.Struct, kw_only=True):
    """What starting an app may say: the app, one of its ports, its environment."""

    app: str
    port: int | None = None
    envs: str | dict[str, Any] | None = None
    arguments: str | dict[str, Any] | None = None
    login_session_token: str | None = None


class _ShutdownBody(msgspec.Struct, kw_only=True):
    service_name: str


def _json_object(value: str | dict[str, Any] | None, field: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise InvalidParameter("must be a JSON object", field=field, value=value) from None
    if not isinstance(value, dict):
        raise InvalidParameter("must be a JSON object", field=field, value=value)
    return value


def service_request(params: ServiceParams) -> tuple[str, int | None, dict[str, str]]:
    """The app, port and environment *params* ask for; InvalidParameter names the field."""
    if not params.app or len(params.app) > 64:
        raise InvalidParameter("must name an app (at most 64 characters)", field="app")
    if params.port is not None and not 1 <= params.port <= 65535:
        raise InvalidParameter("must be a port number", field="port", value=params.port)
    envs = _json_object(params.envs, "envs")
    if len(envs) > MAX_SERVICE_ENVS:
        raise InvalidParameter(f"at most {MAX_SERVICE_ENVS} variables", field="envs")
    for name, value in envs.items():
        if not _ENV_NAME.match(name):
            raise InvalidParameter("not an environment variable name", field="envs", value=name)
        if not isinstance(value, str) or "\0" in value or len(value) > _MAX_ENV_VALUE:
            raise InvalidParameter(
                f"must be text without NUL of at most {_MAX_ENV_VALUE} characters",
                field=f"envs.{name}",
            )
    arguments = _json_object(params.arguments, "arguments")
    if arguments:
        raise InvalidParameter(
            f"the app {params.app!r} takes no arguments", field="arguments", value=arguments
        )
    return params.app, params.port, envs


@auth_required
async def start_service(session_name: str) -> Response:
    """``POST /session/:id/start-service``: ``{"token", "wsproxy_addr"}``."""
    params = await read_json(ServiceParams)
    app, port, envs = service_request(params)
    auth = current_auth()
    info = await find_session(session_name, auth)
    ctx = current_ctx()
    with translated_errors():
        address = await ctx.registry.start_service(info, app, port=port, envs=envs)
    token, wsproxy_addr = await register_app(
        ctx.db,
        resource_group=info.scaling_group or "default",
        session_id=info.id,
        kernel_host=address.host,
        kernel_port=address.port,
        app=app,
        protocol=address.protocol,
        user_id=info.user_uuid,
        access_key=info.access_key,
        open_to_public=False,
    )
    return json_response({"token": token, "wsproxy_addr": wsproxy_addr})


@auth_required
async def shutdown_service(session_name: str) -> Response:
    """``POST /session/:id/shutdown-service``: stop an app (204)."""
    body = await read_json(_ShutdownBody)
    info = await find_session(session_name, current_auth())
    with translated_errors():
        await current_ctx().registry.shutdown_service(info, body.service_name)
    return no_content()
