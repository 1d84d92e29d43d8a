"""The request bodies of the session routes that need more than decoding.

:func:`session_request` turns the body of ``POST /session`` into a
:class:`~bai.manager.sessions.model.SessionRequest`; :func:`batch_options`,
:func:`completion_context` and :func:`completion_options` check the
``options`` of the execute and complete routes.  Every problem is an
:class:`~bai.manager.api.helpers.InvalidParameter` (400), an
:class:`~bai.manager.sessions.errors.InvalidSessionRequest` (400, an unknown
``type`` or ``cluster_mode``) or an :class:`~bai.manager.api.errors.ApiError`
raised before anything is written.

Creating a session
==================

The body follows the spec and both generations of clients: ``image`` (or
the legacy ``lang``), ``name`` (or ``clientSessionToken``), ``type``,
``group``, ``domain``, ``arch``/``architecture``, ``cluster_size``/
``clusterSize`` (or ``config.clusterSize``), ``cluster_mode``/``clusterMode``,
``config`` (``resources``, ``environ``, ``mounts``, ``mount_map``,
``scalingGroup``, ``agentList``, ``resource_opts``, ``preopen_ports``),
``tag``, ``enqueueOnly``, ``maxWaitSeconds``, ``reuseIfExists`` (default
true), ``starts_at`` (ISO 8601, naive meaning UTC, or a delay such as
``"10m"``), ``startupCommand``, ``bootstrap_script``, ``dependencies``,
``callback_url``, ``owner_access_key``, ``priority``, ``batch_timeout``.

* Only admins may set ``priority`` (other than 0) or designate an agent
  (``config.agentList``, one agent for all kernels): 403 otherwise.
* ``config.mounts`` lists virtual folders by name or id (at most
  :data:`~bai.common.agent_api.MAX_MOUNTS`), ``config.mount_map`` maps some
  of them to a path in the kernel (relative to ``/home/work``, or absolute
  below ``/home/work``, ``/data`` or ``/mnt``: see
  :func:`~bai.common.storage_api.kernel_mount_path`).  Their shape is checked
  here (400 naming ``config.mounts.N`` or ``config.mount_map.NAME``); the
  create route then resolves them against the owner's folders
  (:mod:`bai.manager.vfolders.mounts`: 404/403/409 naming the entry).
  ``resource_opts`` takes ``shmem`` (the size of each kernel's ``/dev/shm``,
  at most its memory); ``preopen_ports`` is refused unless empty (not
  supported yet).
* Bad input is refused before anything is written, with the field named as
  the client sent it (``config.resources.cpu``, ``dependencies.0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from bai.common.agent_api import MAX_MOUNTS
from bai.common.config import parse_duration
from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize
from bai.common.storage_api import InvalidPath, kernel_mount_path
from bai.common.types import ClusterMode, SessionTypes
from bai.common.validation import invalid_value
from bai.manager.api.auth import AuthContext
from bai.manager.api.errors import Forbidden
from bai.manager.api.helpers import InvalidParameter
from bai.manager.sessions.model import SessionRequest
from bai.manager.sessions.request import enum_member
from bai.manager.vfolders.rules import MAX_NAME_LENGTH

__all__ = [
    "MAX_WAIT_SECONDS",
    "CompleteBody",
    "CreateBody",
    "batch_options",
    "completion_context",
    "completion_options",
    "session_request",
]

#: The longest wait ``maxWaitSeconds`` may ask for (a day).
MAX_WAIT_SECONDS: Final = 86400


class _CreationConfig(msgspec.Struct, kw_only=True):
    # Values are checked by the registry, whose errors name the slot or variable.
    resources: dict[str, Any] | None = None
    environ: dict[str, Any] | None = None
    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = None
    scaling_group_camel: str | None = msgspec.field(default=None, name="scalingGroup")
    scaling_group: str | None = None
    agent_list: list[str] | None = msgspec.field(default=None, name="agentList")
    cluster_size: int | None = msgspec.field(default=None, name="clusterSize")
    resource_opts: dict[str, Any] | None = None
    preopen_ports: list[int] | None = None


class CreateBody(msgspec.Struct, kw_only=True):
    """The body of ``POST /session`` (module docs); :func:`session_request` reconciles aliases."""

    image: str | None = None
    lang: str | None = None
    name: str | None = None
    client_session_token: str | None = msgspec.field(default=None, name="clientSessionToken")
    type: str = "interactive"
    arch: str | None = None
    architecture: str | None = None
    group: str | None = None
    domain: str | None = None
    cluster_size: int | None = None
    cluster_size_camel: int | None = msgspec.field(default=None, name="clusterSize")
    cluster_mode: str | None = None
    cluster_mode_camel: str | None = msgspec.field(default=None, name="clusterMode")
    config: _CreationConfig | None = None
    tag: str | None = None
    enqueue_only: bool = msgspec.field(default=False, name="enqueueOnly")
    max_wait_seconds: int = msgspec.field(default=0, name="maxWaitSeconds")
    starts_at: str | None = None
    reuse_if_exists: bool = msgspec.field(default=True, name="reuseIfExists")
    startup_command: str | None = msgspec.field(default=None, name="startupCommand")
    bootstrap_script: str | None = None
    dependencies: list[str] | None = None
    callback_url: str | None = None
    owner_access_key: str | None = None
    priority: int | None = None
    batch_timeout: float | None = None


def _one_of(values: Sequence[tuple[str, Any]]) -> Any:
    """The value given under one or more alias names; 400 when the aliases disagree."""
    given = [(name, value) for name, value in values if value is not None]
    if not given:
        return None
    first_name, first = given[0]
    for name, value in given[1:]:
        if value != first:
            raise InvalidParameter(
                f"disagrees with {first_name} ({first!r})", field=name, value=value
            )
    return first


def _parse_starts_at(text: str | None, now: datetime) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now + timedelta(seconds=float(parse_duration(text)))
        except InvalidValue:
            raise InvalidParameter(
                "must be an ISO 8601 time or a delay such as '10m' or '1h30m'",
                field="starts_at",
                value=text,
            ) from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _designated_agent(agent_list: list[str] | None) -> str | None:
    if not agent_list:
        return None
    distinct = set(agent_list)
    if len(distinct) != 1:
        raise InvalidParameter(
            "all kernels of a session can only be designated to one agent",
            field="config.agentList",
            value=agent_list,
        )
    return agent_list[0]


def _check_mounts(config: _CreationConfig) -> tuple[list[str], dict[str, str]]:
    """``config.mounts`` and ``config.mount_map``, checked for shape (nothing is looked up)."""
    mounts = config.mounts or []
    if len(mounts) > MAX_MOUNTS:
        raise InvalidParameter(
            f"a session mounts at most {MAX_MOUNTS} folders",
            field="config.mounts",
            value=len(mounts),
        )
    for index, name in enumerate(mounts):
        if not name or len(name) > MAX_NAME_LENGTH or "/" in name or "\x00" in name:
            raise InvalidParameter(
                "must be a virtual folder name", field=f"config.mounts.{index}", value=name
            )
    mount_map = config.mount_map or {}
    for folder, path in mount_map.items():
        where = f"config.mount_map.{folder}"
        if folder not in mounts:
            raise InvalidParameter(
                "maps a folder that config.mounts does not name", field=where, value=folder
            )
        try:
            kernel_mount_path(folder, path, field=where)
        except InvalidPath as exc:
            raise InvalidParameter(exc.problem, field=where, value=path) from None
    return mounts, dict(mount_map)


def session_request(body: CreateBody, auth: AuthContext, now: datetime) -> SessionRequest:
    """The registry's request for *body* from *auth*; *now* anchors a relative ``starts_at``."""
    config = body.config or _CreationConfig()
    image = _one_of([("image", body.image), ("lang", body.lang)])
    if image is None:
        raise InvalidParameter("is required", field="image")
    name = _one_of([("name", body.name), ("clientSessionToken", body.client_session_token)])
    cluster_size = _one_of(
        [
            ("cluster_size", body.cluster_size),
            ("clusterSize", body.cluster_size_camel),
            ("config.clusterSize", config.cluster_size),
        ]
    )
    cluster_mode = _one_of(
        [("cluster_mode", body.cluster_mode), ("clusterMode", body.cluster_mode_camel)]
    )
    architecture = _one_of([("arch", body.arch), ("architecture", body.architecture)])
    scaling_group = _one_of(
        [
            ("config.scalingGroup", config.scaling_group_camel),
            ("config.scaling_group", config.scaling_group),
        ]
    )
    if body.priority not in (None, 0) and not auth.is_admin:
        raise Forbidden("only admins may set the priority of a session")
    designated = _designated_agent(config.agent_list)
    if designated is not None and not auth.is_admin:
        raise Forbidden("only admins may designate agents")
    if config.preopen_ports:
        raise InvalidParameter(
            "pre-opened ports are not supported", field="config.preopen_ports", value=None
        )
    if not 0 <= body.max_wait_seconds <= MAX_WAIT_SECONDS:
        raise InvalidParameter(
            f"must be between 0 and {MAX_WAIT_SECONDS}",
            field="maxWaitSeconds",
            value=body.max_wait_seconds,
        )
    mounts, mount_map = _check_mounts(config)
    starts_at = _parse_starts_at(body.starts_at, now)
    return SessionRequest(
        image=image,
        name=name,
        session_type=enum_member(SessionTypes, body.type, "type"),
        architecture=architecture,
        group=body.group or "default",
        domain=body.domain,
        scaling_group=scaling_group,
        cluster_size=1 if cluster_size is None else cluster_size,
        cluster_mode=(
            enum_member(ClusterMode, cluster_mode, "cluster_mode")
            if cluster_mode
            else ClusterMode.SINGLE_NODE
        ),
        resources=config.resources,
        environ=config.environ or {},
        mounts=mounts,
        mount_map=mount_map,
        startup_command=body.startup_command,
        bootstrap_script=body.bootstrap_script,
        starts_at=starts_at,
        batch_timeout=body.batch_timeout,
        dependencies=body.dependencies or (),
        tag=body.tag,
        priority=body.priority or 0,
        callback_url=body.callback_url,
        designated_agent=designated,
        reuse_if_exists=body.reuse_if_exists,
        resource_opts=_resource_opts(config.resource_opts),
    )


