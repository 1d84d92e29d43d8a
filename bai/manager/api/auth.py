"""Who is calling: keypair authentication, roles, ``owner_access_key``, and ``/auth``.

Every route needs an authenticated caller unless its handler is marked
:func:`public`; :func:`auth_required` (any active user), :func:`admin_required`
(domain admins and superadmins) and :func:`superadmin_required` state the
level explicitly.  The app's request gate (``app.py``) checks it before the
handler runs; the handler reads the caller with :func:`current_auth`.

Authentication (:func:`authenticate`) follows ``bai.common.auth``: the
headers are parsed and the date checked without secrets, the access key's
secret is looked up, and the signature over the request target *as sent*
is verified (a target without a query is checked with and without a bare
``?``, which the ASGI server does not pass on).  Then the keypair, its user
and the user's domain must all be active; any failure is 401 with a message
that never says which secret was expected, and nothing about the account is
revealed before the signature holds.

A :class:`KeypairCache` keeps what the lookup read for a short time (one
second by default), so that a busy client costs one database read per
second instead of one per request: a keypair that is deactivated, or whose
role or rate limit changes, is treated the new way within that time.

Roles: the effective role is the user's role, except that an admin's or
superadmin's keypair that is not flagged ``is_admin`` acts as a plain user
(a keypair flag can lower privileges, never raise them).  ``monitor`` users
may call user-level routes.

``owner_access_key`` (query string, or a body field via :func:`resolve_owner`)
lets admins act on another keypair's resources: superadmins on any keypair,
domain admins on keypairs of users in their own domain who are not
superadmins; anyone else gets 403 unless they name their own key.

The password and account routes of ``/auth`` are :mod:`bai.manager.api.accounts`.

``/auth/ssh-keypair`` manages the caller's own SSH keypair
(:mod:`bai.manager.sshkeys`), with the methods the original manager routes:
``GET`` shows the public key (generating a pair on first use), ``PATCH``
generates a new pair, ``POST`` stores an uploaded ``pubkey``/``privkey``
(400 naming the field when they are not one unencrypted OpenSSH pair);
``PATCH`` and ``POST`` answer both halves.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Final, TypeVar

import msgspec
import sqlalchemy as sa
import trio
from quart import Blueprint, Response, g, request

from bai.common.agent_api import MAX_SSH_PRIVATE_KEY, MAX_SSH_PUBLIC_KEY
from bai.common.auth import (
    HeaderSource,
    SignatureMismatch,
    SignedRequest,
    read_signed_request,
    verify_signature,
)
from bai.common.errors import InvalidValue
from bai.common.types import AccessKey
from bai.manager.api.errors import Forbidden, NotFound, Unauthorized
from bai.manager.api.helpers import current_ctx, json_response, read_json, read_params
from bai.manager.db import Database
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    keypairs,
    users,
)
from bai.manager.sshkeys import check_keypair, ensure_keypair, generate_keypair, store_keypair

__all__ = [
    "AUTH_CACHE_TTL",
    "Access",
    "AuthContext",
    "KeypairCache",
    "Principal",
    "access_of",
    "admin_required",
    "auth_required",
    "authenticate",
    "blueprint",
    "current_auth",
    "load_principal",
    "optional_auth",
    "public",
    "require_access",
    "resolve_owner",
    "superadmin_required",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds :class:`KeypairCache` trusts what it read by default.
AUTH_CACHE_TTL: Final = 1.0


class Access(enum.IntEnum):
    """Who may call a route, from everyone to superadmins only."""

    PUBLIC = 0
    USER = 1
    ADMIN = 2
    SUPERADMIN = 3


_ACCESS_ATTR: Final = "_bai_access"


def _marker(level: Access) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, _ACCESS_ATTR, level)
        return fn

    return mark


#: Marks a handler callable without credentials (credentials sent anyway are still checked).
public = _marker(Access.PUBLIC)
#: Marks a handler for any authenticated user (also the default for unmarked handlers).
auth_required = _marker(Access.USER)
#: Marks a handler for domain admins and superadmins.
admin_required = _marker(Access.ADMIN)
#: Marks a handler for superadmins only.
superadmin_required = _marker(Access.SUPERADMIN)


def access_of(view: Callable[..., Any] | None) -> Access:
    """The level a handler was marked with; unmarked handlers need a user."""
    level = getattr(view, _ACCESS_ATTR, Access.USER)
    return level if isinstance(level, Access) else Access.USER


@dataclass(frozen=True, slots=True)
class Principal:
    """A keypair and its owner, as authorization sees them.

    ``role`` is the effective role (module docs); ``rate_limit`` is the
    keypair's requests per rate-limit window.
    """

    access_key: AccessKey
    user_id: uuid.UUID
    email: str
    role: UserRole
    domain_name: str
    resource_policy: str
    rate_limit: int

    @property
    def is_superadmin(self) -> bool:
        return self.role is UserRole.SUPERADMIN

    @property
    def is_admin(self) -> bool:
        """Domain admin or superadmin."""
        return self.role in (UserRole.ADMIN, UserRole.SUPERADMIN)

    @property
    def access(self) -> Access:
        """The highest route level this principal may call."""
        if self.is_superadmin:
            return Access.SUPERADMIN
        return Access.ADMIN if self.is_admin else Access.USER


@dataclass(frozen=True, slots=True)
class AuthContext(Principal):
    """The authenticated caller of a request, and ``owner``: whose resources it targets.

    ``owner`` is the caller itself unless an admin passed ``owner_access_key``.
    Scope keypair-owned things (sessions, vfolders) by ``owner.access_key``.
    """

    owner: Principal


@dataclass(frozen=True, slots=True)
class _KeypairRecord:
    principal: Principal
    secret_key: str
    usable: str | None  # why the account cannot be used, or None
    auth: AuthContext  # the principal calling for itself; immutable, so shared by requests


_KEYPAIR_QUERY: Final = (
    sa.select(
        keypairs.c.access_key,
        keypairs.c.secret_key,
        keypairs.c.is_active,
        keypairs.c.is_admin,
        keypairs.c.rate_limit,
        keypairs.c.resource_policy,
        users.c.uuid,
        users.c.email,
        users.c.role,
        users.c.status,
        users.c.domain_name,
        domains.c.is_active.label("domain_active"),
    )
    .select_from(
        keypairs.join(users, keypairs.c.user == users.c.uuid).join(
            domains, users.c.domain_name == domains.c.name
        )
    )
    .where(keypairs.c.access_key == sa.bindparam("access_key"))
)


def _effective_role(role: UserRole, keypair_is_admin: bool) -> UserRole:
    if role in (UserRole.ADMIN, UserRole.SUPERADMIN) and not keypair_is_admin:
        return UserRole.USER
    return role


async def _load(db: Database, access_key: str) -> _KeypairRecord | None:
    row = (await db.fetch(_KEYPAIR_QUERY, {"access_key": access_key})).first()
    if row is None:
        return None
    role = UserRole(row.role)
    principal = Principal(
        access_key=AccessKey(row.access_key),
        user_id=row.uuid,
        email=row.email,
        role=_effective_role(role, bool(row.is_admin)),
        domain_name=row.domain_name,
        resource_policy=row.resource_policy,
        rate_limit=int(row.rate_limit),
    )
    usable: str | None = None
    if not row.is_active:
        usable = "the keypair is inactive"
    elif UserStatus(row.status) is not UserStatus.ACTIVE:
        usable = "the user account is not active"
    elif not row.domain_active:
        usable = "the user's domain is inactive"
    return _KeypairRecord(principal, row.secret_key, usable, _acting_for_itself(principal))


def _acting_for_itself(principal: Principal) -> AuthContext:
    fields = {name: getattr(principal, name) for name in Principal.__dataclass_fields__}
    return AuthContext(**fields, owner=principal)


async def load_principal(db: Database, access_key: str) -> Principal | None:
    """The principal of *access_key*, or ``None`` when no such keypair exists."""
    record = await _load(db, access_key)
    return None if record is None else record.principal


class KeypairCache:
    """Keypair records read for authentication, each reused for *ttl* seconds.

    Only keypairs that exist are kept (at most *max_entries*, the oldest
    dropped first), so made-up access keys cannot fill it and a new keypair
    works at once.  A *ttl* of 0 turns caching off.
    """

    def __init__(self, ttl: float = AUTH_CACHE_TTL, *, max_entries: int = 10_000) -> None:
        if not ttl >= 0:
            raise InvalidValue("must be zero or more seconds", value=ttl, field="ttl")
        if max_entries < 1:
            raise InvalidValue("must be at least 1", value=max_entries, field="max_entries")
        self.ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, _KeypairRecord]] = {}

    async def lookup(self, db: Database, access_key: str) -> _KeypairRecord | None:
        now = trio.current_time()
        cached = self._entries.get(access_key)
        if cached is not None and cached[0] > now:
            # A cancellation point without a trip through the scheduler: this runs per request.
            await trio.lowlevel.checkpoint_if_cancelled()
            return cached[1]
        record = await _load(db, access_key)
        if record is not None and self.ttl > 0:
            self._entries.pop(access_key, None)
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[access_key] = (now + self.ttl, record)
        return record


async def authenticate(
    db: Database,
    cache: KeypairCache,
    *,
    method: str,
    raw_target: str,
    headers: HeaderSource | None = None,
) -> AuthContext:
    """Authenticate a request (module docs); ``owner`` is the caller.

    *raw_target* is the request target as sent and *headers* its headers
    (default: the current request's); *cache* holds recent look-ups.

    Raises the :mod:`bai.common.auth` errors for malformed or skewed headers
    and wrong signatures, and :class:`~bai.manager.api.errors.Unauthorized`
    for unknown access keys and disabled accounts.
    """
    signed = read_signed_request(
        method=method, path=raw_target, headers=request.headers if headers is None else headers
    )
    record = await cache.lookup(db, signed.access_key)
    if record is None:
        raise Unauthorized("unknown access key")
    # Body-signing API versions are refused by version negotiation before this point.
    _verify_as_sent(signed, record.secret_key)
    if record.usable is not None:
        raise Unauthorized(record.usable)
    return record.auth


def _verify_as_sent(signed: SignedRequest, secret_key: str) -> None:
    """:func:`verify_signature` over the request target the client sent.

    The ASGI server splits the target into a path and a query string, so
    ``/x?`` arrives exactly as ``/x`` does: a target without a query may have
    been sent, and signed, with a bare ``?``.  Both forms name the same
    request with the same (empty) query, so accepting a signature over either
    lets it authorize nothing it did not already.
    """
    try:
        verify_signature(signed, secret_key)
    except SignatureMismatch:
        if "?" in signed.inputs.path:
            raise
        bare = replace(signed.inputs, path=signed.inputs.path + "?")
        verify_signature(replace(signed, inputs=bare), secret_key)


def require_access(auth: AuthContext, level: Access) -> None:
    """Raise :class:`~bai.manager.api.errors.Forbidden` unless *auth* may call *level*."""
    if auth.access < level:
        needed = {Access.ADMIN: "admin", Access.SUPERADMIN: "superadmin"}.get(level, "user")
        raise Forbidden(f"this needs {needed} privileges")


async def resolve_owner(
    auth: AuthContext, owner_access_key: str | None, *, field: str = "owner_access_key"
) -> AuthContext:
    """*auth* acting for *owner_access_key* (rules in the module docs).

    ``None`` or the caller's own key returns *auth* unchanged.  A non-admin
    naming another key gets :class:`Forbidden` (whether or not it exists);
    an admin naming an unknown key gets :class:`InvalidValue` for *field*;
    a domain admin naming a key outside the domain, or a superadmin's key,
    gets :class:`Forbidden`.
    """
    if owner_access_key is None or owner_access_key == auth.access_key:
        return auth
    if not auth.is_admin:
        raise Forbidden("only admins may act for another access key")
    owner = await load_principal(current_ctx().db, owner_access_key)
    if owner is None:
        raise InvalidValue("unknown access key", value=owner_access_key, field=field)
    if not auth.is_superadmin and (owner.domain_name != auth.domain_name or owner.is_superadmin):
        raise Forbidden("domain admins may only act for users of their own domain")
    return replace(auth, owner=owner)


def current_auth() -> AuthContext:
    """The authenticated caller of the current request.

    Raises :class:`~bai.manager.api.errors.Unauthorized` in a :func:`public`
    handler called without credentials.
    """
    auth = g.get("bai_auth")
    if not isinstance(auth, AuthContext):
        raise Unauthorized("this needs credentials")
    return auth


def optional_auth() -> AuthContext | None:
    """The authenticated caller, or ``None`` for a public call without credentials."""
    auth = g.get("bai_auth")
    return auth if isinstance(auth, AuthContext) else None


# ---------------------------------------------------------------------------
# /auth routes
# ---------------------------------------------------------------------------

blueprint = Blueprint("auth", __name__, url_prefix="/auth")


class _Echo(msgspec.Struct, kw_only=True):
    echo: str


@blueprint.route("", methods=["GET", "POST"])
@blueprint.route("/test", methods=["GET", "POST"])
@auth_required
async def test() -> Response:
    """``GET|POST /auth[/test]``: check credentials; echoes ``echo``."""
    params = await read_params(_Echo)
    return json_response({"authorized": "yes", "echo": params.echo})


class _RoleQuery(msgspec.Struct, kw_only=True):
    group: uuid.UUID | None = None


@blueprint.route("/role", methods=["GET"])
@auth_required
async def role() -> Response:
    """``GET /auth/role``: the caller's global, domain and (with ``group``) project role."""
    auth = current_auth()
    params = await read_params(_RoleQuery)
    group_role: str | None = None
    if params.group is not None:
        member = await current_ctx().db.fetch(
            sa.select(association_groups_users.c.group_id).where(
                association_groups_users.c.group_id == params.group,
                association_groups_users.c.user_id == auth.user_id,
            )
        )
        if not member:
            raise NotFound("no such project, or you are not a member of it")
        group_role = "user"
    return json_response(
        {
            "global_role": "superadmin" if auth.is_superadmin else "user",
            "domain_role": "admin" if auth.is_admin else "user",
            "group_role": group_role,
        }
    )


# ``/auth/ssh-keypair``: methods as the original manager routes them (the spec lists
# ``pubkey``/``privkey`` under POST): PATCH generates, POST uploads.


@blueprint.route("/ssh-keypair", methods=["GET"])
@auth_required
async def get_ssh_keypair() -> Response:
    """``GET /auth/ssh-keypair``: the caller's SSH public key, generated on first use.

    The private half is never shown here; sessions get it as ``/home/work/id_container``.
    """
    pair = await ensure_keypair(current_ctx().db, current_auth().access_key)
    return json_response({"ssh_public_key": pair.public_key})


@blueprint.route("/ssh-keypair", methods=["PATCH"])
@auth_required
async def generate_ssh_keypair() -> Response:
    """``PATCH /auth/ssh-keypair``: replace the caller's SSH keypair with a new one
    (ed25519); answers both halves.  Sessions started later get the new pair."""
    pair = await generate_keypair()
    await store_keypair(current_ctx().db, current_auth().access_key, pair)
    return json_response({"ssh_public_key": pair.public_key, "ssh_private_key": pair.private_key})


class _SSHKeypairUpload(msgspec.Struct, kw_only=True):
    # Bounds with room for white space that check_keypair strips; it checks the exact ones.
    pubkey: Annotated[str, msgspec.Meta(max_length=2 * MAX_SSH_PUBLIC_KEY)]
    privkey: Annotated[str, msgspec.Meta(max_length=2 * MAX_SSH_PRIVATE_KEY)]


@blueprint.route("/ssh-keypair", methods=["POST"])
@auth_required
async def upload_ssh_keypair() -> Response:
    """``POST /auth/ssh-keypair`` with ``pubkey`` and ``privkey``: store the caller's own
    pair (OpenSSH text, unencrypted, the two halves of one key; 400 naming the field
    otherwise, see :func:`bai.manager.sshkeys.check_keypair`); answers both halves."""
    params = await read_json(_SSHKeypairUpload)
    pair = await check_keypair(params.pubkey, params.privkey)
    await store_keypair(current_ctx().db, current_auth().access_key, pair)
    return json_response({"ssh_public_key": pair.public_key, "ssh_private_key": pair.private_key})
