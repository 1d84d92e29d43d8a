"""``/user-config``, ``/group-config``, ``/domain-config``: dotfiles and the bootstrap script.

Each scope has four routes on ``/dotfiles``: ``POST`` creates (``{path,
permission, data}``, answers ``{}``), ``GET`` lists (``[{path, permission,
data}]``) or, with ``path``, shows one (``{path, permission, perm, data}``),
``PATCH`` replaces one's mode and content (``{}``), ``DELETE`` removes one
(``{"success": true}``).  ``POST``/``PATCH`` read a JSON body, ``GET``/
``DELETE`` the query string.  ``/user-config/bootstrap-script``: ``GET``
answers the caller's stored script as a JSON string, ``POST {script}``
stores it (``{}``); every new kernel of the user runs it before the
session's own bootstrap script.

Who may do what (the original's rules):

* user dotfiles: any user, their own; an admin may name another user's
  keypair with ``owner_access_key`` (a domain admin only within the domain,
  :func:`~bai.manager.api.auth.resolve_owner`);
* project dotfiles (``group``: an id, or a name with ``domain``): changes
  need a domain admin of the project's domain or a superadmin; reading
  needs a member of the project, a domain admin of its domain or a superadmin;
* domain dotfiles (``domain``): changes need a domain admin of that domain
  or a superadmin; reading needs a user of that domain or a superadmin.

Bad input is a 400 naming the field (paths are checked by
:mod:`bai.manager.dotfiles.rules`: no absolute path, no ``..``, nothing
reserved, limits on count and size), a missing dotfile 404, a path taken
409, a scope the caller may not touch 403, an unknown project or domain
404; a refused request writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec
import sqlalchemy as sa
from quart import Blueprint, Response

from bai.common.errors import InvalidValue
from bai.manager.api.auth import AuthContext, admin_required, auth_required, current_auth
from bai.manager.api.auth import resolve_owner as resolve_owner_key
from bai.manager.api.errors import Forbidden, NotFound
from bai.manager.api.helpers import current_ctx, json_response, read_json, read_query
from bai.manager.dotfiles import rules, store
from bai.manager.dotfiles.store import Scope
from bai.manager.models.identity import association_groups_users, groups

__all__ = ["blueprint"]

blueprint = Blueprint("dotfiles", __name__)


class _UserDotfile(msgspec.Struct, kw_only=True):
    path: str
    permission: str
    data: str
    owner_access_key: str | None = None


class _UserPath(msgspec.Struct, kw_only=True):
    path: str | None = None
    owner_access_key: str | None = None


class _DomainDotfile(msgspec.Struct, kw_only=True):
    domain: str
    path: str
    permission: str
    data: str


class _DomainPath(msgspec.Struct, kw_only=True):
    domain: str
    path: str | None = None


class _GroupDotfile(msgspec.Struct, kw_only=True):
    path: str
    permission: str
    data: str
    group: str | None = None
    groupId: str | None = None
    group_id: str | None = None
    domain: str | None = None


class _GroupPath(msgspec.Struct, kw_only=True):
    path: str | None = None
    group: str | None = None
    groupId: str | None = None
    group_id: str | None = None
    domain: str | None = None


class _BootstrapScript(msgspec.Struct, kw_only=True):
    script: str


def _required_path(path: str | None) -> str:
    if path is None:
        raise InvalidValue("is required", field="path")
    return path


# ------------------------------------------------------------------ the four actions


async def _create(scope: Scope, path: str, permission: str, data: str) -> Response:
    await _change(
        scope, lambda entries: rules.add(entries, path, permission, data, scope=scope.label)
    )
    return json_response({})


async def _update(scope: Scope, path: str, permission: str, data: str) -> Response:
    await _change(
        scope, lambda entries: rules.replace(entries, path, permission, data, scope=scope.label)
    )
    return json_response({})


async def _delete(scope: Scope, path: str) -> Response:
    await _change(scope, lambda entries: rules.remove(entries, path))
    return json_response({"success": True})


async def _list_or_get(scope: Scope, path: str | None) -> Response:
    entries = await store.read(current_ctx().db, scope)
    if entries is None:
        raise NotFound(f"no such {scope.label.removeprefix('a ')}")
    if path is None:
        return json_response(rules.listing(entries))
    return json_response(rules.shown(rules.find(entries, path)))


async def _change(scope: Scope, edit: Callable[[list[rules.Stored]], list[rules.Stored]]) -> None:
    if not await store.change(current_ctx().db, scope, edit):
        raise NotFound(f"no such {scope.label.removeprefix('a ')}")


# ------------------------------------------------------------------ /user-config


async def _user_scope(auth: AuthContext, owner_access_key: str | None) -> Scope:
    owner = await resolve_owner_key(auth, owner_access_key)
    return Scope.user(owner.owner.user_id)


@blueprint.route("/user-config/dotfiles", methods=["POST"])
@auth_required
async def create_user_dotfile() -> Response:
    """``POST /user-config/dotfiles``."""
    params = await read_json(_UserDotfile)
    scope = await _user_scope(current_auth(), params.owner_access_key)
    return await _create(scope, params.path, params.permission, params.data)


@blueprint.route("/user-config/dotfiles", methods=["GET"])
@auth_required
async def list_or_get_user_dotfiles() -> Response:
    """``GET /user-config/dotfiles``."""
    params = read_query(_UserPath)
    scope = await _user_scope(current_auth(), params.owner_access_key)
    return await _list_or_get(scope, params.path)


@blueprint.route("/user-config/dotfiles", methods=["PATCH"])
@auth_required
async def update_user_dotfile() -> Response:
    """``PATCH /user-config/dotfiles``."""
    params = await read_json(_UserDotfile)
    scope = await _user_scope(current_auth(), params.owner_access_key)
    return await _update(scope, params.path, params.permission, params.data)


@blueprint.route("/user-config/dotfiles", methods=["DELETE"])
@auth_required
async def delete_user_dotfile() -> Response:
    """``DELETE /user-config/dotfiles``."""
    params = read_query(_UserPath)
    scope = await _user_scope(current_auth(), params.owner_access_key)
    return await _delete(scope, _required_path(params.path))


@blueprint.route("/user-config/bootstrap-script", methods=["GET"])
@auth_required
async def get_bootstrap_script() -> Response:
    """``GET /user-config/bootstrap-script``: the caller's stored script."""
    auth = current_auth()
    return json_response(await store.read_bootstrap_script(current_ctx().db, auth.user_id))


