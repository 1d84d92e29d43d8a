"""From checked templates and a caller's overrides to the body of ``POST /session``.

Pure: no database, no I/O.  The result is a JSON-like dict that the session
routes decode as :class:`~bai.manager.api.session.schema.CreateBody` and
create exactly as ``POST /session`` does, so every check of a normal creation
(image, resources, folders, policies) applies to a templated one too.

What a task template gives (:func:`task_body`), as the original manager maps it:
``image``, ``architecture``, ``type`` (``spec.session_type``), ``tag``
(``metadata.tag``), ``bootstrap_script`` and ``startupCommand``
(``spec.kernel.run``), the template's ``domain`` and project (``group``), and
in ``config``: ``scalingGroup``, ``mounts`` (the folder names of
``spec.mounts``), ``mount_map`` (those with a path), ``environ``,
``resources`` and ``agentList``.

How the caller's overrides apply (:func:`merged_body`): a key the caller
gives with a value other than ``null`` replaces the template's, key by key,
at the top level and inside ``config`` (any alias of a key replaces all its
names: ``lang`` replaces ``image``).  Folders are replaced, never appended:
``config.mounts`` and ``config.mount_map`` replace both of the template's
entries as one, except that an empty ``config.mounts`` without a
``config.mount_map`` leaves the template's folders (the official SDK sends
``mounts: []`` whenever the caller names none; its ``--no-mount`` sends an
empty ``mount_map`` too, which clears them).  ``template_id`` is not passed
on.  Last, a template's ``spec.kernel.git`` appends a ``git clone`` (and
``git checkout`` of ``commit``) to whatever bootstrap script the merge gave,
with every argument shell-quoted.

A cluster template (:func:`cluster_body`) is its ``main`` node's task
template with ``cluster_size`` the sum of all nodes' replicas,
``cluster_mode`` the template's ``mode``, ``spec.environ`` over the main
template's variables and ``spec.mounts`` (when it names any) instead of the
main template's.  bai's registry gives every kernel of a session one image and
one resource shape, and names kernels ``main1``, ``sub1``..``subN``: nodes
whose templates differ in image, architecture or resources are refused
(400 naming ``spec.nodes.N.session_template``), and role names other than
``main`` are not kept.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from bai.manager.templates.documents import (
    MAIN_ROLE,
    ClusterTemplate,
    InvalidTemplate,
    TaskTemplate,
)

__all__ = ["cluster_body", "git_clone_script", "merged_body", "task_body"]

# Names of one key of the creation body: giving any of them replaces them all.
_TOP_ALIASES: Final = (
    ("image", "lang"),
    ("name", "clientSessionToken"),
    ("arch", "architecture"),
    ("cluster_size", "clusterSize"),
    ("cluster_mode", "clusterMode"),
    ("callback_url", "callbackUrl", "callbackURL"),
)
_CONFIG_ALIASES: Final = (("scalingGroup", "scaling_group"), ("agentList", "agent_list"))
# Spellings of the original API that the creation body knows under one name only.
_RENAMED: Final = {"callbackUrl": "callback_url", "callbackURL": "callback_url"}
_NOT_PASSED: Final = frozenset({"template_id", "templateId"})


def task_body(template: TaskTemplate, *, domain: str | None, group: str | None) -> dict[str, Any]:
    """The creation body *template* stands for, in project *group* of *domain*
    (module docs); without its git step, which :func:`merged_body` appends."""
    spec, kernel = template.spec, template.spec.kernel
    body: dict[str, Any] = {"image": kernel.image, "type": spec.session_type.value}
    run = kernel.run
    optional = {
        "architecture": kernel.architecture,
        "tag": template.metadata.tag,
        "bootstrap_script": run.bootstrap if run else None,
        "startupCommand": run.startup_command if run else None,
        "domain": domain,
        "group": group,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    config: dict[str, Any] = {}
    if spec.scaling_group is not None:
        config["scalingGroup"] = spec.scaling_group
    if spec.mounts:
        config["mounts"] = list(spec.mounts)
        config["mount_map"] = {name: path for name, path in spec.mounts.items() if path}
    if kernel.environ:
        config["environ"] = dict(kernel.environ)
    if spec.resources is not None:
        config["resources"] = dict(spec.resources)
    if spec.agent_list is not None:
        config["agentList"] = list(spec.agent_list)
    if config:
        body["config"] = config
    return body


def _replace(target: dict[str, Any], key: str, value: Any, groups: Sequence[Sequence[str]]) -> None:
    for names in groups:
        if key in names:
            for name in names:
                target.pop(name, None)
    target[_RENAMED.get(key, key)] = value


def _merged_config(base: Mapping[str, Any], given: Any) -> dict[str, Any]:
    config = dict(base)
    if given is None:
        return config
    if not isinstance(given, Mapping):
        raise InvalidTemplate("must be an object", field="config", value=given)
    mounts, mount_map = given.get("mounts"), given.get("mount_map")
    if mount_map is not None or mounts:
        # Folders are replaced as a whole (module docs).
        config.pop("mounts", None)
        config.pop("mount_map", None)
    for key, value in given.items():
        if value is None or (key == "mounts" and not value and mount_map is None):
            continue
        _replace(config, key, value, _CONFIG_ALIASES)
    return config


def merged_body(
    base: Mapping[str, Any], overrides: Mapping[str, Any], git: TaskTemplate | None = None
) -> dict[str, Any]:
    """*base* (:func:`task_body`, :func:`cluster_body`) with the caller's *overrides*
    applied, then the git step of *git*'s template (module docs)."""
    body = {key: value for key, value in base.items() if key != "config"}
    for key, value in overrides.items():
        if key in _NOT_PASSED or key == "config" or value is None:
            continue
        _replace(body, key, value, _TOP_ALIASES)
    config = _merged_config(base.get("config") or {}, overrides.get("config"))
    if config:
        body["config"] = config
    if git is not None and git.spec.kernel.git is not None:
        script = body.get("bootstrap_script")
        if script is not None and not isinstance(script, str):
            raise InvalidTemplate("must be a string", field="bootstrap_script", value=script)
        step = git_clone_script(git)
        body["bootstrap_script"] = f"{script.rstrip(chr(10))}\n{step}" if script else step
    return body


