"""``/auth`` account routes: password login, sign-up, sign-out, password and name changes.

* ``POST /auth/authorize`` ``{"type": "keypair", "domain", "username",
  "password"}`` (anyone): trades a user's email or username and password for
  the user's keypair ``{"data": {"access_key", "secret_key", "role", "status"}}``.
* ``POST /auth/signup`` ``{"domain", "email", "password"}`` plus optional
  ``username``, ``full_name``, ``description`` (anyone, only with
  ``[manager] allow-signup``; 403 otherwise): a new active user with the
  ``user`` role in an active domain, a keypair under the ``default`` policy,
  and membership of the domain's ``default`` project when there is one;
  answers 201 ``{"access_key", "secret_key"}``.  A taken email or username is
  409 naming it.
* ``POST /auth/signout`` ``{"email", "password"}`` (the account's owner):
  deactivates the caller's user and every keypair of it.
* ``POST /auth/update-password`` ``{"old_password", "new_password",
  "new_password2"}`` and ``POST /auth/update-full-name`` ``{"email",
  "full_name"}``: the caller's own account.
* ``POST /auth/update-password-no-auth`` ``{"domain", "username",
  "current_password", "new_password"}`` (anyone, only when
  ``[manager] max-password-age`` is set): changes a password, expired or not,
  given the current one; answers 201 ``{"password_changed_at"}``.

Password rules: hashes are :func:`~bai.manager.models.identity.hash_password`'s,
computed off the event loop; every change stamps ``password_changed_at``.  A
password older than ``max-password-age`` makes ``authorize`` answer 401
``password-expired`` pointing at ``update-password-no-auth``.

Failed password checks in ``authorize`` and ``update-password-no-auth``
count towards the account's login block (:mod:`bai.manager.api.loginblock`);
while blocked, both answer 429 ``login-blocked`` with ``Retry-After`` and
check nothing.  A right password clears the count.  Wrong credentials never
say whether the user exists; nothing is written unless every check passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from typing import Annotated, Final, Literal

import msgspec
import sqlalchemy as sa
import trio
from quart import Blueprint, Response, current_app

from bai.common.errors import InvalidValue
from bai.manager.api.auth import auth_required, current_auth, public
from bai.manager.api.errors import ApiError, BadRequest, Conflict, Forbidden, Unauthorized
from bai.manager.api.helpers import current_ctx, json_response, read_json
from bai.manager.api.loginblock import LoginBlocker, LoginBlockerUnavailable
from bai.manager.db import Connection
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    generate_access_key,
    generate_secret_key,
    groups,
    hash_password,
    keypair_resource_policies,
    keypairs,
    user_resource_policies,
    users,
    verify_password,
)

__all__ = ["LoginBlocked", "PasswordExpired", "blueprint", "password_expires_at"]

log = logging.getLogger(__name__)

#: The policy and project a signed-up user gets, as in the original manager.
DEFAULT_NAME: Final = "default"

blueprint = Blueprint("accounts", __name__, url_prefix="/auth")


class PasswordExpired(ApiError):
    """The password is older than the configured maximum age (401)."""

    http_status = 401
    error_type = "password-expired"
    error_title = "Password has expired."


class LoginBlocked(ApiError):
    """Too many failed logins: the account's password login is blocked for a while (429)."""

    http_status = 429
    error_type = "login-blocked"
    error_title = "Too many failed login attempts."


_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Password = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


def password_expires_at(changed_at: dt.datetime, max_age: float | None) -> dt.datetime | None:
    """When a password set at *changed_at* expires under *max_age* seconds (None: never)."""
    return None if max_age is None else changed_at + dt.timedelta(seconds=max_age)


def _blocker() -> LoginBlocker:
    blocker = current_app.extensions["bai_login_blocker"]
    assert isinstance(blocker, LoginBlocker)
    return blocker


