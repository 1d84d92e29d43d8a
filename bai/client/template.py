"""Session and cluster templates over the REST API, and sessions started from them.

:class:`SessionTemplate` and :class:`ClusterTemplate` are handles on one
stored template (its id and, for administrators acting for someone else, the
owner's access key); their class methods store new ones and list what the
caller may read.  Each method is one route of ``/template/session`` or
``/template/cluster``; :meth:`SessionTemplate.start` is
``POST /session/_/create-from-template`` and :meth:`ClusterTemplate.start`
``POST /session/_/create-cluster``, both answering a
:class:`~bai.client.session.ComputeSession` as
:meth:`~bai.client.session.ComputeSession.create` does.

Payloads are the template text, YAML or JSON, sent as is: the manager checks
it and names the offending key (``payload.spec.kernel.image``) in a
:class:`~bai.client.exceptions.BackendAPIError`.  Answers that do not have
the promised shape raise :class:`~bai.client.exceptions.MalformedResponse`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from bai.client.exceptions import MalformedResponse
from bai.client.request import APIClient
from bai.client.session import ComputeSession

__all__ = ["ClusterTemplate", "SessionTemplate"]


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


class _Template:
    """What both kinds share: the id, the owner, and the get/update/delete routes."""

    kind: ClassVar[str]
    default_format: ClassVar[Literal["json", "yaml"]]

    def __init__(
        self, api: APIClient, template_id: str, *, owner_access_key: str | None = None
    ) -> None:
        self.api = api
        self.id = template_id
        self.owner_access_key = owner_access_key

    @property
    def path(self) -> str:
        return f"/template/{self.kind}/{self.id}"

    def _owner_params(self) -> dict[str, str]:
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}

    @classmethod
    async def list_templates(
        cls, api: APIClient, *, list_all: bool = False, group_id: str | None = None
    ) -> list[dict[str, Any]]:
        """``GET /template/KIND``: the templates the caller may read (``list_all``: every
        template, superadmins only), optionally of one project."""
        params = _drop_none({"all": "true" if list_all else None, "group_id": group_id})
        data = await api.fetch_json("GET", f"/template/{cls.kind}", params=params or None)
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise MalformedResponse("is not a list of objects", value=data, field="templates")
        return data

    async def get(self, *, format: Literal["json", "yaml"] | None = None) -> str:
        """``GET /template/KIND/:id``: the stored template as text (YAML or JSON)."""
        params = {"format": format or self.default_format, **self._owner_params()}
        response = await self.api.request("GET", self.path, params=params)
        return response.body.decode()

    async def info(self) -> dict[str, Any]:
        """:meth:`get` as JSON, parsed."""
        params = {"format": "json", **self._owner_params()}
        data = await self.api.fetch_json("GET", self.path, params=params)
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="template")
        return data

    async def update(self, payload: str, **where: str | None) -> None:
        """``PUT /template/KIND/:id``: replace the template with *payload*."""
        body = _drop_none({"payload": payload, "owner_access_key": self.owner_access_key, **where})
        await self.api.fetch_json("PUT", self.path, json_body=body)

    async def delete(self) -> None:
        """``DELETE /template/KIND/:id``: delete the template (the manager keeps it inactive)."""
        await self.api.fetch_json("DELETE", self.path, params=self._owner_params() or None)


def _session_of(
    api: APIClient, data: Any, name: str, owner_access_key: str | None
) -> ComputeSession:
    """The :class:`ComputeSession` a creation answer describes."""
    if not isinstance(data, dict):
        raise MalformedResponse("is not an object", value=data, field="creation answer")
    raw_id = data.get("sessionId")
    try:
        session_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
    except ValueError:
        raise MalformedResponse("is not a UUID", value=raw_id, field="sessionId") from None
    session = ComputeSession(
        api,
        str(data.get("sessionName") or name),
        owner_access_key=owner_access_key,
        session_id=session_id,
    )
    session.status = str(data.get("status") or "RUNNING")
    session.created = bool(data.get("created", True))
    ports = data.get("servicePorts") or []
    if not isinstance(ports, list):
        raise MalformedResponse("is not a list", value=ports, field="servicePorts")
    session.service_ports = [port for port in ports if isinstance(port, dict)]
    return session


class SessionTemplate(_Template):
    """A stored session (task) template."""

    kind = "session"
    default_format = "json"

    @classmethod
    async def create(
        cls,
        api: APIClient,
        payload: str,
        *,
        domain: str | None = None,
        group: str | None = None,
        owner_access_key: str | None = None,
    ) -> list[SessionTemplate]:
        """``POST /template/session``: store the templates of *payload* (one handle each)
        in project *group* (default: the config's, else ``default``) of *domain*."""
        body = _drop_none(
            {
                "payload": payload,
                "domain": domain or api.config.domain,
                "group": group or api.config.group,
                "owner_access_key": owner_access_key,
            }
        )
        data = await api.fetch_json("POST", "/template/session", json_body=body)
        if not isinstance(data, list) or not all(
            isinstance(item, dict) and isinstance(item.get("id"), str) for item in data
        ):
            raise MalformedResponse("is not a list of ids", value=data, field="created templates")
        return [cls(api, item["id"], owner_access_key=owner_access_key) for item in data]

    async def start(
        self,
        *,
        name: str,
        image: str | None = None,
        type: str | None = None,
        enqueue_only: bool = False,
        max_wait: int = 0,
        reuse_if_exists: bool = True,
        resources: Mapping[str, str | int] | None = None,
        environ: Mapping[str, str] | None = None,
        mounts: Sequence[str] | None = None,
        mount_map: Mapping[str, str] | None = None,
        cluster_size: int | None = None,
        cluster_mode: str | None = None,
        startup_command: str | None = None,
        bootstrap_script: str | None = None,
        dependencies: Sequence[str] = (),
        starts_at: str | None = None,
        tag: str | None = None,
        domain: str | None = None,
        group: str | None = None,
        scaling_group: str | None = None,
        callback_url: str | None = None,
    ) -> ComputeSession:
        """``POST /session/_/create-from-template``: a session of this template; every
        argument given replaces the template's (folders as a whole, not appended)."""
        config = _drop_none(
            {
                "mounts": list(mounts) if mounts is not None else None,
                "mount_map": dict(mount_map) if mount_map is not None else None,
                "environ": dict(environ) if environ is not None else None,
                "resources": {k: str(v) for k, v in resources.items()} if resources else None,
                "scalingGroup": scaling_group,
            }
        )
        body = _drop_none(
            {
                "template_id": self.id,
                "name": name,
                "image": image,
                "type": type,
                "domain": domain,
                "group": group,
                "cluster_size": cluster_size,
                "cluster_mode": cluster_mode,
                "enqueueOnly": enqueue_only,
                "maxWaitSeconds": max_wait,
                "reuseIfExists": reuse_if_exists,
                "config": config or None,
                "tag": tag,
                "startupCommand": startup_command,
                "bootstrap_script": bootstrap_script,
                "dependencies": list(dependencies) or None,
                "starts_at": starts_at,
                "callback_url": callback_url,
                "owner_access_key": self.owner_access_key,
            }
        )
        data = await self.api.fetch_json("POST", "/session/_/create-from-template", json_body=body)
        return _session_of(self.api, data, name, self.owner_access_key)


class ClusterTemplate(_Template):
    """A stored cluster template."""

    kind = "cluster"
    default_format = "yaml"

    @classmethod
    async def create(
        cls,
        api: APIClient,
        payload: str,
        *,
        domain: str | None = None,
        group: str | None = None,
        owner_access_key: str | None = None,
    ) -> ClusterTemplate:
        """``POST /template/cluster``: store the cluster template of *payload*."""
        body = _drop_none(
            {
                "payload": payload,
                "domain": domain or api.config.domain,
                "group": group or api.config.group,
                "owner_access_key": owner_access_key,
            }
        )
        data = await api.fetch_json("POST", "/template/cluster", json_body=body)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise MalformedResponse("is not an object with an id", value=data, field="template")
        return cls(api, data["id"], owner_access_key=owner_access_key)

    async def start(
        self,
        *,
        name: str,
        type: str | None = None,
        enqueue_only: bool = False,
        max_wait: int = 0,
        tag: str | None = None,
        domain: str | None = None,
        group: str | None = None,
        scaling_group: str | None = None,
    ) -> ComputeSession:
        """``POST /session/_/create-cluster``: a cluster session of this template."""
        body = _drop_none(
            {
                "clientSessionToken": name,
                "template_id": self.id,
                "type": type,
                "domain": domain,
                "group": group,
                "scaling_group": scaling_group,
                "tag": tag,
                "enqueueOnly": enqueue_only,
                "maxWaitSeconds": max_wait,
                "owner_access_key": self.owner_access_key,
            }
        )
        data = await self.api.fetch_json("POST", "/session/_/create-cluster", json_body=body)
        return _session_of(self.api, data, name, self.owner_access_key)
