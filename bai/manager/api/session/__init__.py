"""``/session``: create, inspect, run code in, move files of, and destroy compute sessions.

Every route is a thin layer over :class:`~bai.manager.sessions.registry.SessionRegistry`:
it parses the spec's request (body or query string), scopes the session to
the caller's keypair (or, for admins, to ``owner_access_key``), calls the
registry and shapes the spec's answer.

Routes (``:id`` is a session name, a full UUID or an unambiguous id prefix;
terminated sessions are found too, so that acting on one says that it is
not running instead of that it does not exist; a RUNNING session's record
may be up to :data:`~bai.manager.api.session.lookup.SESSION_CACHE_TTL`
seconds old, see :class:`~bai.manager.api.session.lookup.SessionCache`):

* ``POST /session`` and ``POST /session/_/create`` -- create
  (:mod:`~bai.manager.api.session.schema` has the body,
  :mod:`~bai.manager.api.session.lifecycle` the answer);
* ``POST /session/_/create-from-template`` and ``/_/create-cluster`` -- create
  from a stored session or cluster template, the same way
  (:mod:`~bai.manager.api.session.templates`);
* ``GET /session/_/match?id=`` -- ``{"matches": [{"id", "name", "status"}]}``
  of the caller's active sessions whose name or id starts with ``id``;
* ``GET /session/_/logs?session_name=`` and ``GET /session/:id/logs`` --
  ``{"result": {"logs": text}}``;
* ``GET /session/:id`` -- what the manager knows about the session
  (:func:`~bai.manager.api.session.views.session_json`);
* ``DELETE /session/:id?forced=&recursive=`` -- destroy (``recursive`` first
  destroys the active sessions that depend on it); ``{"stats": ...}``;
* ``PATCH /session/:id`` -- restart (204);
* ``POST /session/:id`` -- the execute long-poll: ``{"mode", "code",
  "runId", "options"}`` -> ``{"result": Execution Result Object}``;
* ``POST /session/:id/rename?name=``, ``/interrupt`` (204), ``/complete``
  (``{"result": [candidates]}``);
* ``GET /session/:id/status-history`` -- ``{"result": {status: timestamp}}``
  (the latest time the session entered each status);
* ``POST /session/:id/upload``, ``GET /session/:id/download``,
  ``/download_single`` and ``/files`` -- files under ``/home/work``
  (:mod:`~bai.manager.api.session.files`);
* ``POST /session/:id/start-service`` and ``/shutdown-service`` -- a
  session's app services (:mod:`~bai.manager.api.session.services`).

The package's modules, each imported only by the ones after it: ``lookup``
(finding the session a request names), ``views`` (the answers' JSON),
``schema`` (request bodies), then the routes: ``lifecycle``, ``execute``,
``files``, ``services`` and ``templates``.  This module only registers the routes on
:data:`blueprint`.
"""

from __future__ import annotations

from quart import Blueprint

from bai.manager.api.session import execute, files, lifecycle, services, templates

__all__ = ["blueprint"]

blueprint = Blueprint("session", __name__, url_prefix="/session")

blueprint.add_url_rule("", view_func=lifecycle.create, methods=["POST"])
blueprint.add_url_rule("/_/create", view_func=lifecycle.create, methods=["POST"])
# The legacy path creates too, so no session can be named "create" for execute.
blueprint.add_url_rule("/create", view_func=lifecycle.create, methods=["POST"])
blueprint.add_url_rule(
    "/_/sync-agent-registry", view_func=lifecycle.sync_agent_registry, methods=["POST"]
)
blueprint.add_url_rule(
    "/_/create-from-template", view_func=templates.create_from_template, methods=["POST"]
)
blueprint.add_url_rule("/_/create-cluster", view_func=templates.create_cluster, methods=["POST"])
blueprint.add_url_rule("/_/match", view_func=lifecycle.match, methods=["GET"])
blueprint.add_url_rule("/_/logs", view_func=files.logs_by_query, methods=["GET"])
blueprint.add_url_rule("/<session_name>/logs", view_func=files.logs, methods=["GET"])
blueprint.add_url_rule("/<session_name>", view_func=lifecycle.get_info, methods=["GET"])
blueprint.add_url_rule(
    "/<session_name>/status-history", view_func=lifecycle.status_history, methods=["GET"]
)
blueprint.add_url_rule(
    "/<session_name>/dependency-graph", view_func=lifecycle.dependency_graph, methods=["GET"]
)
blueprint.add_url_rule(
    "/<session_name>/direct-access-info", view_func=lifecycle.direct_access_info, methods=["GET"]
)
blueprint.add_url_rule(
    "/<session_name>/abusing-report", view_func=lifecycle.abusing_report, methods=["GET"]
)
blueprint.add_url_rule("/<session_name>", view_func=lifecycle.destroy, methods=["DELETE"])
blueprint.add_url_rule("/<session_name>", view_func=lifecycle.restart, methods=["PATCH"])
blueprint.add_url_rule("/<session_name>/rename", view_func=lifecycle.rename, methods=["POST"])
blueprint.add_url_rule("/<session_name>", view_func=execute.execute, methods=["POST"])
blueprint.add_url_rule("/<session_name>/interrupt", view_func=execute.interrupt, methods=["POST"])
blueprint.add_url_rule("/<session_name>/complete", view_func=execute.complete, methods=["POST"])
blueprint.add_url_rule("/<session_name>/upload", view_func=files.upload, methods=["POST"])
blueprint.add_url_rule("/<session_name>/download", view_func=files.download, methods=["GET"])
blueprint.add_url_rule(
    "/<session_name>/download_single", view_func=files.download_single, methods=["GET"]
)
blueprint.add_url_rule("/<session_name>/files", view_func=files.list_files, methods=["GET"])
blueprint.add_url_rule(
    "/<session_name>/start-service", view_func=services.start_service, methods=["POST"]
)
blueprint.add_url_rule(
    "/<session_name>/shutdown-service", view_func=services.shutdown_service, methods=["POST"]
)