#: The largest ``/dev/shm`` a kernel may ask for.
MAX_SHMEM: Final = 1024**4


def _resource_opts(raw: Mapping[str, Any] | None) -> dict[str, int]:
    """``config.resource_opts``: ``shmem`` (a size such as ``"64m"``) is the one option."""
    found: dict[str, int] = {}
    for key, value in (raw or {}).items():
        field = f"config.resource_opts.{key}"
        if key != "shmem":
            raise InvalidParameter("is not a resource option (bai knows shmem)", field=field)
        try:
            size = int(BinarySize.parse(value))
        except InvalidValue:
            raise InvalidParameter("must be a size such as 64m", field=field, value=value) from None
        if not 0 < size <= MAX_SHMEM:
            raise InvalidParameter("must be more than 0 and at most 1t", field=field, value=value)
        found[key] = size
    return found


class _BatchOptions(msgspec.Struct, kw_only=True):
    clean: str | None = None
    build: str | None = None
    exec: str | None = None
    build_log: bool = msgspec.field(default=False, name="buildLog")


def batch_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The spec's Batch Execution Query Object from *options*, checked (400 names ``options``)."""
    try:
        parsed = msgspec.convert(dict(options or {}), _BatchOptions)
    except msgspec.ValidationError as exc:
        raise InvalidParameter(f"is not a batch execution query: {exc}", field="options") from None
    return {"clean": parsed.clean, "build": parsed.build, "exec": parsed.exec}


