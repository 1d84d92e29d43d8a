"""Accounts: signing in with a password, changing it, signing up and out (``/auth/*``).

bai's client always signs requests with a keypair (``BACKEND_ENDPOINT_TYPE=api``);
there is no cookie session on this side.  Signing in with a password
therefore means trading the email (or username) and password for the
user's keypair through ``POST /auth/authorize`` (``type: "keypair"``), which
:meth:`Auth.login` does; ``bai login`` then writes that keypair into a
``client.env`` (:mod:`bai.client.envfile`) and ``bai logout`` deletes it.
The official client's session mode (``/server/login`` on a console server)
is served by bai's webserver, not by this module.

Routes that work without a keypair (``authorize``, ``signup``,
``update-password-no-auth``) are sent unsigned; the others are signed with
the configured keypair.  Bodies are the ones the spec and the official
client's ``Auth`` send.  Failures raise the typed
:class:`~bai.client.exceptions.BackendAPIError` (wrong password: 401
:class:`~bai.client.exceptions.Unauthorized`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bai.client.exceptions import MalformedResponse
from bai.client.request import APIClient

__all__ = ["Auth", "Credentials"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """The keypair a password sign-in answers, with the user's role and status."""

    access_key: str
    secret_key: str = field(repr=False)
    role: str
    status: str


def _answer(data: Any, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MalformedResponse("is not a JSON object", value=data, field=what)
    return data


class Auth:
    """The ``/auth`` account routes."""

    @classmethod
    async def login(
        cls, api: APIClient, user_id: str, password: str, *, domain: str = "default"
    ) -> Credentials:
        """``POST /auth/authorize``: the keypair of the user *user_id* (email or
        username) in *domain*, if *password* is theirs.

        Refused with 401 for wrong credentials, an inactive account, a blocked
        account (too many failures) or an expired password (change it with
        :meth:`update_password_no_auth` first).
        """
        body = {"type": "keypair", "domain": domain, "username": user_id, "password": password}
        data = _answer(
            await api.fetch_json("POST", "/auth/authorize", json_body=body, anonymous=True),
            "/auth/authorize",
        )
        keys = data.get("data")
        if not isinstance(keys, dict) or not all(
            isinstance(keys.get(k), str) and keys.get(k) for k in ("access_key", "secret_key")
        ):
            raise MalformedResponse("has no keypair", value=data, field="/auth/authorize")
        return Credentials(
            access_key=keys["access_key"],
            secret_key=keys["secret_key"],
            role=str(keys.get("role") or ""),
            status=str(keys.get("status") or ""),
        )

    @classmethod
    async def update_password(
        cls, api: APIClient, old_password: str, new_password: str, new_password2: str
    ) -> dict[str, Any]:
        """Change the caller's own password (*new_password2* repeats the new one)."""
        body = {
            "old_password": old_password,
            "new_password": new_password,
            "new_password2": new_password2,
        }
        return _answer(
            await api.fetch_json("POST", "/auth/update-password", json_body=body),
            "/auth/update-password",
        )

    @classmethod
    async def update_password_no_auth(
        cls, api: APIClient, domain: str, user_id: str, current_password: str, new_password: str
    ) -> dict[str, Any]:
        """Change an *expired* password without a keypair (the only way to sign in
        again once it has expired)."""
        body = {
            "domain": domain,
            "username": user_id,
            "current_password": current_password,
            "new_password": new_password,
        }
        return _answer(
            await api.fetch_json(
                "POST", "/auth/update-password-no-auth", json_body=body, anonymous=True
            ),
            "/auth/update-password-no-auth",
        )

    @classmethod
    async def update_full_name(cls, api: APIClient, email: str, full_name: str) -> dict[str, Any]:
        """Change the caller's full name."""
        return _answer(
            await api.fetch_json(
                "POST",
                "/auth/update-full-name",
                json_body={"email": email, "full_name": full_name},
            ),
            "/auth/update-full-name",
        )

    @classmethod
    async def signup(
        cls,
        api: APIClient,
        domain: str,
        email: str,
        password: str,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create an account for oneself (when the manager allows sign-up); *extra*
        carries optional fields such as ``username`` and ``full_name``."""
        body = {**dict(extra or {}), "domain": domain, "email": email, "password": password}
        return _answer(
            await api.fetch_json("POST", "/auth/signup", json_body=body, anonymous=True),
            "/auth/signup",
        )

    @classmethod
    async def signout(cls, api: APIClient, email: str, password: str) -> dict[str, Any]:
        """Deactivate the caller's own account (it needs the password again)."""
        return _answer(
            await api.fetch_json(
                "POST", "/auth/signout", json_body={"email": email, "password": password}
            ),
            "/auth/signout",
        )

    @classmethod
    async def role(cls, api: APIClient, group: str | None = None) -> dict[str, Any]:
        """``GET /auth/role``: the caller's global, domain and (in *group*) project role."""
        return _answer(
            await api.fetch_json("GET", "/auth/role", params={"group": group}), "/auth/role"
        )