class _User(msgspec.Struct, frozen=True):
    uuid: uuid.UUID
    email: str
    password: str | None
    status: UserStatus
    role: UserRole
    changed_at: dt.datetime


async def _find_user(domain: str, username: str) -> _User | None:
    """The user of an active *domain* whose email (first) or username is *username*."""
    by_email_first = sa.case((users.c.email == username, 0), else_=1)
    row = (
        await current_ctx().db.fetch(
            sa.select(
                users.c.uuid,
                users.c.email,
                users.c.password,
                users.c.status,
                users.c.role,
                sa.func.coalesce(users.c.password_changed_at, users.c.created_at).label("changed"),
            )
            .select_from(users.join(domains, users.c.domain_name == domains.c.name))
            .where(
                sa.or_(users.c.email == username, users.c.username == username),
                users.c.domain_name == domain,
                domains.c.is_active.is_(True),
            )
            .order_by(by_email_first)
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    changed = row.changed
    if isinstance(changed, str):  # SQLite returns COALESCE of datetimes as text
        changed = dt.datetime.fromisoformat(changed)
    if changed.tzinfo is None:
        changed = changed.replace(tzinfo=dt.UTC)
    return _User(
        row.uuid, row.email, row.password, UserStatus(row.status), UserRole(row.role), changed
    )


_dummy_hash: str | None = None


async def _compare_password(password: str, stored: str | None) -> bool:
    """Check *password*, spending the same time when there is no stored hash."""
    global _dummy_hash
    if stored is None:
        if _dummy_hash is None:
            _dummy_hash = await trio.to_thread.run_sync(hash_password, "no such user")
        await trio.to_thread.run_sync(verify_password, password, _dummy_hash)
        return False
    return await trio.to_thread.run_sync(verify_password, password, stored)


async def _checked_login(domain: str, username: str, password: str) -> _User:
    """The user whose credentials these are, under the login block (module docs).

    Raises :class:`LoginBlocked` while blocked and :class:`Unauthorized` for
    wrong credentials (counted).  A store outage serves without blocking.
    """
    user = await _find_user(domain, username)
    key = str(user.uuid) if user is not None else f"{domain}\0{username.lower()}"
    blocker = _blocker()
    try:
        wait = await blocker.blocked_for(key)
    except LoginBlockerUnavailable as exc:
        log.warning("checking passwords without login blocks: %s", exc)
        wait = 0.0
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise LoginBlocked(
            f"{blocker.allowed} failed logins in a row: this account's password login is "
            f"blocked for {seconds} more seconds",
            headers={"Retry-After": str(seconds)},
        )
    ok = await _compare_password(password, None if user is None else user.password)
    try:
        if ok:
            await blocker.clear(key)
        else:
            await blocker.fail(key)
    except LoginBlockerUnavailable as exc:
        log.warning("a login was not counted for blocking: %s", exc)
    if not ok or user is None:
        raise Unauthorized("user credential mismatch")
    return user


def _max_password_age() -> float | None:
    age = current_ctx().config.manager.max_password_age
    return None if age is None else float(age)


class _Authorize(msgspec.Struct, kw_only=True):
    type: Literal["keypair"]
    domain: _Name
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    password: _Password


@blueprint.route("/authorize", methods=["POST"])
@public
async def authorize() -> Response:
    """``POST /auth/authorize``: a user's keypair for their password.

    Wrong credentials and disabled accounts are 401, an expired password 401
    ``password-expired``, a blocked account 429.
    """
    params = await read_json(_Authorize)
    user = await _checked_login(params.domain, params.username, params.password)
    if user.status is not UserStatus.ACTIVE:
        raise Unauthorized("the user account is not active")
    expires = password_expires_at(user.changed_at, _max_password_age())
    if expires is not None and expires <= dt.datetime.now(dt.UTC):
        raise PasswordExpired(
            f"the password expired on {expires.isoformat()}; set a new one with "
            "POST /auth/update-password-no-auth (backend.ai update-password-no-auth)"
        )
    keypair = (
        await current_ctx().db.fetch(
            sa.select(keypairs.c.access_key, keypairs.c.secret_key)
            .where(keypairs.c.user == user.uuid, keypairs.c.is_active.is_(True))
            .order_by(keypairs.c.is_admin.desc(), keypairs.c.created_at, keypairs.c.access_key)
            .limit(1)
        )
    ).first()
    if keypair is None:
        raise Unauthorized("the user has no active keypair")
    return json_response(
        {
            "data": {
                "access_key": keypair.access_key,
                "secret_key": keypair.secret_key,
                "role": str(user.role),
                "status": str(user.status),
            }
        }
    )


class _Signup(msgspec.Struct, kw_only=True):
    domain: _Name
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=64, pattern=r"^[^@\s]+@[^@\s]+$")]
    password: _Password
    username: _Name | None = None
    full_name: Annotated[str, msgspec.Meta(max_length=64)] = ""
    description: Annotated[str, msgspec.Meta(max_length=4096)] = ""