class _CompletionOptions(msgspec.Struct, kw_only=True):
    post: str | None = None
    line: str | None = None
    row: int | None = None
    col: int | None = None


class CompleteBody(msgspec.Struct, kw_only=True):
    """The body of ``POST /session/:id/complete``."""

    code: str = ""
    options: _CompletionOptions | None = None


def completion_context(options: Mapping[str, Any] | None) -> _CompletionOptions | None:
    """The execute route's ``options`` in ``complete`` mode, read as ``POST
    /session/:id/complete`` reads its own (400 names the key: ``options.row``)."""
    if options is None:
        return None
    document = {"options": dict(options)}
    try:
        return msgspec.convert(document, CompleteBody).options
    except msgspec.ValidationError as exc:
        raise invalid_value(exc, document, where="options", error=InvalidParameter) from None


def completion_options(options: _CompletionOptions | None) -> dict[str, Any] | None:
    """The cursor context worth passing on: an empty ``line`` says nothing about the cursor,
    so then ``row`` and ``col`` are dropped too and the kernel completes the end of ``code``
    (clients send ``line=""``, ``row=0``, ``col=0`` when they know no better)."""
    if options is None:
        return None
    chosen: dict[str, Any] = {}
    if options.post:
        chosen["post"] = options.post
    if options.line:
        chosen.update(line=options.line, row=options.row, col=options.col)
    return {key: value for key, value in chosen.items() if value is not None} or None
