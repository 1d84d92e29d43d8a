"""Session and cluster template documents: the ``payload`` text read, checked and normalised.

Pure: no database, no I/O.  A ``payload`` is JSON or YAML text
(:func:`load_payload`); it holds one document or several (a JSON list, YAML
documents separated by ``---``, or a YAML list).  Each document of a session
template payload is either a task template itself or the web UI's wrapper
``{"template": <task template>, "name"?, "group_id"?, "user_uuid"?,
"domain_name"?}`` (what ``GET /template/session/:id`` answers, so that an
answer can be sent back as an update).

Task template (``kind: taskTemplate``), keys and aliases as the spec's
"Full syntax for task template" writes them::

    api_version | apiVersion: str
    kind: taskTemplate | task_template
    metadata: {name: str, tag: str?}
    spec:
      type | session_type | sessionType: interactive | batch | inference | system
      kernel:
        image: str
        architecture: str?
        environ: {str: str}?
        run: {bootstrap: str?, startup | startup_command | startupCommand: str?}?
        git: {repository: str, commit: str?, branch: str?,
              credential: {username: str, password: str}?,
              destination_dir | destinationDir: str?}?
      scaling_group | scalingGroup: str?
      mounts: {folder name: kernel path or null}?
      resources: {slot: str | number}?
      agent_list | agentList: [str]?

Cluster template (``kind: clusterTemplate``)::

    api_version | apiVersion: str
    kind: clusterTemplate | cluster_template
    mode: single-node | multi-node
    metadata: {name: str}
    spec:
      environ: {str: str}?
      mounts: {folder name: kernel path or null}?
      nodes: [{role: str, session_template | sessionTemplate: uuid, replicas: int >= 1}]

Guarantees: unknown keys, wrong types, two aliases of one key, folder names
or mount paths a session could not use, duplicated roles, and a cluster
without exactly one ``main`` node of one replica are refused with an
:class:`~bai.common.validation.InvalidField` whose ``field`` is the dotted
path from ``payload`` (``payload.spec.kernel.image``; ``payload.1.spec...``
for the second document), before anything is stored.  YAML anchors and
aliases are refused (they could expand a small text into a huge document),
and so is a payload over :data:`MAX_PAYLOAD` characters.  The stored form is
the checked document with canonical key names and every key present
(:func:`check_task_template`, :func:`check_cluster_template`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import yaml

from bai.common.storage_api import InvalidPath, kernel_mount_path
from bai.common.types import ClusterMode, SessionTypes
from bai.common.validation import InvalidField, dotted, invalid_value
from bai.manager.vfolders.rules import MAX_NAME_LENGTH

__all__ = [
    "MAIN_ROLE",
    "MAX_PAYLOAD",
    "ClusterTemplate",
    "InvalidTemplate",
    "TaskEntry",
    "TaskTemplate",
    "check_cluster_template",
    "check_task_template",
    "cluster_payload",
    "dump_yaml",
    "load_payload",
    "task_entries",
]

#: The longest ``payload`` text accepted (characters).
MAX_PAYLOAD: Final = 64 * 1024
#: The cluster role of a session's first kernel (the registry's name for it).
MAIN_ROLE: Final = "main"
#: At most this many folders a template mounts (the agent's limit per kernel).
_MAX_MOUNTS: Final = 64
#: At most this many nodes (roles) in a cluster template.
_MAX_NODES: Final = 16


class InvalidTemplate(InvalidField):
    """A payload or template document that cannot be stored or used (400, names the field)."""


# ---------------------------------------------------------------------------
# The documents' shapes (canonical key names; aliases are renamed before)
# ---------------------------------------------------------------------------


class _Metadata(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    tag: str | None = None


class _Run(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    bootstrap: str | None = None
    startup_command: str | None = None


class _Credential(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: str
    password: str


class _Git(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    repository: str
    commit: str | None = None
    branch: str | None = None
    credential: _Credential | None = None
    dest_dir: str | None = None


class _Kernel(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    image: str
    architecture: str | None = None
    environ: dict[str, str] | None = None
    run: _Run | None = None
    git: _Git | None = None


class _TaskSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    session_type: SessionTypes = SessionTypes.INTERACTIVE
    kernel: _Kernel
    scaling_group: str | None = None
    mounts: dict[str, str | None] | None = None
    resources: dict[str, str | int | float] | None = None
    agent_list: list[str] | None = None


class TaskTemplate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A checked session (task) template, as stored."""

    api_version: str
    kind: str
    metadata: _Metadata
    spec: _TaskSpec