async def _named(conn: Connection, column: sa.Column[str], value: str) -> bool:
    return (await conn.execute(sa.select(column).where(column == value))).first() is not None


@blueprint.route("/signup", methods=["POST"])
@public
async def signup() -> Response:
    """``POST /auth/signup``: a new user and keypair (module docs)."""
    if not current_ctx().config.manager.allow_signup:
        raise Forbidden("sign-up is disabled on this manager")
    params = await read_json(_Signup)
    username = params.username or params.email
    hashed = await trio.to_thread.run_sync(hash_password, params.password)
    access_key, secret_key = generate_access_key(), generate_secret_key()
    try:
        async with current_ctx().db.begin() as conn:
            domain_ok = (
                await conn.execute(
                    sa.select(domains.c.name).where(
                        domains.c.name == params.domain, domains.c.is_active.is_(True)
                    )
                )
            ).first()
            if domain_ok is None:
                raise InvalidValue("no such active domain", value=params.domain, field="domain")
            if await _named(conn, users.c.email, params.email):
                raise Conflict(f"the email {params.email!r} is already registered")
            if await _named(conn, users.c.username, username):
                raise Conflict(f"the username {username!r} is already taken")
            user_id = uuid.uuid4()
            has_policy = await _named(conn, user_resource_policies.c.name, DEFAULT_NAME)
            await conn.execute(
                sa.insert(users).values(
                    uuid=user_id,
                    username=username,
                    email=params.email,
                    password=hashed,
                    need_password_change=False,
                    full_name=params.full_name,
                    description=params.description,
                    status=UserStatus.ACTIVE,
                    status_info="user-signup",
                    domain_name=params.domain,
                    role=UserRole.USER,
                    resource_policy=DEFAULT_NAME if has_policy else None,
                )
            )
            if not await _named(conn, keypair_resource_policies.c.name, DEFAULT_NAME):
                raise BadRequest("sign-up needs the keypair resource policy 'default'")
            await conn.execute(
                sa.insert(keypairs).values(
                    access_key=access_key,
                    secret_key=secret_key,
                    user_id=params.email,
                    user=user_id,
                    is_active=True,
                    is_admin=False,
                    resource_policy=DEFAULT_NAME,
                    rate_limit=1000,
                )
            )
            project = (
                await conn.execute(
                    sa.select(groups.c.id).where(
                        groups.c.domain_name == params.domain, groups.c.name == DEFAULT_NAME
                    )
                )
            ).first()
            if project is not None:
                await conn.execute(
                    sa.insert(association_groups_users).values(user_id=user_id, group_id=project.id)
                )
    except sa.exc.IntegrityError:
        # A concurrent sign-up took the email or username between the check and the insert.
        raise Conflict("the email or username was registered at the same time") from None
    log.info("user %s signed up in domain %s", params.email, params.domain)
    return json_response({"access_key": access_key, "secret_key": secret_key}, status=201)


