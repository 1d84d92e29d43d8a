"""Who may use the cluster: domains, projects, users, keypairs and their resource policies.

Also the formats of the credentials kept in these tables: access keys
(``AKIA`` + 16 upper-case letters and digits), secret keys (40 letters and
digits) and password hashes (PBKDF2-HMAC-SHA256, salted, self-describing).

Limits in the resource policies follow the spec's conventions: an
``idle_timeout``, ``max_session_lifetime``, ``max_vfolder_count`` or a size
of 0 means "no limit"; ``max_pending_session_count`` and
``max_pending_session_resource_slots`` are ``NULL`` for "no limit".
``total_resource_slots`` of a keypair policy is read with its
``default_for_unspecified``; those of domains and projects name per-slot
caps, and a slot they do not name is not capped.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import string
from typing import Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import DefaultForUnspecified
from bai.manager.models.base import (
    JSONType,
    ResourceSlotType,
    UTCDateTime,
    enum_type,
    metadata,
    new_uuid,
    utcnow,
)

__all__ = [
    "ACCESS_KEY_PREFIX",
    "PASSWORD_HASH_ITERATIONS",
    "UserRole",
    "UserStatus",
    "association_groups_users",
    "domains",
    "generate_access_key",
    "generate_secret_key",
    "groups",
    "hash_password",
    "keypair_resource_policies",
    "keypairs",
    "project_resource_policies",
    "user_resource_policies",
    "users",
    "verify_password",
]


class UserRole(enum.StrEnum):
    """What a user may do: everything, their domain, their own things, or watch."""

    SUPERADMIN = "superadmin"
    ADMIN = "admin"
    USER = "user"
    MONITOR = "monitor"


class UserStatus(enum.StrEnum):
    """Whether a user account may be used."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    DELETED = "deleted"
    BEFORE_VERIFICATION = "before-verification"


