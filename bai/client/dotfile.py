"""Dotfiles and the stored bootstrap script (``/user-config``, ``/group-config``,
``/domain-config``).

A :class:`DotfileScope` says whose dotfiles a call touches: the caller's own
(the default), another keypair's (``owner_access_key``, admins), a
project's (``group``: an id, or a name with ``domain``) or a domain's
(``domain`` alone), and picks the route as the official client does.
Dotfiles are ``{"path", "permission", "data"}`` maps; *permission* is three
octal digits (``"644"``).  Failures raise the typed
:class:`~bai.client.exceptions.BackendAPIError` (404 for a missing dotfile,
409 for a taken path, 400 naming the field for a bad one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bai.client.exceptions import MalformedResponse
from bai.client.request import APIClient

__all__ = [
    "DotfileScope",
    "create_dotfile",
    "delete_dotfile",
    "get_bootstrap_script",
    "get_dotfile",
    "list_dotfiles",
    "set_bootstrap_script",
    "update_dotfile",
]


@dataclass(frozen=True)
class DotfileScope:
    """Whose dotfiles: the caller's (all None), a keypair's, a project's or a domain's."""

    owner_access_key: str | None = None
    group: str | None = None
    domain: str | None = None

    @property
    def route(self) -> str:
        if self.group:
            return "/group-config/dotfiles"
        if self.domain:
            return "/domain-config/dotfiles"
        return "/user-config/dotfiles"

    def params(self) -> dict[str, str]:
        """The keys naming the scope, for a query string or a body."""
        if self.group:
            named = {"group": self.group}
            if self.domain:
                named["domain"] = self.domain
            return named
        if self.domain:
            return {"domain": self.domain}
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}


_OWN = DotfileScope()


def _entry(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(value.get(key), str) for key in ("path", "permission", "data")
    ):
        raise MalformedResponse("is not a dotfile", value=value, field=where)
    return {key: value[key] for key in ("path", "permission", "data")}


async def create_dotfile(
    api: APIClient, path: str, data: str, permission: str = "644", scope: DotfileScope = _OWN
) -> None:
    """Store a new dotfile at *path* (relative to ``/home/work``)."""
    body = {"path": path, "data": data, "permission": permission, **scope.params()}
    await api.fetch_json("POST", scope.route, json_body=body)


async def list_dotfiles(api: APIClient, scope: DotfileScope = _OWN) -> list[dict[str, str]]:
    """Every dotfile of *scope*."""
    data = await api.fetch_json("GET", scope.route, params=scope.params() or None)
    if not isinstance(data, list):
        raise MalformedResponse("is not a list", value=data, field=f"{scope.route} answer")
    return [_entry(item, f"{scope.route} answer") for item in data]


async def get_dotfile(api: APIClient, path: str, scope: DotfileScope = _OWN) -> dict[str, str]:
    """The dotfile at *path*."""
    data = await api.fetch_json("GET", scope.route, params={"path": path, **scope.params()})
    return _entry(data, f"{scope.route} answer")


async def update_dotfile(
    api: APIClient, path: str, data: str, permission: str = "644", scope: DotfileScope = _OWN
) -> None:
    """Replace the content and mode of the dotfile at *path*."""
    body = {"path": path, "data": data, "permission": permission, **scope.params()}
    await api.fetch_json("PATCH", scope.route, json_body=body)


async def delete_dotfile(api: APIClient, path: str, scope: DotfileScope = _OWN) -> None:
    """Remove the dotfile at *path*."""
    await api.fetch_json("DELETE", scope.route, params={"path": path, **scope.params()})


async def get_bootstrap_script(api: APIClient) -> str:
    """The caller's stored bootstrap script (empty when none)."""
    data = await api.fetch_json("GET", "/user-config/bootstrap-script")
    if not isinstance(data, str):
        raise MalformedResponse("is not a string", value=data, field="bootstrap-script answer")
    return data


async def set_bootstrap_script(api: APIClient, script: str) -> None:
    """Store *script*; every new kernel of the caller runs it before the session's own."""
    await api.fetch_json("POST", "/user-config/bootstrap-script", json_body={"script": script})