async def _stored_password(user_id: uuid.UUID) -> str | None:
    query = sa.select(users.c.password).where(users.c.uuid == user_id)
    password: str | None = (await current_ctx().db.fetch(query)).scalar_one()
    return password


class _Signout(msgspec.Struct, kw_only=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: _Password


@blueprint.route("/signout", methods=["POST"])
@auth_required
async def signout() -> Response:
    """``POST /auth/signout``: deactivate the caller's own account and keypairs."""
    params = await read_json(_Signout)
    auth = current_auth()
    if params.email != auth.email:
        raise Forbidden("only the account's owner may sign it out")
    stored = await _stored_password(auth.user_id)
    if not await _compare_password(params.password, stored):
        raise InvalidValue("wrong password", field="password")
    async with current_ctx().db.begin() as conn:
        await conn.execute(
            sa.update(users)
            .where(users.c.uuid == auth.user_id)
            .values(status=UserStatus.INACTIVE, status_info="user-signout")
        )
        await conn.execute(
            sa.update(keypairs).where(keypairs.c.user == auth.user_id).values(is_active=False)
        )
    log.info("user %s signed out", auth.email)
    return json_response({})


async def _store_password(user_id: uuid.UUID, password: str) -> dt.datetime:
    hashed = await trio.to_thread.run_sync(hash_password, password)
    now = dt.datetime.now(dt.UTC)
    async with current_ctx().db.begin() as conn:
        await conn.execute(
            sa.update(users)
            .where(users.c.uuid == user_id)
            .values(password=hashed, need_password_change=False, password_changed_at=now)
        )
    return now


class _UpdatePassword(msgspec.Struct, kw_only=True):
    old_password: _Password
    new_password: _Password
    new_password2: _Password


@blueprint.route("/update-password", methods=["POST"])
@auth_required
async def update_password() -> Response:
    """``POST /auth/update-password``: the caller's new password, given the old one."""
    params = await read_json(_UpdatePassword)
    auth = current_auth()
    if params.new_password != params.new_password2:
        raise InvalidValue("does not match new_password", field="new_password2")
    stored = await _stored_password(auth.user_id)
    if not await _compare_password(params.old_password, stored):
        raise InvalidValue("wrong password", field="old_password")
    await _store_password(auth.user_id, params.new_password)
    return json_response({})


class _UpdatePasswordNoAuth(msgspec.Struct, kw_only=True):
    domain: _Name
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    current_password: _Password
    new_password: _Password


@blueprint.route("/update-password-no-auth", methods=["POST"])
@public
async def update_password_no_auth() -> Response:
    """``POST /auth/update-password-no-auth``: a new password for an expired one."""
    if _max_password_age() is None:
        raise BadRequest("passwords do not expire on this manager; use /auth/update-password")
    params = await read_json(_UpdatePasswordNoAuth)
    user = await _checked_login(params.domain, params.username, params.current_password)
    if user.status is not UserStatus.ACTIVE:
        raise Unauthorized("the user account is not active")
    if params.new_password == params.current_password:
        raise InvalidValue("must differ from the current password", field="new_password")
    changed_at = await _store_password(user.uuid, params.new_password)
    return json_response({"password_changed_at": changed_at.isoformat()}, status=201)


class _UpdateFullName(msgspec.Struct, kw_only=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    full_name: Annotated[str, msgspec.Meta(max_length=64)]


@blueprint.route("/update-full-name", methods=["POST"])
@auth_required
async def update_full_name() -> Response:
    """``POST /auth/update-full-name``: the caller's own full name."""
    params = await read_json(_UpdateFullName)
    auth = current_auth()
    if params.email != auth.email:
        raise Forbidden("only the account's owner may change its full name")
    async with current_ctx().db.begin() as conn:
        await conn.execute(
            sa.update(users).where(users.c.uuid == auth.user_id).values(full_name=params.full_name)
        )
    return json_response({})
