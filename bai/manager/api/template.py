"""``/template``: session (task) templates and cluster templates, stored per user and project.

Ten routes, the same five for each kind (``KIND`` is ``session`` or ``cluster``):

* ``POST /template/KIND`` ``{"payload", "group"?, "domain"?, "owner_access_key"?}``
  (``groupName``/``group_name``, ``domainName``/``domain_name`` too): stores the
  payload's templates (:mod:`bai.manager.templates.documents`; a session
  payload may hold several) for the owner in the project ``group`` (name or id,
  default ``default``) of ``domain`` (default the owner's).  Answers
  ``[{"id", "user"}]`` for session templates and ``{"id", "user"}`` for a
  cluster template (ids as 32 hex digits, as the original manager writes them).
* ``GET /template/KIND?all=&group_id=`` (or the same as a JSON body, as the
  official client sends it): the templates the caller may read, each
  ``{"name", "id", "created_at", "is_owner", "user", "group", "user_email",
  "group_name", "domain_name", "type"}`` (session templates add
  ``"template"``; their ``type`` is ``task``, a cluster template's ``user``
  or ``group`` as in the original).  ``all=true`` lists every template to a
  superadmin.
* ``GET /template/session/:id?format=json|yaml`` answers ``{"template",
  "name", "user_uuid", "group_id", "domain_name"}`` (JSON by default);
  ``GET /template/cluster/:id?format=yaml|json`` the template itself (YAML by
  default).  A YAML answer is ``text/yaml``.
* ``PUT /template/KIND/:id`` ``{"payload", "owner_access_key"?}`` (a session
  template also takes ``group``/``domain`` to move it): replaces the stored
  template; ``{"success": true}``.
* ``DELETE /template/KIND/:id``: marks it inactive (``is_active`` false, as
  the original's soft delete); ``{"success": true}``.

Who may do what: the owner (the caller, or the keypair ``owner_access_key``
names, which only admins may name) reads and writes its templates; members of
a template's project read it (and may start sessions from it), but see a
``spec.kernel.git.credential.password`` masked; domain admins read and write
every template of their domain, superadmins all.  A template
the caller may not read, a deleted one and one of the other kind are 404; one
it may read but not write is 403 on ``PUT``/``DELETE``.

Checked before anything is written (400 naming the field): the payload
(unknown keys, wrong types, aliases given twice, folder names and mount
paths), that every template's ``spec.kernel.image`` is a registered image or
alias, that a cluster's nodes name session templates the owner may read and
that the registry can run them as one session
(:func:`bai.manager.templates.cluster_body`), the project and the domain,
and a web UI wrapper's ``user_uuid``/``group_id``/``domain_name``, which must
say where the template is stored (they cannot move it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import sqlalchemy as sa
from quart import Blueprint, Response, current_app

from bai.common.errors import InvalidValue
from bai.manager.api.auth import AuthContext, Principal, auth_required, current_auth, resolve_owner
from bai.manager.api.errors import Forbidden, NotFound
from bai.manager.api.helpers import InvalidParameter, current_ctx, json_response, read_json
from bai.manager.api.vfolder.params import read_args
from bai.manager.db import Connection
from bai.manager.models.base import utcnow
from bai.manager.models.identity import association_groups_users, domains, groups, users
from bai.manager.models.image import image_aliases, images
from bai.manager.models.session import SessionTemplateType, session_templates
from bai.manager.templates import (
    ClusterTemplate,
    InvalidTemplate,
    TaskEntry,
    TaskTemplate,
    check_cluster_template,
    check_task_template,
    cluster_body,
    cluster_payload,
    dump_yaml,
    load_payload,
    task_entries,
)

__all__ = [
    "StoredTemplate",
    "blueprint",
    "load_cluster_nodes",
    "readable_template",
    "stored_cluster",
    "stored_task",
]

log = logging.getLogger(__name__)

blueprint = Blueprint("template", __name__, url_prefix="/template")

#: What readers who may not change a template see instead of its git password.
_MASK: Final = "********"


# ---------------------------------------------------------------------------
# Stored templates and who may touch them
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    """An active template row, with its project's name."""

    id: uuid.UUID
    kind: SessionTemplateType
    name: str | None
    user_uuid: uuid.UUID
    group_id: uuid.UUID | None
    group_name: str | None
    domain_name: str
    created_at: datetime
    template: dict[str, Any]


