"""The pure rules of virtual folders: names, permissions, limits.  No I/O.

Names (:func:`check_name`): 1 to :data:`MAX_NAME_LENGTH` characters of
letters, digits (any script), ``_``, ``-`` and ``.``; no slash, space or
control character; not one of :data:`RESERVED_NAMES` (``.``, ``..``, ``_``,
``.bai`` and the dot-files a kernel's home needs, which an auto-mounted
folder would hide) nor a shell start-up file (``.bashrc``,
``.zprofile``...).  ``.ssh`` is allowed: the spec's way to log in with
one's own key is a ``.ssh`` folder holding ``authorized_keys``.  A name
starting with a dot is a *private* folder: only users own one, it is
mounted into each of their sessions, and it is never invited or shared.

Permissions (:class:`Permission`): ``ro`` < ``rw`` < ``wd``; a need is met by
that level or a higher one.  :func:`effective_permission` is the caller's
level on a folder, the highest of what applies:

* the owner of a user folder: ``wd``;
* a user with a per-user grant (an accepted invitation, or an admin's
  share of a project folder): the grant; for a project folder the grant
  replaces the folder's member permission, so a share can lower it;
* a member of the owning project (no grant): the folder's ``permission``;
* a domain admin, for project folders of their domain: ``wd``; a
  superadmin, for every folder: ``wd``.

Escalation cannot happen through invitations or shares: only the owner of
a user folder (or an admin acting on it) invites, only admins share, and an
invitation never grants more than its inviter holds (:func:`check_grant`).

Limits: a policy value of 0 means "no limit" (the spec's convention);
:func:`check_count` and :func:`effective_quota` apply ``max_vfolder_count``
and ``max_vfolder_size``.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from typing import Final, Literal

from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize
from bai.manager.vfolders.errors import (
    InvalidFolderInput,
    VFolderLimitExceeded,
    VFolderPermissionDenied,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "RESERVED_NAMES",
    "Permission",
    "PermissionName",
    "check_count",
    "check_grant",
    "check_name",
    "effective_permission",
    "effective_quota",
    "is_private_name",
    "max_size_mib",
    "parse_quota",
    "permission_allows",
]

#: The longest folder name, in characters.
MAX_NAME_LENGTH: Final = 64

#: Names no folder may have: path tricks, the API's ``_`` segment, bai's own dot-folder,
#: and dot-files of a kernel's home that an auto-mounted folder would cover.
RESERVED_NAMES: Final = frozenset(
    {
        ".",
        "..",
        "_",
        ".bai",
        ".jupyter",
        ".terminfo",
        ".tmux.conf",
    }
)

# Shell start-up files (.bashrc, .zshrc, .bash_profile...): a folder there breaks the shell.
_RESERVED_PATTERNS: Final = (
    re.compile(r"^\.[a-z0-9]+rc$"),
    re.compile(r"^\.[a-z0-9]+_profile$"),
    re.compile(r"^\.profile$"),
)
_NAME_CHARS: Final = re.compile(r"^[\w.-]+$")

PermissionName = Literal["ro", "rw", "wd"]


class Permission(enum.IntEnum):
    """A permission level; higher includes lower."""

    RO = 1
    RW = 2
    WD = 3

    @classmethod
    def of(cls, name: str) -> Permission:
        """The level of ``"ro"``, ``"rw"`` or ``"wd"``; ValueError for anything else."""
        try:
            return _BY_NAME[name]
        except KeyError:
            raise ValueError(f"not a folder permission: {name!r}") from None

    @property
    def label(self) -> PermissionName:
        """``"ro"``, ``"rw"`` or ``"wd"``."""
        return _NAMES[self]


_BY_NAME: Final = {"ro": Permission.RO, "rw": Permission.RW, "wd": Permission.WD}
_NAMES: Final[dict[Permission, PermissionName]] = {
    Permission.RO: "ro",
    Permission.RW: "rw",
    Permission.WD: "wd",
}


def is_private_name(name: str) -> bool:
    """Whether *name* is a private, auto-mounted folder name (it starts with a dot)."""
    return name.startswith(".")


def check_name(name: object, *, field: str = "name") -> str:
    """Return *name* if it is a valid folder name (module docs); else raise naming *field*."""
    if not isinstance(name, str):
        raise InvalidFolderInput("a folder name must be a string", field=field, value=name)
    if not name:
        raise InvalidFolderInput("a folder name must not be empty", field=field, value=name)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidFolderInput(
            f"a folder name is at most {MAX_NAME_LENGTH} characters", field=field, value=name
        )
    if "/" in name or "\\" in name:
        raise InvalidFolderInput("a folder name must not contain a slash", field=field, value=name)
    if not _NAME_CHARS.match(name) or any(
        unicodedata.category(char).startswith(("C", "Z")) for char in name
    ):
        raise InvalidFolderInput(
            "a folder name may hold only letters, digits, '_', '-' and '.'",
            field=field,
            value=name,
        )
    if name in RESERVED_NAMES or any(pattern.match(name) for pattern in _RESERVED_PATTERNS):
        raise InvalidFolderInput("this folder name is reserved", field=field, value=name)
    return name


def permission_allows(have: Permission | str, need: Permission | str) -> bool:
    """Whether a caller holding *have* may do what needs *need*."""
    have_level = have if isinstance(have, Permission) else Permission.of(have)
    need_level = need if isinstance(need, Permission) else Permission.of(need)
    return have_level >= need_level


def effective_permission(
    *,
    ownership_type: Literal["user", "group"],
    folder_permission: Permission,
    is_owner: bool,
    grant: Permission | None,
    is_member: bool,
    is_domain_admin: bool,
    is_superadmin: bool,
) -> Permission | None:
    """The caller's level on a folder (module docs), or ``None`` when the caller has none.

    *is_owner* is for user folders (the caller owns it); *grant* is the
    caller's per-user permission row; *is_member* says the caller belongs to
    the owning project; *is_domain_admin* that the caller is an admin of the
    folder's domain.
    """
    levels: list[Permission] = []
    if is_superadmin:
        levels.append(Permission.WD)
    if ownership_type == "user":
        if is_owner:
            levels.append(Permission.WD)
        if grant is not None:
            levels.append(grant)
    else:
        if is_domain_admin:
            levels.append(Permission.WD)
        if grant is not None:
            levels.append(grant)
        elif is_member:
            levels.append(folder_permission)
    return max(levels) if levels else None


def check_grant(
    granted: Permission,
    *,
    granter: Permission,
    granter_is_owner: bool,
    granter_is_admin: bool,
    field: str = "perm",
) -> None:
    """Refuse an invitation or share that the granter may not give (module docs).

    Only the folder's owner or an admin with access may grant, and never
    more than the granter holds.
    """
    if not (granter_is_owner or granter_is_admin):
        raise VFolderPermissionDenied("only the folder's owner or an admin may grant access to it")
    if granted > granter:
        raise VFolderPermissionDenied(
            f"{field}: you cannot grant {granted.label!r}, more than your own {granter.label!r}"
        )


def parse_quota(value: object, *, field: str = "quota") -> int | None:
    """A requested quota in bytes: an int or a size like ``"10g"``; ``None``/``0`` for none."""
    if value is None:
        return None
    try:
        size = BinarySize.parse(value)
    except InvalidValue as exc:
        raise InvalidFolderInput(exc.problem, field=field, value=value) from None
    return int(size) or None


def effective_quota(requested: int | None, max_size: int, *, field: str = "quota") -> int | None:
    """The quota a new folder gets: *requested*, or the policy's *max_size* when none is asked.

    A request above a non-zero *max_size* is refused (400) rather than
    silently cut, so the caller learns the limit.
    """
    if max_size > 0:
        if requested is None:
            return max_size
        if requested > max_size:
            raise InvalidFolderInput(
                f"the quota may be at most {max_size} bytes (max_vfolder_size)",
                field=field,
                value=requested,
            )
    return requested


def max_size_mib(quota: int | None) -> int | None:
    """A quota in bytes as the spec's ``max_size``: MiB, rounded up (``None``: no quota)."""
    return None if quota is None else -(-quota // 2**20)


def check_count(current: int, limit: int, *, what: str, field: str = "name") -> None:
    """Refuse one more folder when *current* already reaches a non-zero *limit* (406)."""
    if limit > 0 and current >= limit:
        raise VFolderLimitExceeded(
            f"{what} may have at most {limit} virtual folders", field=field, value=current
        )