class _Node(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: str
    session_template: uuid.UUID
    replicas: int = 1


class _ClusterMetadata(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str


class _ClusterSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    environ: dict[str, str] | None = None
    mounts: dict[str, str | None] | None = None
    nodes: list[_Node]


class ClusterTemplate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A checked cluster template, as stored."""

    api_version: str
    kind: str
    mode: ClusterMode
    metadata: _ClusterMetadata
    spec: _ClusterSpec


class _Wrapper(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    template: dict[str, Any]
    name: str | None = None
    group_id: str | None = None
    user_uuid: str | None = None
    domain_name: str | None = None


# Alias -> canonical name, per place in a document (a path of keys; "*" any list item).
_TASK_ALIASES: Final[Mapping[tuple[str, ...], Mapping[str, str]]] = {
    (): {"apiVersion": "api_version"},
    ("spec",): {
        "type": "session_type",
        "sessionType": "session_type",
        "scalingGroup": "scaling_group",
        "agentList": "agent_list",
    },
    ("spec", "kernel", "run"): {"startup": "startup_command", "startupCommand": "startup_command"},
    ("spec", "kernel", "git"): {"destination_dir": "dest_dir", "destinationDir": "dest_dir"},
}
_CLUSTER_ALIASES: Final[Mapping[tuple[str, ...], Mapping[str, str]]] = {
    (): {"apiVersion": "api_version"},
    ("spec", "nodes", "*"): {"sessionTemplate": "session_template"},
}
_TASK_KINDS: Final = ("taskTemplate", "task_template")
_CLUSTER_KINDS: Final = ("clusterTemplate", "cluster_template")


# ---------------------------------------------------------------------------
# Reading the payload
# ---------------------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader refusing aliases (module docs): nothing can be expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def load_payload(text: str, field: str = "payload") -> list[Any]:
    """The documents of *text*, JSON or YAML (module docs); 400 naming *field* when
    it is neither, too long, or holds no document."""
    if len(text) > MAX_PAYLOAD:
        raise InvalidTemplate(
            f"must be at most {MAX_PAYLOAD} characters", field=field, value=len(text)
        )
    try:
        loaded: Any = json.loads(text)
        documents = loaded if isinstance(loaded, list) else [loaded]
    except (json.JSONDecodeError, RecursionError):
        try:
            documents = []
            for document in yaml.load_all(text, Loader=_NoAliasLoader):
                if isinstance(document, list):
                    documents.extend(document)
                elif document is not None:
                    documents.append(document)
        except (yaml.YAMLError, RecursionError) as exc:
            raise InvalidTemplate(f"is neither JSON nor YAML: {exc}", field=field) from None
    if not documents:
        raise InvalidTemplate("holds no template", field=field)
    return documents


def _renamed(
    document: Any,
    aliases: Mapping[tuple[str, ...], Mapping[str, str]],
    prefix: str,
    path: tuple[str, ...] = (),
) -> Any:
    """*document* with alias keys renamed to their canonical names; two names of one key
    given at once is a 400 naming the second."""
    if isinstance(document, list):
        return [
            _renamed(item, aliases, f"{prefix}.{index}", (*path, "*"))
            for index, item in enumerate(document)
        ]
    if not isinstance(document, dict):
        return document
    here = aliases.get(path, {})
    renamed: dict[Any, Any] = {}
    for key, value in document.items():
        name = here.get(key, key) if isinstance(key, str) else key
        if name in renamed:
            raise InvalidTemplate(
                f"gives {name} a second time (under another of its names)",
                field=f"{prefix}.{key}",
                value=value,
            )
        renamed[name] = _renamed(value, aliases, f"{prefix}.{key}", (*path, str(name)))
    return renamed


def _convert(document: Any, model: type[Any], prefix: str) -> Any:
    try:
        return msgspec.convert(document, model, strict=True)
    except msgspec.ValidationError as exc:
        raise invalid_value(
            exc,
            document,
            where=prefix,
            error=InvalidTemplate,
            notation=lambda path: f"{prefix}.{dotted(path)}" if path else prefix,
        ) from None


def _check_text(value: str | None, field: str, *, limit: int, empty: bool = False) -> None:
    if value is None:
        return
    if "\x00" in value or len(value) > limit or (not empty and not value):
        raise InvalidTemplate(
            f"must be a string of {'0' if empty else '1'} to {limit} characters without NUL",
            field=field,
            value=value,
        )


def _check_mounts(mounts: Mapping[str, str | None] | None, field: str) -> None:
    if not mounts:
        return
    if len(mounts) > _MAX_MOUNTS:
        raise InvalidTemplate(
            f"a template mounts at most {_MAX_MOUNTS} folders", field=field, value=len(mounts)
        )
    for folder, path in mounts.items():
        where = f"{field}.{folder}"
        if not folder or len(folder) > MAX_NAME_LENGTH or "/" in folder or "\x00" in folder:
            raise InvalidTemplate("must be a virtual folder name", field=where, value=folder)
        if path:
            try:
                kernel_mount_path(folder, path, field=where)
            except InvalidPath as exc:
                raise InvalidTemplate(exc.problem, field=where, value=path) from None


def _check_environ(environ: Mapping[str, str] | None, field: str) -> None:
    for key, value in (environ or {}).items():
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            raise InvalidTemplate(
                "must map variable names to values without NUL", field=f"{field}.{key}", value=value
            )


def _check_kind(kind: str, allowed: Sequence[str], field: str) -> None:
    if kind not in allowed:
        raise InvalidTemplate(f"must be {' or '.join(allowed)}", field=field, value=kind)


def check_task_template(document: Any, prefix: str = "payload") -> TaskTemplate:
    """*document* as a checked :class:`TaskTemplate` (module docs); 400 naming the field."""
    if not isinstance(document, dict):
        raise InvalidTemplate("must be a task template (an object)", field=prefix)
    template: TaskTemplate = _convert(
        _renamed(document, _TASK_ALIASES, prefix), TaskTemplate, prefix
    )
    _check_kind(template.kind, _TASK_KINDS, f"{prefix}.kind")
    _check_text(template.metadata.name, f"{prefix}.metadata.name", limit=128)
    _check_text(template.metadata.tag, f"{prefix}.metadata.tag", limit=64, empty=True)
    spec, kernel = template.spec, template.spec.kernel
    _check_text(kernel.image, f"{prefix}.spec.kernel.image", limit=512)
    _check_text(kernel.architecture, f"{prefix}.spec.kernel.architecture", limit=32)
    _check_environ(kernel.environ, f"{prefix}.spec.kernel.environ")
    if kernel.git is not None:
        _check_text(kernel.git.repository, f"{prefix}.spec.kernel.git.repository", limit=2048)
        if kernel.git.credential is not None and "://" not in kernel.git.repository:
            raise InvalidTemplate(
                "must be a URL (scheme://...) to carry a credential",
                field=f"{prefix}.spec.kernel.git.repository",
                value=kernel.git.repository,
            )
    _check_mounts(spec.mounts, f"{prefix}.spec.mounts")
    return template


def _check_nodes(template: ClusterTemplate, prefix: str) -> None:
    nodes = template.spec.nodes
    if not 0 < len(nodes) <= _MAX_NODES:
        raise InvalidTemplate(
            f"must list 1 to {_MAX_NODES} nodes", field=f"{prefix}.spec.nodes", value=len(nodes)
        )
    seen: set[str] = set()
    for index, node in enumerate(nodes):
        where = f"{prefix}.spec.nodes.{index}"
        _check_text(node.role, f"{where}.role", limit=64)
        if node.role in seen:
            raise InvalidTemplate("each role can only be defined once", field=f"{where}.role")
        seen.add(node.role)
        if not 1 <= node.replicas <= 64:
            raise InvalidTemplate(
                "must be from 1 to 64", field=f"{where}.replicas", value=node.replicas
            )
        if node.role == MAIN_ROLE and node.replicas != 1:
            raise InvalidTemplate(
                f"the {MAIN_ROLE} role has exactly one replica",
                field=f"{where}.replicas",
                value=node.replicas,
            )
    if MAIN_ROLE not in seen:
        raise InvalidTemplate(
            f"a cluster needs one node of role {MAIN_ROLE!r}", field=f"{prefix}.spec.nodes"
        )


def check_cluster_template(document: Any, prefix: str = "payload") -> ClusterTemplate:
    """*document* as a checked :class:`ClusterTemplate` (module docs); 400 naming the field."""
    if not isinstance(document, dict):
        raise InvalidTemplate("must be a cluster template (an object)", field=prefix)
    renamed = _renamed(document, _CLUSTER_ALIASES, prefix)
    template: ClusterTemplate = _convert(renamed, ClusterTemplate, prefix)
    _check_kind(template.kind, _CLUSTER_KINDS, f"{prefix}.kind")
    _check_text(template.metadata.name, f"{prefix}.metadata.name", limit=128)
    _check_environ(template.spec.environ, f"{prefix}.spec.environ")
    _check_mounts(template.spec.mounts, f"{prefix}.spec.mounts")
    _check_nodes(template, prefix)
    return template


class TaskEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One session template of a payload: the template, its name (the wrapper's
    ``name`` or ``metadata.name``), and the wrapper's claims about where it lives."""

    template: TaskTemplate
    name: str
    group_id: str | None = None
    user_uuid: str | None = None
    domain_name: str | None = None
    #: Where in the payload the entry is (``payload`` or ``payload.N``), for error fields.
    field: str = "payload"
    #: Where its template is (``field``, or ``field.template`` in a wrapper).
    template_field: str = "payload"


def task_entries(documents: Sequence[Any], field: str = "payload") -> list[TaskEntry]:
    """The checked session templates of a payload's *documents* (module docs)."""
    entries: list[TaskEntry] = []
    for index, document in enumerate(documents):
        where = field if len(documents) == 1 else f"{field}.{index}"
        if isinstance(document, dict) and "template" in document and "kind" not in document:
            wrapper: _Wrapper = _convert(document, _Wrapper, where)
            template = check_task_template(wrapper.template, f"{where}.template")
            name = wrapper.name if wrapper.name is not None else template.metadata.name
            _check_text(name, f"{where}.name", limit=128)
            entries.append(
                TaskEntry(
                    template=template,
                    name=name,
                    group_id=wrapper.group_id,
                    user_uuid=wrapper.user_uuid,
                    domain_name=wrapper.domain_name,
                    field=where,
                    template_field=f"{where}.template",
                )
            )
        else:
            template = check_task_template(document, where)
            entries.append(
                TaskEntry(
                    template=template,
                    name=template.metadata.name,
                    field=where,
                    template_field=where,
                )
            )
    return entries


def cluster_payload(documents: Sequence[Any], field: str = "payload") -> ClusterTemplate:
    """The one checked cluster template of a payload's *documents*."""
    if len(documents) != 1:
        raise InvalidTemplate(
            "must hold exactly one cluster template", field=field, value=len(documents)
        )
    return check_cluster_template(documents[0], field)


def dump_yaml(data: Any) -> str:
    """*data* (JSON-like) as block-style YAML, keys in their stored order."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
