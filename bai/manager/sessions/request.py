"""Normalizing and checking a create request, before anything is read: pure, no I/O.

Every refusal is an :class:`~bai.manager.sessions.errors.InvalidSessionRequest`
whose ``field`` names the request's field (``resources.cpu``,
``environ.PATH``, ...).  What needs the database (the owner, the image, the
policies, the resource groups) is checked by :mod:`bai.manager.sessions.enqueue`.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, TypeVar

import msgspec

from bai.common.agent_api import MAX_BOOTSTRAP_SCRIPT, MAX_MOUNTS, VFolderMount, mount_overlap
from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import ClusterMode, SessionTypes, SlotTypes
from bai.manager.scheduler.validation import MAX_CLUSTER_SIZE, MAX_PRIORITY
from bai.manager.sessions.errors import InvalidSessionRequest
from bai.manager.sessions.model import SessionRequest

__all__ = [
    "MAX_CALLBACK_URL",
    "VFOLDER_MOUNT_KEYS",
    "check_callback_url",
    "check_name",
    "check_request",
    "check_vfolder_mounts",
    "enum_member",
    "kernel_slots",
    "nested_problem",
    "normalized",
]

_Choice = TypeVar("_Choice", bound=StrEnum)
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,62}[A-Za-z0-9]\Z", re.ASCII)
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z", re.ASCII)
#: The longest ``callback_url`` a session may have.
MAX_CALLBACK_URL: Final = 2048
#: The keys of one entry of a session's ``vfolder_mounts``.
VFOLDER_MOUNT_KEYS: Final = ("name", "vfid", "host", "host_path", "kernel_path", "mode")


def nested_problem(exc: InvalidValue, kind: type[InvalidValue], field: str) -> InvalidValue:
    """*exc* as a *kind* error about *field* (its own field, if any, nested under it)."""
    inner = f"{field}.{exc.field}" if exc.field else field
    return kind(exc.problem, value=exc.value, field=inner)


def check_name(name: object, field: str = "name") -> str:
    """*name* if it may name a session; :class:`InvalidSessionRequest` about *field* otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidSessionRequest(
            "a session name is 4 to 64 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
            value=name,
            field=field,
        )
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise InvalidSessionRequest("a session name must not be a UUID", value=name, field=field)


def enum_member(kind: type[_Choice], value: str, field: str) -> _Choice:
    """The member of *kind* whose value is *value*; :class:`InvalidSessionRequest` about *field*."""
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise InvalidSessionRequest(f"must be one of {known}", value=value, field=field) from None


def normalized(request: SessionRequest) -> SessionRequest:
    """*request* with ``session_type`` and ``cluster_mode`` given as strings turned into enums."""
    changes: dict[str, Any] = {}
    for name, kind, api_name in (
        ("session_type", SessionTypes, "type"),
        ("cluster_mode", ClusterMode, "cluster_mode"),
    ):
        value = getattr(request, name)
        if isinstance(value, str) and not isinstance(value, kind):
            changes[name] = enum_member(kind, value, api_name)
    return dataclasses.replace(request, **changes) if changes else request


def check_request(request: SessionRequest) -> None:
    """Checks of a request that need no database; raise :class:`InvalidSessionRequest`."""

    def bad(problem: str, value: object, field: str) -> InvalidSessionRequest:
        return InvalidSessionRequest(problem, value=value, field=field)

    if not isinstance(request.image, str) or not 0 < len(request.image) <= 512:
        raise bad("must be an image name or alias", request.image, "image")
    if not isinstance(request.session_type, SessionTypes):
        known = ", ".join(kind.value for kind in SessionTypes)
        raise bad(f"must be one of {known}", request.session_type, "type")
    size = request.cluster_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CLUSTER_SIZE:
        raise bad(f"must be an integer from 1 to {MAX_CLUSTER_SIZE}", size, "cluster_size")
    if not isinstance(request.cluster_mode, ClusterMode):
        raise bad("must be single-node or multi-node", request.cluster_mode, "cluster_mode")
    priority = request.priority
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise bad("must be an integer", priority, "priority")
    if not 0 <= priority <= MAX_PRIORITY:
        raise bad(f"must be between 0 and {MAX_PRIORITY}", priority, "priority")
    if not isinstance(request.environ, Mapping):
        raise bad("must be an object of strings", request.environ, "environ")
    for key, value in request.environ.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
            raise bad("not an environment variable name", key, "environ")
        if not isinstance(value, str) or "\x00" in value:
            raise bad("must be a string without NUL", value, f"environ.{key}")
    if isinstance(request.mounts, str) or not all(
        isinstance(m, str) and 0 < len(m) <= 256 for m in request.mounts
    ):
        raise bad("must be a list of folder names", request.mounts, "mounts")
    check_vfolder_mounts(request.vfolder_mounts)
    if request.session_type is SessionTypes.BATCH and not request.startup_command:
        raise bad("a batch session needs a startup command", None, "startup_command")
    for name in ("startup_command", "bootstrap_script", "callback_url"):
        value = getattr(request, name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            raise bad("must be a string", value, name)
    if request.callback_url is not None:
        check_callback_url(request.callback_url)
    script = request.bootstrap_script
    if script is not None and len(script) > MAX_BOOTSTRAP_SCRIPT:
        raise bad(
            f"must be at most {MAX_BOOTSTRAP_SCRIPT} characters", len(script), "bootstrap_script"
        )
    if request.tag is not None and (not isinstance(request.tag, str) or len(request.tag) > 64):
        raise bad("must be a string of at most 64 characters", request.tag, "tag")
    if request.starts_at is not None and (
        not isinstance(request.starts_at, datetime) or request.starts_at.utcoffset() is None
    ):
        raise bad("must be a timezone-aware timestamp", request.starts_at, "starts_at")
    timeout = request.batch_timeout
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= 10**9
    ):
        raise bad("must be a positive number of seconds", timeout, "batch_timeout")
    if request.designated_agent is not None and (
        not isinstance(request.designated_agent, str) or not 0 < len(request.designated_agent) <= 64
    ):
        raise bad("must be an agent id", request.designated_agent, "designated_agent")
    if request.scaling_group is not None and not isinstance(request.scaling_group, str):
        raise bad("must be a resource group name", request.scaling_group, "scaling_group")
    if isinstance(request.dependencies, str) or len(request.dependencies) > 64:
        raise bad("must be a list of at most 64 sessions", request.dependencies, "dependencies")


