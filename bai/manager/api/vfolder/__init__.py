"""``/folders``: virtual folders, their sharing, and the files inside them.

Routes (``:name`` is a folder name or id; the level in brackets is the
permission on the folder the route needs, ``wd`` > ``rw`` > ``ro``):

* ``POST /folders`` -- create (201); ``GET /folders`` ``{all, group_id,
  owner_user_email}`` -- list; ``DELETE /folders`` ``{id}`` (superadmins) and
  ``DELETE /folders/:name`` [wd] -- move to the trash (204; 409 while a live
  session mounts it);
* ``GET /folders/_/trash``, ``POST /folders/_/restore`` ``{id, name?}``,
  ``POST /folders/_/purge`` ``{id}`` -- the trash of the caller's folders;
* ``GET /folders/:name`` [ro] -- info with ``numFiles`` and ``used_bytes``;
* ``POST /folders/:name/rename`` ``{new_name}`` [wd] (201);
  ``POST /folders/:name/update-options`` ``{permission, cloneable}`` (owner);
* ``GET /folders/_/hosts`` ``{group_id}``, ``/_/all-hosts`` (superadmins),
  ``/_/allowed-types``; ``all_hosts`` and ``allowed_types`` too;
* ``POST /folders/:name/clone`` [ro, cloneable] -- ``{..., bgtask_id}``;
* ``POST /folders/:name/invite`` (owner), ``GET /folders/invitations/list``,
  ``/invitations/list-sent`` (and ``list_sent``), ``POST
  /folders/invitations/update/:inv_id``, ``/invitations/accept``, ``DELETE
  /folders/invitations/delete``, ``POST /folders/:name/leave``;
* ``POST /folders/:name/share``, ``DELETE /folders/:name/unshare`` (admins,
  project folders); ``GET`` and ``POST /folders/_/shared`` (grants);
* ``POST /folders/_/change-ownership`` (superadmins); ``GET`` and ``POST
  /folders/_/quota``; ``GET /folders/_/usage`` and ``/_/used-bytes``
  (superadmins);
* the file routes of :mod:`~bai.manager.api.vfolder.files`
  (:data:`~bai.manager.api.vfolder.files.FILE_ROUTES`).

Modules: ``params`` (reading parameters from the query or the body),
``views`` (answers), then the routes: ``folders``, ``sharing``, ``files``.
This module only registers them on :data:`blueprint`.
"""

from __future__ import annotations

from quart import Blueprint

from bai.manager.api.vfolder import folders, sharing
from bai.manager.api.vfolder.files import FILE_ROUTES

__all__ = ["blueprint"]

blueprint = Blueprint("vfolder", __name__, url_prefix="/folders")

_ROUTES = (
    ("", folders.create, "POST"),
    ("", folders.list_folders, "GET"),
    ("", folders.delete_by_id, "DELETE"),
    ("/_/trash", folders.list_trash, "GET"),
    ("/_/restore", folders.restore, "POST"),
    ("/_/purge", folders.purge, "POST"),
    ("/_/hosts", folders.list_hosts, "GET"),
    ("/_/all-hosts", folders.all_hosts, "GET"),
    ("/_/all_hosts", folders.all_hosts, "GET"),
    ("/_/allowed-types", folders.allowed_types, "GET"),
    ("/_/allowed_types", folders.allowed_types, "GET"),
    ("/_/shared", sharing.list_shared, "GET"),
    ("/_/shared", sharing.update_shared, "POST"),
    ("/_/change-ownership", folders.change_owner, "POST"),
    ("/_/change_ownership", folders.change_owner, "POST"),
    ("/_/quota", folders.get_quota, "GET"),
    ("/_/quota", folders.set_quota, "POST"),
    ("/_/usage", folders.get_usage, "GET"),
    ("/_/used-bytes", folders.get_used_bytes, "GET"),
    ("/_/used_bytes", folders.get_used_bytes, "GET"),
    ("/invitations/list", sharing.list_invitations, "GET"),
    ("/invitations/list-sent", sharing.list_sent_invitations, "GET"),
    ("/invitations/list_sent", sharing.list_sent_invitations, "GET"),
    ("/invitations/update/<inv_id>", sharing.update_invitation, "POST"),
    ("/invitations/accept", sharing.accept_invitation, "POST"),
    ("/invitations/delete", sharing.delete_invitation, "DELETE"),
    ("/<name>", folders.info, "GET"),
    ("/<name>", folders.delete_by_name, "DELETE"),
    ("/<name>/rename", folders.rename, "POST"),
    ("/<name>/update-options", folders.update_folder_options, "POST"),
    ("/<name>/update_options", folders.update_folder_options, "POST"),
    ("/<name>/clone", folders.clone, "POST"),
    ("/<name>/invite", sharing.invite, "POST"),
    ("/<name>/leave", sharing.leave, "POST"),
    ("/<name>/share", sharing.share, "POST"),
    ("/<name>/unshare", sharing.unshare, "DELETE"),
)

for _path, _view, _method in (*_ROUTES, *FILE_ROUTES):
    blueprint.add_url_rule(_path, view_func=_view, methods=[_method])
del _path, _view, _method
