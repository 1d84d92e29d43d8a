"""The routes that run code in a session: execute, interrupt and complete.

* ``POST /session/:id`` -- the execute long-poll: ``{"mode", "code",
  "runId", "options"}`` -> ``{"result": Execution Result Object}``; the
  ``options`` of ``batch`` and ``complete`` modes are checked first
  (:mod:`~bai.manager.api.session.schema`);
* ``POST /session/:id/interrupt`` (204);
* ``POST /session/:id/complete`` -- ``{"result": [candidates]}``.

A RUNNING session's record may come from the
:class:`~bai.manager.api.session.lookup.SessionCache`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response

from bai.manager.api.auth import auth_required, current_auth
from bai.manager.api.helpers import current_ctx, json_response, no_content, read_json
from bai.manager.api.session.lookup import find_session, translated_errors
from bai.manager.api.session.schema import (
    CompleteBody,
    batch_options,
    completion_context,
    completion_options,
)

__all__ = ["complete", "execute", "interrupt"]


class _ExecuteBody(msgspec.Struct, kw_only=True):
    mode: str
    code: str | None = None
    run_id: str | None = msgspec.field(default=None, name="runId")
    options: dict[str, Any] | None = None


@auth_required
async def execute(session_name: str) -> Response:
    """``POST /session/:id``: one call of the execute API (``{"result": ...}``)."""
    body = await read_json(_ExecuteBody)
    info = await find_session(session_name, current_auth())
    options: dict[str, Any] | None = body.options
    if body.mode == "batch":
        options = batch_options(body.options)
    elif body.mode == "complete":
        options = completion_options(completion_context(body.options))
    with translated_errors():
        result = await current_ctx().registry.execute(
            info, mode=body.mode, code=body.code or "", run_id=body.run_id, options=options
        )
    return json_response({"result": result})


@auth_required
async def interrupt(session_name: str) -> Response:
    """``POST /session/:id/interrupt``: ask the running code to stop (204)."""
    info = await find_session(session_name, current_auth())
    with translated_errors():
        await current_ctx().registry.interrupt(info)
    return no_content()


@auth_required
async def complete(session_name: str) -> Response:
    """``POST /session/:id/complete``: ``{"result": [candidates]}``."""
    body = await read_json(CompleteBody)
    info = await find_session(session_name, current_auth())
    with translated_errors():
        found = await current_ctx().registry.complete(
            info, body.code, completion_options(body.options)
        )
    return json_response({"result": found})