def check_vfolder_mounts(entries: object) -> None:
    """Refuse resolved mounts that an agent would refuse (:class:`InvalidSessionRequest`).

    *entries* are a session's ``vfolder_mounts``: at most
    :data:`~bai.common.agent_api.MAX_MOUNTS` maps of exactly
    :data:`VFOLDER_MOUNT_KEYS` to strings, each a valid
    :class:`~bai.common.agent_api.VFolderMount` once ``host`` is left out,
    no two at overlapping kernel paths.
    """
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Sequence):
        raise InvalidSessionRequest("must be a list of mounts", value=entries, field="mounts")
    if len(entries) > MAX_MOUNTS:
        raise InvalidSessionRequest(
            f"a session mounts at most {MAX_MOUNTS} folders", value=len(entries), field="mounts"
        )
    for index, entry in enumerate(entries):
        where = f"vfolder_mounts.{index}"
        if not isinstance(entry, Mapping) or set(entry) != set(VFOLDER_MOUNT_KEYS):
            raise InvalidSessionRequest(
                f"must be an object of {', '.join(VFOLDER_MOUNT_KEYS)}", value=entry, field=where
            )
        if not all(isinstance(value, str) for value in entry.values()):
            raise InvalidSessionRequest("every value must be a string", value=entry, field=where)
        try:
            msgspec.convert({k: entry[k] for k in entry if k != "host"}, VFolderMount)
        except msgspec.ValidationError as exc:
            raise InvalidSessionRequest(str(exc), value=entry, field=where) from None
    clash = mount_overlap([entry["kernel_path"] for entry in entries])
    if clash is not None:
        first, second = clash
        raise InvalidSessionRequest(
            f"overlaps the mount path of vfolder_mounts.{first}",
            value=entries[second]["kernel_path"],
            field=f"vfolder_mounts.{second}",
        )


def kernel_slots(
    requested: Mapping[str, Any] | None,
    image_resources: Mapping[str, Any],
    known_slots: Mapping[str, SlotTypes],
) -> ResourceSlot:
    """One kernel's slots: the request, with the image's minimum for every slot it leaves out."""
    try:
        slots = ResourceSlot.parse(requested if requested is not None else {}, known_slots)
    except InvalidValue as exc:
        raise nested_problem(exc, InvalidSessionRequest, "resources") from None
    minimums: dict[str, Any] = {}
    for slot, spec in image_resources.items():
        amount = spec.get("min") if isinstance(spec, Mapping) else None
        if slot in known_slots and amount is not None:
            minimums[slot] = amount
    try:
        floor = ResourceSlot.parse(minimums, known_slots)
    except InvalidValue:
        floor = ResourceSlot()
    values: dict[str, Decimal] = dict(slots.items())
    for slot, amount in floor.items():
        if slot not in values:
            values[slot] = amount
        elif values[slot] < amount:
            raise InvalidSessionRequest(
                f"the image needs at least {amount} of this slot",
                value=str(values[slot]),
                field=f"resources.{slot}",
            )
    return ResourceSlot(values)


def check_callback_url(url: str) -> None:
    """Refuse a ``callback_url`` the manager could not POST lifecycle events to.

    It must be an absolute ``http`` or ``https`` URL with a host, no user
    information, and at most :data:`MAX_CALLBACK_URL` characters.
    """
    if len(url) > MAX_CALLBACK_URL:
        raise InvalidSessionRequest(
            f"must be at most {MAX_CALLBACK_URL} characters", value=len(url), field="callback_url"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidSessionRequest("is not a URL", value=url, field="callback_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSessionRequest(
            "must be an http:// or https:// URL with a host", value=url, field="callback_url"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidSessionRequest(
            "must not carry a user name or password", value=url, field="callback_url"
        )