domains = sa.Table(
    "domains",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("is_active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("modified_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column("total_resource_slots", ResourceSlotType, nullable=False, default=dict),
    sa.Column("allowed_vfolder_hosts", JSONType, nullable=False, default=list),
    sa.Column("allowed_docker_registries", JSONType, nullable=False, default=list),
    sa.Column("integration_id", sa.String(512), nullable=True),
    # The domain's dotfiles, ``[{"path", "perm", "data"}]`` (``bai.manager.dotfiles``).
    sa.Column("dotfiles", JSONType, nullable=False, default=list),
)

keypair_resource_policies = sa.Table(
    "keypair_resource_policies",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column(
        "default_for_unspecified",
        enum_type(DefaultForUnspecified, "default_for_unspecified"),
        nullable=False,
        default=DefaultForUnspecified.LIMITED,
    ),
    sa.Column("total_resource_slots", ResourceSlotType, nullable=False, default=dict),
    sa.Column("max_session_lifetime", sa.Integer, nullable=False, default=0),
    sa.Column("max_concurrent_sessions", sa.Integer, nullable=False, default=30),
    sa.Column("max_pending_session_count", sa.Integer, nullable=True),
    sa.Column("max_pending_session_resource_slots", ResourceSlotType, nullable=True),
    sa.Column("max_containers_per_session", sa.Integer, nullable=False, default=1),
    sa.Column("idle_timeout", sa.BigInteger, nullable=False, default=0),
    sa.Column("allowed_vfolder_hosts", JSONType, nullable=False, default=list),
    sa.Column("max_vfolder_count", sa.Integer, nullable=False, default=0),
    sa.Column("max_vfolder_size", sa.BigInteger, nullable=False, default=0),
)

user_resource_policies = sa.Table(
    "user_resource_policies",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("max_vfolder_count", sa.Integer, nullable=False, default=0),
    sa.Column("max_quota_scope_size", sa.BigInteger, nullable=False, default=0),
)

project_resource_policies = sa.Table(
    "project_resource_policies",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("max_vfolder_count", sa.Integer, nullable=False, default=0),
    sa.Column("max_quota_scope_size", sa.BigInteger, nullable=False, default=0),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column(
        "domain_name",
        sa.String(64),
        sa.ForeignKey("domains.name", onupdate="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("is_active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("modified_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column("total_resource_slots", ResourceSlotType, nullable=False, default=dict),
    sa.Column("allowed_vfolder_hosts", JSONType, nullable=False, default=list),
    sa.Column("integration_id", sa.String(512), nullable=True),
    sa.Column(
        "resource_policy",
        sa.String(256),
        sa.ForeignKey("project_resource_policies.name", onupdate="CASCADE"),
        nullable=True,
    ),
    # The project's dotfiles, ``[{"path", "perm", "data"}]`` (``bai.manager.dotfiles``).
    sa.Column("dotfiles", JSONType, nullable=False, default=list),
    sa.UniqueConstraint("name", "domain_name"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("uuid", sa.Uuid, primary_key=True, default=new_uuid),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("email", sa.String(64), nullable=False, unique=True),
    # A hash from hash_password(); NULL disables password login (keypairs still work).
    sa.Column("password", sa.String(256), nullable=True),
    sa.Column("need_password_change", sa.Boolean, nullable=False, default=False),
    # When ``password`` was last set (NULL: count from ``created_at``); see ``max_password_age``.
    sa.Column("password_changed_at", UTCDateTime, nullable=True, default=utcnow),
    sa.Column("full_name", sa.String(64), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column(
        "status", enum_type(UserStatus, "user_status"), nullable=False, default=UserStatus.ACTIVE
    ),
    sa.Column("status_info", sa.String(64), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("modified_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column(
        "domain_name",
        sa.String(64),
        sa.ForeignKey("domains.name", onupdate="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("role", enum_type(UserRole, "user_role"), nullable=False, default=UserRole.USER),
    sa.Column(
        "resource_policy",
        sa.String(256),
        sa.ForeignKey("user_resource_policies.name", onupdate="CASCADE"),
        nullable=True,
    ),
    sa.Column("allowed_client_ip", JSONType, nullable=True),
    # The user's dotfiles, ``[{"path", "perm", "data"}]``, and the shell script every new
    # kernel of theirs runs before the session's own (``bai.manager.dotfiles``).
    sa.Column("dotfiles", JSONType, nullable=False, default=list),
    sa.Column("bootstrap_script", sa.Text, nullable=False, default=""),
)

association_groups_users = sa.Table(
    "association_groups_users",
    metadata,
    sa.Column(
        "user_id",
        sa.Uuid,
        sa.ForeignKey("users.uuid", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "group_id",
        sa.Uuid,
        sa.ForeignKey("groups.id", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)

keypairs = sa.Table(
    "keypairs",
    metadata,
    sa.Column("access_key", sa.String(20), primary_key=True),
    sa.Column("secret_key", sa.String(40), nullable=False),
    # The owner's email, as the spec's KeyPair.user_id reports it.
    sa.Column("user_id", sa.String(256), nullable=False, index=True),
    sa.Column(
        "user",
        sa.Uuid,
        sa.ForeignKey("users.uuid", onupdate="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("is_active", sa.Boolean, nullable=False, default=True),
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    sa.Column("modified_at", UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column("last_used", UTCDateTime, nullable=True),
    # Requests allowed per rolling 15-minute window.
    sa.Column("rate_limit", sa.Integer, nullable=False, default=30000),
    sa.Column("num_queries", sa.BigInteger, nullable=False, default=0),
    sa.Column(
        "resource_policy",
        sa.String(256),
        sa.ForeignKey("keypair_resource_policies.name", onupdate="CASCADE"),
        nullable=False,
    ),
    sa.Column("ssh_public_key", sa.Text, nullable=True),
    sa.Column("ssh_private_key", sa.Text, nullable=True),
)


ACCESS_KEY_PREFIX: Final = "AKIA"
_ACCESS_KEY_ALPHABET: Final = string.ascii_uppercase + string.digits
_SECRET_KEY_ALPHABET: Final = string.ascii_letters + string.digits


def generate_access_key() -> str:
    """A new random access key: ``AKIA`` and 16 upper-case letters or digits (~82 bits)."""
    return ACCESS_KEY_PREFIX + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(16))


def generate_secret_key() -> str:
    """A new random secret key: 40 letters or digits (~238 bits), safe to paste in a shell."""
    return "".join(secrets.choice(_SECRET_KEY_ALPHABET) for _ in range(40))


_HASH_SCHEME: Final = "pbkdf2_sha256"
#: PBKDF2 iterations for new hashes (OWASP's 2023 figure for HMAC-SHA256).
PASSWORD_HASH_ITERATIONS: Final = 600_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, iterations: int = PASSWORD_HASH_ITERATIONS) -> str:
    """Hash *password* for the ``users.password`` column.

    The result is ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` (base64 parts),
    so :func:`verify_password` keeps working if the iteration count is raised
    later.  Takes ~0.1 s at the default cost: call it off the event loop.
    """
    if not password:
        raise InvalidValue("a password must not be empty", value=password, field="password")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{_HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether *password* matches a hash made by :func:`hash_password`.

    A ``NULL`` or malformed stored hash matches nothing.  The comparison takes
    the same time wherever the hashes differ.
    """
    if not stored:
        return False
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != _HASH_SCHEME or not parts[1].isdigit():
        return False
    iterations = int(parts[1])
    if not 1 <= iterations <= 100 * PASSWORD_HASH_ITERATIONS:
        return False
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)