def _uuid(text: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidParameter("must be a UUID", field=field, value=text) from None


async def _member_groups(conn: Connection, user_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await conn.execute(
        sa.select(association_groups_users.c.group_id).where(
            association_groups_users.c.user_id == user_id
        )
    )
    return set(rows.scalars())


def _writer(auth: AuthContext, user_uuid: uuid.UUID, domain_name: str) -> bool:
    """Whether *auth* may change a template of *user_uuid* in *domain_name*."""
    if auth.is_superadmin or user_uuid in (auth.owner.user_id, auth.user_id):
        return True
    return auth.is_admin and domain_name == auth.domain_name


def _may_write(auth: AuthContext, row: StoredTemplate) -> bool:
    return _writer(auth, row.user_uuid, row.domain_name)


def _shown(template: dict[str, Any], writer: bool) -> dict[str, Any]:
    """*template* as a reader sees it: a git password only its writers see."""
    kernel = template.get("spec", {}).get("kernel") or {}
    credential = (kernel.get("git") or {}).get("credential")
    if writer or not isinstance(credential, dict) or "password" not in credential:
        return template
    masked: dict[str, Any] = json.loads(json.dumps(template))
    masked["spec"]["kernel"]["git"]["credential"]["password"] = _MASK
    return masked


async def _may_read(conn: Connection, auth: AuthContext, row: StoredTemplate) -> bool:
    if _may_write(auth, row):
        return True
    return row.group_id is not None and row.group_id in await _member_groups(
        conn, auth.owner.user_id
    )


async def _stored(
    conn: Connection, template_id: uuid.UUID, kind: SessionTemplateType
) -> StoredTemplate | None:
    row = (
        await conn.execute(
            sa.select(session_templates, groups.c.name.label("group_name"))
            .select_from(
                session_templates.outerjoin(groups, groups.c.id == session_templates.c.group_id)
            )
            .where(
                session_templates.c.id == template_id,
                session_templates.c.is_active.is_(True),
                session_templates.c.type == kind,
            )
        )
    ).first()
    if row is None:
        return None
    return StoredTemplate(
        id=row.id,
        kind=SessionTemplateType(row.type),
        name=row.name,
        user_uuid=row.user_uuid,
        group_id=row.group_id,
        group_name=row.group_name,
        domain_name=row.domain_name,
        created_at=row.created_at,
        template=dict(row.template),
    )


async def readable_template(
    conn: Connection,
    auth: AuthContext,
    template_id: str,
    kind: SessionTemplateType,
    *,
    field: str = "template_id",
) -> StoredTemplate:
    """The active template *template_id* of *kind* that *auth* may read; 404 otherwise
    (400 naming *field* when it is no UUID)."""
    row = await _stored(conn, _uuid(template_id, field), kind)
    if row is None or not await _may_read(conn, auth, row):
        raise NotFound(f"no {kind.value} template {template_id}")
    return row


async def _writable(
    conn: Connection, auth: AuthContext, template_id: str, kind: SessionTemplateType
) -> StoredTemplate:
    row = await readable_template(conn, auth, template_id, kind)
    if not _may_write(auth, row):
        raise Forbidden("only the template's owner and admins may change it")
    return row


async def load_cluster_nodes(
    conn: Connection, auth: AuthContext, cluster: ClusterTemplate, field: str
) -> list[TaskTemplate]:
    """The session templates of *cluster*'s nodes, in order; 400 naming
    ``FIELD.spec.nodes.N.session_template`` for one *auth* may not read."""
    found: list[TaskTemplate] = []
    for index, node in enumerate(cluster.spec.nodes):
        where = f"{field}.spec.nodes.{index}.session_template"
        row = await _stored(conn, node.session_template, SessionTemplateType.TASK)
        if row is None or not await _may_read(conn, auth, row):
            raise InvalidParameter(
                "names no session template you may use",
                field=where,
                value=str(node.session_template),
            )
        found.append(check_task_template(row.template, where))
    return found


# ---------------------------------------------------------------------------
# Where a new template goes
# ---------------------------------------------------------------------------


class _StoreBody(msgspec.Struct, kw_only=True):
    payload: str
    group: str | None = None
    group_name: str | None = None
    group_name_camel: str | None = msgspec.field(default=None, name="groupName")
    domain: str | None = None
    domain_name: str | None = None
    domain_name_camel: str | None = msgspec.field(default=None, name="domainName")
    owner_access_key: str | None = None

    def group_ref(self) -> str | None:
        return self.group or self.group_name or self.group_name_camel

    def domain_ref(self) -> str | None:
        return self.domain or self.domain_name or self.domain_name_camel


@dataclass(frozen=True, slots=True)
class _Place:
    domain_name: str
    group_id: uuid.UUID


async def _place(
    conn: Connection, auth: AuthContext, domain: str | None, group: str | None
) -> _Place:
    """Where the owner's template goes: *group* (name or id) of *domain* (400 naming
    ``domain`` or ``group``)."""
    owner: Principal = auth.owner
    domain_name = domain or owner.domain_name
    if domain_name != owner.domain_name and not auth.is_superadmin:
        raise InvalidParameter(
            "templates can only be stored in the owner's domain", field="domain", value=domain_name
        )
    active = await conn.scalar(sa.select(domains.c.is_active).where(domains.c.name == domain_name))
    if not active:
        raise InvalidParameter("no active domain has this name", field="domain", value=domain_name)
    ref = group or "default"
    condition = groups.c.name == ref
    with contextlib.suppress(ValueError):
        condition = sa.or_(condition, groups.c.id == uuid.UUID(ref))
    row = (
        await conn.execute(
            sa.select(groups.c.id).where(
                condition, groups.c.domain_name == domain_name, groups.c.is_active.is_(True)
            )
        )
    ).first()
    if row is None:
        raise InvalidParameter(
            f"no active project of this name in domain {domain_name!r}", field="group", value=ref
        )
    if not auth.is_admin and row.id not in await _member_groups(conn, owner.user_id):
        raise InvalidParameter(
            "the owner is not a member of this project", field="group", value=ref
        )
    return _Place(domain_name, row.id)


async def _check_image(conn: Connection, template: TaskTemplate, field: str) -> None:
    ref = template.spec.kernel.image
    known = await conn.scalar(
        sa.select(sa.literal(1)).where(
            sa.or_(
                sa.exists().where(images.c.name == ref),
                sa.exists().where(image_aliases.c.alias == ref),
            )
        )
    )
    if not known:
        raise InvalidParameter(
            "no registered image has this name or alias",
            field=f"{field}.spec.kernel.image",
            value=ref,
        )


def _check_claims(entry: TaskEntry, owner: uuid.UUID, place: _Place) -> None:
    """A wrapper's ``user_uuid``/``group_id``/``domain_name`` must say where it is stored."""
    claims = (
        ("user_uuid", entry.user_uuid, str(owner)),
        ("group_id", entry.group_id, str(place.group_id)),
        ("domain_name", entry.domain_name, place.domain_name),
    )
    for name, claimed, actual in claims:
        if claimed is None:
            continue
        same = claimed == actual
        if name != "domain_name":
            with contextlib.suppress(ValueError):
                same = uuid.UUID(claimed) == uuid.UUID(actual)
        if not same:
            raise InvalidParameter(
                f"must be {actual} (where the template is stored; the owner changes with "
                "owner_access_key, the project with group)",
                field=f"{entry.field}.{name}",
                value=claimed,
            )


def _stored_form(template: TaskTemplate | ClusterTemplate) -> dict[str, Any]:
    stored: dict[str, Any] = msgspec.to_builtins(template)
    return stored


# ---------------------------------------------------------------------------
# Session (task) templates
# ---------------------------------------------------------------------------


async def _checked_entries(conn: Connection, payload: str) -> list[TaskEntry]:
    entries = task_entries(load_payload(payload))
    for entry in entries:
        await _check_image(conn, entry.template, entry.template_field)
    return entries


@blueprint.route("/session", methods=["POST"])
@auth_required
async def create_session_template() -> Response:
    """``POST /template/session`` (module docs)."""
    body = await read_json(_StoreBody)
    auth = await resolve_owner(current_auth(), body.owner_access_key)

    async def write(conn: Connection) -> list[dict[str, str]]:
        place = await _place(conn, auth, body.domain_ref(), body.group_ref())
        entries = await _checked_entries(conn, body.payload)
        created = []
        for entry in entries:
            _check_claims(entry, auth.owner.user_id, place)
            template_id = uuid.uuid4()
            await conn.execute(
                sa.insert(session_templates).values(
                    id=template_id,
                    created_at=utcnow(),
                    is_active=True,
                    domain_name=place.domain_name,
                    group_id=place.group_id,
                    user_uuid=auth.owner.user_id,
                    type=SessionTemplateType.TASK,
                    name=entry.name,
                    template=_stored_form(entry.template),
                )
            )
            created.append({"id": template_id.hex, "user": auth.owner.user_id.hex})
        return created

    created = await current_ctx().db.transaction(write)
    log.info("session templates %s created for %s", [c["id"] for c in created], auth.owner.email)
    return json_response(created)


class _ListParams(msgspec.Struct, kw_only=True):
    all: bool = False
    group_id: str | None = None
    group_id_camel: str | None = msgspec.field(default=None, name="groupId")


def _group_filter(params: _ListParams) -> uuid.UUID | None:
    ref = params.group_id or params.group_id_camel
    if ref is None or ref == "":
        return None
    return _uuid(ref, "group_id")


async def _listed(auth: AuthContext, kind: SessionTemplateType) -> list[dict[str, Any]]:
    params = await read_args(_ListParams)
    group_id = _group_filter(params)
    if params.all and not auth.is_superadmin:
        raise Forbidden("only superadmins may list every template")

    async def read(conn: Connection) -> list[dict[str, Any]]:
        query = (
            sa.select(
                session_templates,
                users.c.email.label("user_email"),
                groups.c.name.label("group_name"),
            )
            .select_from(
                session_templates.outerjoin(
                    users, users.c.uuid == session_templates.c.user_uuid
                ).outerjoin(groups, groups.c.id == session_templates.c.group_id)
            )
            .where(session_templates.c.is_active.is_(True), session_templates.c.type == kind)
            .order_by(session_templates.c.created_at, session_templates.c.id)
        )
        if group_id is not None:
            query = query.where(session_templates.c.group_id == group_id)
        if not params.all:
            visible = [session_templates.c.user_uuid == auth.owner.user_id]
            member_of = await _member_groups(conn, auth.owner.user_id)
            if member_of:
                visible.append(session_templates.c.group_id.in_(member_of))
            if auth.is_admin:
                visible.append(session_templates.c.domain_name == auth.domain_name)
            query = query.where(sa.or_(*visible))
        return [_list_entry(auth, row, kind) for row in await conn.execute(query)]

    return await current_ctx().db.transaction(read, readonly=True)


def _list_entry(auth: AuthContext, row: Any, kind: SessionTemplateType) -> dict[str, Any]:
    is_owner = row.user_uuid == auth.owner.user_id
    entry: dict[str, Any] = {
        "name": row.name,
        "id": row.id.hex,
        "created_at": str(row.created_at),
        "is_owner": is_owner,
        "user": str(row.user_uuid),
        "group": str(row.group_id) if row.group_id is not None else None,
        "user_email": row.user_email,
        "group_name": row.group_name,
        "domain_name": row.domain_name,
    }
    if kind is SessionTemplateType.TASK:
        entry["type"] = kind.value
        entry["template"] = _shown(row.template, _writer(auth, row.user_uuid, row.domain_name))
    else:
        entry["type"] = "user" if is_owner else "group"
    return entry


@blueprint.route("/session", methods=["GET"])
@auth_required
async def list_session_templates() -> Response:
    """``GET /template/session`` (module docs)."""
    return json_response(await _listed(current_auth(), SessionTemplateType.TASK))


class _GetQuery(msgspec.Struct, kw_only=True):
    format: Literal["json", "yaml"] | None = None
    owner_access_key: str | None = None


def _formatted(data: Any, chosen: str) -> Response:
    if chosen == "yaml":
        response: Response = current_app.response_class(
            dump_yaml(data), status=200, content_type="text/yaml; charset=utf-8"
        )
        return response
    return json_response(data)


@blueprint.route("/session/<template_id>", methods=["GET"])
@auth_required
async def get_session_template(template_id: str) -> Response:
    """``GET /template/session/:id?format=`` (module docs)."""
    params = await read_args(_GetQuery)
    auth = current_auth()

    async def read(conn: Connection) -> StoredTemplate:
        return await readable_template(conn, auth, template_id, SessionTemplateType.TASK)

    row = await current_ctx().db.transaction(read, readonly=True)
    answer = {
        "template": _shown(row.template, _may_write(auth, row)),
        "name": row.name,
        "user_uuid": str(row.user_uuid),
        "group_id": str(row.group_id) if row.group_id is not None else None,
        "domain_name": row.domain_name,
    }
    return _formatted(answer, params.format or "json")


@blueprint.route("/session/<template_id>", methods=["PUT"])
@auth_required
async def update_session_template(template_id: str) -> Response:
    """``PUT /template/session/:id`` (module docs)."""
    body = await read_json(_StoreBody)
    auth = await resolve_owner(current_auth(), body.owner_access_key)

    async def write(conn: Connection) -> None:
        row = await _writable(conn, auth, template_id, SessionTemplateType.TASK)
        if body.group_ref() is not None or body.domain_ref() is not None:
            place = await _place(conn, auth, body.domain_ref(), body.group_ref())
        elif row.group_id is not None:
            place = _Place(row.domain_name, row.group_id)
        else:
            place = await _place(conn, auth, row.domain_name, None)
        entries = await _checked_entries(conn, body.payload)
        if len(entries) != 1:
            raise InvalidTemplate(
                "must hold exactly one template to replace one", field="payload", value=len(entries)
            )
        _check_claims(entries[0], row.user_uuid, place)
        await conn.execute(
            sa.update(session_templates)
            .where(session_templates.c.id == row.id)
            .values(
                name=entries[0].name,
                template=_stored_form(entries[0].template),
                group_id=place.group_id,
                domain_name=place.domain_name,
            )
        )

    await current_ctx().db.transaction(write)
    return json_response({"success": True})


async def _delete(template_id: str, kind: SessionTemplateType) -> Response:
    auth = current_auth()

    async def write(conn: Connection) -> None:
        row = await _writable(conn, auth, template_id, kind)
        await conn.execute(
            sa.update(session_templates)
            .where(session_templates.c.id == row.id)
            .values(is_active=False)
        )

    await current_ctx().db.transaction(write)
    return json_response({"success": True})


@blueprint.route("/session/<template_id>", methods=["DELETE"])
@auth_required
async def delete_session_template(template_id: str) -> Response:
    """``DELETE /template/session/:id`` (module docs)."""
    return await _delete(template_id, SessionTemplateType.TASK)


# ---------------------------------------------------------------------------
# Cluster templates
# ---------------------------------------------------------------------------


async def _checked_cluster(conn: Connection, auth: AuthContext, payload: str) -> ClusterTemplate:
    cluster = cluster_payload(load_payload(payload))
    nodes = await load_cluster_nodes(conn, auth, cluster, "payload")
    # Refuses nodes the registry cannot run as one session, before storing.
    cluster_body(cluster, nodes, domain=None, group=None)
    return cluster


@blueprint.route("/cluster", methods=["POST"])
@auth_required
async def create_cluster_template() -> Response:
    """``POST /template/cluster`` (module docs)."""
    body = await read_json(_StoreBody)
    auth = await resolve_owner(current_auth(), body.owner_access_key)

    async def write(conn: Connection) -> dict[str, str]:
        place = await _place(conn, auth, body.domain_ref(), body.group_ref())
        cluster = await _checked_cluster(conn, auth, body.payload)
        template_id = uuid.uuid4()
        await conn.execute(
            sa.insert(session_templates).values(
                id=template_id,
                created_at=utcnow(),
                is_active=True,
                domain_name=place.domain_name,
                group_id=place.group_id,
                user_uuid=auth.owner.user_id,
                type=SessionTemplateType.CLUSTER,
                name=cluster.metadata.name,
                template=_stored_form(cluster),
            )
        )
        return {"id": template_id.hex, "user": auth.owner.user_id.hex}

    created = await current_ctx().db.transaction(write)
    log.info("cluster template %s created for %s", created["id"], auth.owner.email)
    return json_response(created)


@blueprint.route("/cluster", methods=["GET"])
@auth_required
async def list_cluster_templates() -> Response:
    """``GET /template/cluster`` (module docs)."""
    return json_response(await _listed(current_auth(), SessionTemplateType.CLUSTER))


@blueprint.route("/cluster/<template_id>", methods=["GET"])
@auth_required
async def get_cluster_template(template_id: str) -> Response:
    """``GET /template/cluster/:id?format=`` (module docs)."""
    params = await read_args(_GetQuery)
    auth = current_auth()

    async def read(conn: Connection) -> StoredTemplate:
        return await readable_template(conn, auth, template_id, SessionTemplateType.CLUSTER)

    row = await current_ctx().db.transaction(read, readonly=True)
    return _formatted(row.template, params.format or "yaml")


@blueprint.route("/cluster/<template_id>", methods=["PUT"])
@auth_required
async def update_cluster_template(template_id: str) -> Response:
    """``PUT /template/cluster/:id`` (module docs)."""
    body = await read_json(_StoreBody)
    auth = await resolve_owner(current_auth(), body.owner_access_key)

    async def write(conn: Connection) -> None:
        row = await _writable(conn, auth, template_id, SessionTemplateType.CLUSTER)
        cluster = await _checked_cluster(conn, auth, body.payload)
        await conn.execute(
            sa.update(session_templates)
            .where(session_templates.c.id == row.id)
            .values(name=cluster.metadata.name, template=_stored_form(cluster))
        )

    await current_ctx().db.transaction(write)
    return json_response({"success": True})


@blueprint.route("/cluster/<template_id>", methods=["DELETE"])
@auth_required
async def delete_cluster_template(template_id: str) -> Response:
    """``DELETE /template/cluster/:id`` (module docs)."""
    return await _delete(template_id, SessionTemplateType.CLUSTER)


def stored_task(row: StoredTemplate, field: str = "template_id") -> TaskTemplate:
    """*row*'s template, checked again (a row written by another manager version could
    differ); 400 naming *field* when it no longer holds."""
    try:
        return check_task_template(row.template, "template")
    except InvalidValue as exc:
        raise InvalidParameter(
            f"the stored template is no longer valid: {exc}", field=field, value=str(row.id)
        ) from None


def stored_cluster(row: StoredTemplate, field: str = "template_id") -> ClusterTemplate:
    """:func:`stored_task` for a cluster template."""
    try:
        return check_cluster_template(row.template, "template")
    except InvalidValue as exc:
        raise InvalidParameter(
            f"the stored template is no longer valid: {exc}", field=field, value=str(row.id)
        ) from None