@blueprint.route("/user-config/bootstrap-script", methods=["POST"])
@auth_required
async def update_bootstrap_script() -> Response:
    """``POST /user-config/bootstrap-script``: store the caller's script."""
    params = await read_json(_BootstrapScript)
    script = rules.check_bootstrap_script(params.script)
    await store.write_bootstrap_script(current_ctx().db, current_auth().user_id, script)
    return json_response({})


# ------------------------------------------------------------------ /domain-config


def _domain_scope(auth: AuthContext, domain: str, *, change: bool) -> Scope:
    if not auth.is_superadmin and auth.domain_name != domain:
        action = "change" if change else "read"
        raise Forbidden(f"only superadmins may {action} the dotfiles of another domain")
    return Scope.domain(domain)


@blueprint.route("/domain-config/dotfiles", methods=["POST"])
@admin_required
async def create_domain_dotfile() -> Response:
    """``POST /domain-config/dotfiles``."""
    params = await read_json(_DomainDotfile)
    scope = _domain_scope(current_auth(), params.domain, change=True)
    return await _create(scope, params.path, params.permission, params.data)


@blueprint.route("/domain-config/dotfiles", methods=["GET"])
@auth_required
async def list_or_get_domain_dotfiles() -> Response:
    """``GET /domain-config/dotfiles``."""
    params = read_query(_DomainPath)
    scope = _domain_scope(current_auth(), params.domain, change=False)
    return await _list_or_get(scope, params.path)


