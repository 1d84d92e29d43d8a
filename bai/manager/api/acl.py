"""``GET /acl``: the atomic permissions the cluster knows, for clients building forms.

Answers ``{"vfolder_host_permission_list": [...]}``: the per-host folder
permissions an ``allowed_vfolder_hosts`` map may grant, with the original
manager's names and order.  Any user may ask; it is refused while the manager
is frozen, as in the original (:mod:`bai.manager.api.manager_status`).
"""

from __future__ import annotations

from typing import Final

from quart import Blueprint, Response

from bai.manager.api.auth import auth_required
from bai.manager.api.helpers import json_response

__all__ = ["VFOLDER_HOST_PERMISSIONS", "blueprint"]

#: The per-host folder permissions, as the spec names them.
VFOLDER_HOST_PERMISSIONS: Final = (
    "create-vfolder",
    "modify-vfolder",
    "delete-vfolder",
    "mount-in-session",
    "upload-file",
    "download-file",
    "invite-others",
    "set-user-specific-permission",
)

blueprint = Blueprint("acl", __name__, url_prefix="/acl")


@blueprint.route("", methods=["GET"])
@auth_required
async def get_permissions() -> Response:
    """``GET /acl``."""
    return json_response({"vfolder_host_permission_list": list(VFOLDER_HOST_PERMISSIONS)})
