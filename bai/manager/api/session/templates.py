"""Sessions from stored templates: ``POST /session/_/create-from-template`` and
``POST /session/_/create-cluster``.

Both routes turn a template (:mod:`bai.manager.api.template`) and the
caller's body into the body of ``POST /session``
(:mod:`bai.manager.templates.merge`) and then create the session through
the same code as that route (:func:`bai.manager.api.session.lifecycle.create_session`):
the answers, the waiting, the reuse of a session of the same name and every
check of a normal creation are the same.

* ``create-from-template``: ``template_id`` (or ``templateId``) names a
  session template the owner may read; every other key of the body is a
  ``POST /session`` key that replaces the template's (``null`` gives way to
  the template; the merge rules, folders included, are in
  :mod:`bai.manager.templates.merge`).  The template's project and domain are
  the defaults of ``group`` and ``domain``.
* ``create-cluster``: ``clientSessionToken`` (or ``name``), ``template_id``
  (a cluster template), ``type``/``sessionType``, ``group``, ``domain``,
  ``scaling_group``/``scalingGroup``, ``tag``, ``enqueueOnly``,
  ``maxWaitSeconds``, ``owner_access_key``; the session is the cluster
  template's main node with as many kernels as all nodes' replicas.

Errors: a template id that is no UUID is 400 naming ``template_id``; one the
owner may not read (or a deleted one, or one of the other kind) is 404; a
template whose nodes no longer name readable session templates, or that no
longer passes the checks, is 400 naming the field; bad overrides are the 400
``POST /session`` gives, naming the key as sent.  Nothing is written then.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response

from bai.common.validation import invalid_value
from bai.manager.api.auth import AuthContext, auth_required, current_auth, resolve_owner
from bai.manager.api.helpers import InvalidParameter, current_ctx, read_json
from bai.manager.api.session import lifecycle
from bai.manager.api.session.schema import CreateBody
from bai.manager.api.template import (
    StoredTemplate,
    load_cluster_nodes,
    readable_template,
    stored_cluster,
    stored_task,
)
from bai.manager.db import Connection
from bai.manager.models.session import SessionTemplateType
from bai.manager.templates import MAIN_ROLE, cluster_body, merged_body, task_body

__all__ = ["create_cluster", "create_from_template"]


def _creation_body(merged: dict[str, Any]) -> CreateBody:
    try:
        return msgspec.convert(merged, CreateBody, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid_value(exc, merged, where="the request body", error=InvalidParameter) from None


def _template_ref(*values: Any) -> str:
    for value in values:
        if value is not None:
            if not isinstance(value, str):
                raise InvalidParameter("must be a template id", field="template_id", value=value)
            return value
    raise InvalidParameter("is required", field="template_id")


async def _readable(auth: AuthContext, ref: str, kind: SessionTemplateType) -> StoredTemplate:
    async def read(conn: Connection) -> StoredTemplate:
        return await readable_template(conn, auth, ref, kind)

    return await current_ctx().db.transaction(read, readonly=True)


@auth_required
async def create_from_template() -> Response:
    """``POST /session/_/create-from-template`` (module docs)."""
    raw = await read_json(dict[str, Any])
    owner_key = raw.get("owner_access_key")
    if owner_key is not None and not isinstance(owner_key, str):
        raise InvalidParameter("must be an access key", field="owner_access_key", value=owner_key)
    auth = await resolve_owner(current_auth(), owner_key)
    row = await _readable(
        auth, _template_ref(raw.get("template_id"), raw.get("templateId")), SessionTemplateType.TASK
    )
    template = stored_task(row)
    base = task_body(template, domain=row.domain_name, group=row.group_name)
    return await lifecycle.create_session(_creation_body(merged_body(base, raw, template)))


class _ClusterBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    client_session_token: str | None = msgspec.field(default=None, name="clientSessionToken")
    name: str | None = None
    template_id: str | None = None
    template_id_camel: str | None = msgspec.field(default=None, name="templateId")
    type: str | None = None
    session_type: str | None = msgspec.field(default=None, name="sessionType")
    group: str | None = None
    group_name: str | None = None
    group_name_camel: str | None = msgspec.field(default=None, name="groupName")
    domain: str | None = None
    domain_name: str | None = None
    domain_name_camel: str | None = msgspec.field(default=None, name="domainName")
    scaling_group: str | None = None
    scaling_group_camel: str | None = msgspec.field(default=None, name="scalingGroup")
    tag: str | None = None
    enqueue_only: bool | None = msgspec.field(default=None, name="enqueueOnly")
    max_wait_seconds: int | None = msgspec.field(default=None, name="maxWaitSeconds")
    owner_access_key: str | None = None


@auth_required
async def create_cluster() -> Response:
    """``POST /session/_/create-cluster`` (module docs)."""
    body = await read_json(_ClusterBody)
    name = body.client_session_token or body.name
    if name is None:
        raise InvalidParameter("is required", field="clientSessionToken")
    auth = await resolve_owner(current_auth(), body.owner_access_key)
    ref = _template_ref(body.template_id, body.template_id_camel)

    async def read(conn: Connection) -> dict[str, Any]:
        row = await readable_template(conn, auth, ref, SessionTemplateType.CLUSTER)
        cluster = stored_cluster(row)
        nodes = await load_cluster_nodes(conn, auth, cluster, "template")
        main = nodes[[node.role for node in cluster.spec.nodes].index(MAIN_ROLE)]
        base = cluster_body(
            cluster, nodes, domain=row.domain_name, group=row.group_name, field="template"
        )
        overrides = {
            "name": name,
            "type": body.type or body.session_type,
            "group": body.group or body.group_name or body.group_name_camel,
            "domain": body.domain or body.domain_name or body.domain_name_camel,
            "tag": body.tag,
            "enqueueOnly": body.enqueue_only,
            "maxWaitSeconds": body.max_wait_seconds,
            "owner_access_key": body.owner_access_key,
            "config": {"scalingGroup": body.scaling_group or body.scaling_group_camel},
        }
        return merged_body(base, overrides, main)

    merged = await current_ctx().db.transaction(read, readonly=True)
    return await lifecycle.create_session(_creation_body(merged))