def git_clone_script(template: TaskTemplate) -> str:
    """The shell lines that clone *template*'s ``spec.kernel.git`` (empty without one)."""
    git = template.spec.kernel.git
    if git is None:
        return ""
    url = git.repository
    if git.credential is not None:
        scheme, rest = url.split("://", 1)
        user = quote(git.credential.username, safe="")
        password = quote(git.credential.password, safe="")
        url = f"{scheme}://{user}:{password}@{rest}"
    target = git.dest_dir or git.repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    command = ["git", "clone"]
    if git.branch:
        command += ["-b", git.branch]
    command += ["--", url, target]
    lines = [shlex.join(command)]
    if git.commit:
        lines.append(f"(cd {shlex.quote(target)} && git checkout {shlex.quote(git.commit)})")
    return "\n".join(lines) + "\n"


def cluster_body(
    cluster: ClusterTemplate,
    nodes: Sequence[TaskTemplate],
    *,
    domain: str | None,
    group: str | None,
    field: str = "payload",
) -> dict[str, Any]:
    """The creation body of *cluster*, whose nodes' session templates are *nodes* (in the
    order of ``spec.nodes``); 400 naming ``FIELD.spec.nodes.N.session_template`` for a
    node the registry cannot run beside the main one (module docs)."""
    roles = [node.role for node in cluster.spec.nodes]
    main = nodes[roles.index(MAIN_ROLE)]

    def shape(template: TaskTemplate) -> tuple[Any, ...]:
        kernel = template.spec.kernel
        return (kernel.image, kernel.architecture, template.spec.resources)

    for index, template in enumerate(nodes):
        if shape(template) != shape(main):
            raise InvalidTemplate(
                "every node must use the main node's image, architecture and resources "
                "(kernels of one session share them)",
                field=f"{field}.spec.nodes.{index}.session_template",
                value=str(cluster.spec.nodes[index].session_template),
            )
    body = task_body(main, domain=domain, group=group)
    body["cluster_size"] = sum(node.replicas for node in cluster.spec.nodes)
    body["cluster_mode"] = cluster.mode.value
    config: dict[str, Any] = dict(body.get("config") or {})
    if cluster.spec.environ:
        config["environ"] = {**config.get("environ", {}), **cluster.spec.environ}
    if cluster.spec.mounts:
        config["mounts"] = list(cluster.spec.mounts)
        config["mount_map"] = {name: path for name, path in cluster.spec.mounts.items() if path}
    if config:
        body["config"] = config
    return body