@blueprint.route("/domain-config/dotfiles", methods=["PATCH"])
@admin_required
async def update_domain_dotfile() -> Response:
    """``PATCH /domain-config/dotfiles``."""
    params = await read_json(_DomainDotfile)
    scope = _domain_scope(current_auth(), params.domain, change=True)
    return await _update(scope, params.path, params.permission, params.data)


@blueprint.route("/domain-config/dotfiles", methods=["DELETE"])
@admin_required
async def delete_domain_dotfile() -> Response:
    """``DELETE /domain-config/dotfiles``."""
    params = read_query(_DomainPath)
    scope = _domain_scope(current_auth(), params.domain, change=True)
    return await _delete(scope, _required_path(params.path))


# ------------------------------------------------------------------ /group-config


async def _group_scope(
    auth: AuthContext, params: _GroupDotfile | _GroupPath, *, change: bool
) -> Scope:
    """The project named by *params* (an id, or a name with ``domain``), if *auth* may act."""
    named = params.group or params.groupId or params.group_id
    if named is None:
        raise InvalidValue("is required: the project's id, or its name with domain", field="group")
    try:
        group_id: uuid.UUID | None = uuid.UUID(named)
    except ValueError:
        group_id = None
    if group_id is not None:
        query = sa.select(groups.c.id, groups.c.domain_name).where(groups.c.id == group_id)
    else:
        if params.domain is None:
            raise InvalidValue("is required when group is a name", field="domain")
        query = sa.select(groups.c.id, groups.c.domain_name).where(
            groups.c.name == named, groups.c.domain_name == params.domain
        )
    db = current_ctx().db
    row = (await db.fetch(query)).first()
    if row is None:
        raise NotFound(f"no such project: {named!r}")
    if auth.is_superadmin:
        return Scope.group(row.id)
    if auth.domain_name != row.domain_name:
        raise Forbidden("the project belongs to another domain")
    if change:
        return Scope.group(row.id)  # admin_required already holds
    if not auth.is_admin:
        member = (
            await db.fetch(
                sa.select(association_groups_users.c.group_id).where(
                    association_groups_users.c.group_id == row.id,
                    association_groups_users.c.user_id == auth.user_id,
                )
            )
        ).first()
        if member is None:
            raise Forbidden("only the project's members may read its dotfiles")
    return Scope.group(row.id)


@blueprint.route("/group-config/dotfiles", methods=["POST"])
@admin_required
async def create_group_dotfile() -> Response:
    """``POST /group-config/dotfiles``."""
    params = await read_json(_GroupDotfile)
    scope = await _group_scope(current_auth(), params, change=True)
    return await _create(scope, params.path, params.permission, params.data)


@blueprint.route("/group-config/dotfiles", methods=["GET"])
@auth_required
async def list_or_get_group_dotfiles() -> Response:
    """``GET /group-config/dotfiles``."""
    params = read_query(_GroupPath)
    scope = await _group_scope(current_auth(), params, change=False)
    return await _list_or_get(scope, params.path)


@blueprint.route("/group-config/dotfiles", methods=["PATCH"])
@admin_required
async def update_group_dotfile() -> Response:
    """``PATCH /group-config/dotfiles``."""
    params = await read_json(_GroupDotfile)
    scope = await _group_scope(current_auth(), params, change=True)
    return await _update(scope, params.path, params.permission, params.data)


@blueprint.route("/group-config/dotfiles", methods=["DELETE"])
@admin_required
async def delete_group_dotfile() -> Response:
    """``DELETE /group-config/dotfiles``."""
    params = read_query(_GroupPath)
    scope = await _group_scope(current_auth(), params, change=True)
    return await _delete(scope, _required_path(params.path))
