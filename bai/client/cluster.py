"""Where sessions run: resource groups (scaling groups), resource presets, agents.

GraphQL wrappers in the style of :mod:`bai.client.identity` (class methods
taking the :class:`~bai.client.request.APIClient` first; ``None`` keywords
are not sent) with the names and argument shapes of the spec and of the
official client's ``ScalingGroup`` and ``Agent`` functions.  Resource
presets are managed only through GraphQL, as the spec says; their REST
listing (``GET /resource/presets``) is for users choosing one.
:meth:`ScalingGroup.list_available` is the REST route ``GET /scaling-groups``:
the resource groups the caller may use in a project.

Failures raise :class:`~bai.client.exceptions.GraphQLError`,
:class:`~bai.client.exceptions.MutationFailed` or the typed
:class:`~bai.client.exceptions.BackendAPIError` of a REST call.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from bai.client.admin import Page, fetch_list, fetch_object, mutate, paginated_list
from bai.client.exceptions import MalformedResponse
from bai.client.identity import props
from bai.client.request import APIClient

__all__ = ["Agent", "ResourcePreset", "ScalingGroup"]

_Item = dict[str, Any]


def _json(value: Mapping[str, Any] | str | None) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(dict(value))


class ScalingGroup:
    """Resource groups and their associations with domains, projects and keypairs."""

    LIST_FIELDS: Final = (
        "name",
        "description",
        "is_active",
        "is_public",
        "driver",
        "scheduler",
        "wsproxy_addr",
        "created_at",
    )
    INFO_FIELDS: Final = (
        *LIST_FIELDS,
        "driver_opts",
        "scheduler_opts",
        "use_host_network",
        "wsproxy_api_token",
    )

    @classmethod
    async def list_available(cls, api: APIClient, group: str) -> builtins.list[_Item]:
        """``GET /scaling-groups?group=``: the resource groups the caller may use in
        project *group* (name or id), each ``{"name": ...}``."""
        data = await api.fetch_json("GET", "/scaling-groups", params={"group": group})
        groups = data.get("scaling_groups") if isinstance(data, dict) else None
        if not isinstance(groups, list):
            raise MalformedResponse("has no scaling_groups list", value=data, field="answer")
        return [item for item in groups if isinstance(item, dict)]

    @classmethod
    async def wsproxy_version(cls, api: APIClient, name: str, group: str) -> str:
        """``GET /scaling-groups/{name}/wsproxy-version``: the app proxy's API version."""
        data = await api.fetch_json(
            "GET",
            f"/scaling-groups/{quote(name, safe='')}/wsproxy-version",
            params={"group": group},
        )
        version = data.get("wsproxy_version") if isinstance(data, dict) else None
        if not isinstance(version, str):
            raise MalformedResponse("has no wsproxy_version", value=data, field="answer")
        return version

    @classmethod
    async def list(
        cls, api: APIClient, *, is_active: bool | None = None, fields: Sequence[str] = LIST_FIELDS
    ) -> builtins.list[_Item]:
        """Every resource group (administrators)."""
        return await fetch_list(
            api, "scaling_groups", fields=fields, variables={"is_active": (is_active, "Boolean")}
        )

    @classmethod
    async def detail(
        cls, api: APIClient, name: str, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The resource group *name*; ``None`` if there is none."""
        return await fetch_object(
            api, "scaling_group", fields=fields, variables={"name": (name, "String")}
        )

    @classmethod
    async def create(
        cls,
        api: APIClient,
        name: str,
        *,
        driver: str = "static",
        scheduler: str = "fifo",
        description: str = "",
        is_active: bool = True,
        is_public: bool = True,
        driver_opts: Mapping[str, Any] | str | None = None,
        scheduler_opts: Mapping[str, Any] | str | None = None,
        use_host_network: bool = False,
        wsproxy_addr: str | None = None,
        wsproxy_api_token: str | None = None,
        fields: Sequence[str] = ("name",),
    ) -> _Item:
        """Create a resource group; answers the new ``scaling_group``."""
        values = props(
            description=description,
            is_active=is_active,
            is_public=is_public,
            driver=driver,
            scheduler=scheduler,
            use_host_network=use_host_network,
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
            driver_opts=_json(driver_opts),
            scheduler_opts=_json(scheduler_opts),
        )
        payload = await mutate(
            api,
            "create_scaling_group",
            {"name": (name, "String!"), "props": (values, "CreateScalingGroupInput!")},
            result="scaling_group",
            fields=fields,
        )
        return dict(payload.get("scaling_group") or {})

    @classmethod
    async def update(
        cls,
        api: APIClient,
        name: str,
        *,
        driver: str | None = None,
        scheduler: str | None = None,
        description: str | None = None,
        is_active: bool | None = None,
        is_public: bool | None = None,
        driver_opts: Mapping[str, Any] | str | None = None,
        scheduler_opts: Mapping[str, Any] | str | None = None,
        use_host_network: bool | None = None,
        wsproxy_addr: str | None = None,
        wsproxy_api_token: str | None = None,
    ) -> None:
        """Change the resource group *name* (only the keywords given)."""
        values = props(
            description=description,
            is_active=is_active,
            is_public=is_public,
            driver=driver,
            scheduler=scheduler,
            use_host_network=use_host_network,
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
            driver_opts=_json(driver_opts),
            scheduler_opts=_json(scheduler_opts),
        )
        await mutate(
            api,
            "modify_scaling_group",
            {"name": (name, "String!"), "props": (values, "ModifyScalingGroupInput!")},
        )

    @classmethod
    async def delete(cls, api: APIClient, name: str) -> None:
        """Delete the resource group (refused while agents or sessions use it)."""
        await mutate(api, "delete_scaling_group", {"name": (name, "String!")})

    @classmethod
    async def associate_domain(cls, api: APIClient, scaling_group: str, domain: str) -> None:
        """Let *domain* use the resource group."""
        await mutate(
            api,
            "associate_scaling_group_with_domain",
            {"scaling_group": (scaling_group, "String!"), "domain": (domain, "String!")},
        )

    @classmethod
    async def dissociate_domain(cls, api: APIClient, scaling_group: str, domain: str) -> None:
        """Stop *domain* from using the resource group."""
        await mutate(
            api,
            "disassociate_scaling_group_with_domain",
            {"scaling_group": (scaling_group, "String!"), "domain": (domain, "String!")},
        )

    @classmethod
    async def dissociate_all_domain(cls, api: APIClient, domain: str) -> None:
        """Stop *domain* from using any resource group."""
        await mutate(
            api, "disassociate_all_scaling_groups_with_domain", {"domain": (domain, "String!")}
        )

    # The variable types below are the official client's (UUID! where it says
    # so, String! elsewhere), so a manager that serves it serves these too.

    @classmethod
    async def associate_group(cls, api: APIClient, scaling_group: str, group_id: str) -> None:
        """Let the project *group_id* use the resource group."""
        await mutate(
            api,
            "associate_scaling_group_with_user_group",
            {"scaling_group": (scaling_group, "String!"), "user_group": (group_id, "UUID!")},
        )

    @classmethod
    async def dissociate_group(cls, api: APIClient, scaling_group: str, group_id: str) -> None:
        """Stop the project *group_id* from using the resource group."""
        await mutate(
            api,
            "disassociate_scaling_group_with_user_group",
            {"scaling_group": (scaling_group, "String!"), "user_group": (group_id, "String!")},
        )

    @classmethod
    async def dissociate_all_group(cls, api: APIClient, group_id: str) -> None:
        """Stop the project *group_id* from using any resource group."""
        await mutate(
            api, "disassociate_all_scaling_groups_with_group", {"user_group": (group_id, "UUID!")}
        )

    @classmethod
    async def associate_keypair(cls, api: APIClient, scaling_group: str, access_key: str) -> None:
        """Let the keypair *access_key* use the resource group."""
        await mutate(
            api,
            "associate_scaling_group_with_keypair",
            {"scaling_group": (scaling_group, "String!"), "access_key": (access_key, "String!")},
        )

    @classmethod
    async def dissociate_keypair(cls, api: APIClient, scaling_group: str, access_key: str) -> None:
        """Stop the keypair *access_key* from using the resource group."""
        await mutate(
            api,
            "disassociate_scaling_group_with_keypair",
            {"scaling_group": (scaling_group, "String!"), "access_key": (access_key, "String!")},
        )


class ResourcePreset:
    """Resource presets: named resource slots users pick when creating sessions."""

    FIELDS: Final = ("name", "resource_slots", "shared_memory")

    @classmethod
    async def list(cls, api: APIClient, *, fields: Sequence[str] = FIELDS) -> builtins.list[_Item]:
        """Every preset."""
        return await fetch_list(api, "resource_presets", fields=fields)

    @classmethod
    async def detail(
        cls, api: APIClient, name: str, *, fields: Sequence[str] = FIELDS
    ) -> _Item | None:
        """The preset *name*; ``None`` if there is none."""
        return await fetch_object(
            api, "resource_preset", fields=fields, variables={"name": (name, "String!")}
        )

    @classmethod
    async def create(
        cls,
        api: APIClient,
        name: str,
        resource_slots: Mapping[str, Any] | str,
        *,
        shared_memory: str | None = None,
    ) -> _Item:
        """Create a preset (*resource_slots* such as ``{"cpu": "2", "mem": "4g"}``;
        *shared_memory* a size such as ``"64m"``); answers the new ``resource_preset``."""
        values = props(resource_slots=_json(resource_slots), shared_memory=shared_memory)
        payload = await mutate(
            api,
            "create_resource_preset",
            {"name": (name, "String!"), "props": (values, "CreateResourcePresetInput!")},
            result="resource_preset",
            fields=cls.FIELDS,
        )
        return dict(payload.get("resource_preset") or {})

    @classmethod
    async def update(
        cls,
        api: APIClient,
        name: str,
        *,
        resource_slots: Mapping[str, Any] | str | None = None,
        shared_memory: str | None = None,
    ) -> None:
        """Change the preset *name* (only the keywords given)."""
        values = props(resource_slots=_json(resource_slots), shared_memory=shared_memory)
        await mutate(
            api,
            "modify_resource_preset",
            {"name": (name, "String!"), "props": (values, "ModifyResourcePresetInput!")},
        )

    @classmethod
    async def delete(cls, api: APIClient, name: str) -> None:
        """Delete the preset *name*."""
        await mutate(api, "delete_resource_preset", {"name": (name, "String!")})


class Agent:
    """Agents (``agent_list``, ``agent``): superadmins only."""

    LIST_FIELDS: Final = ("id", "status", "scaling_group", "available_slots", "occupied_slots")
    INFO_FIELDS: Final = (
        "id",
        "status",
        "scaling_group",
        "addr",
        "region",
        "architecture",
        "version",
        "first_contact",
        "cpu_cur_pct",
        "mem_cur_bytes",
        "available_slots",
        "occupied_slots",
    )

    @classmethod
    async def list(
        cls,
        api: APIClient,
        *,
        status: str | None = "ALIVE",
        scaling_group: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        fields: Sequence[str] = LIST_FIELDS,
        limit: int = 20,
        offset: int = 0,
    ) -> Page:
        """One page of ``agent_list`` (by default the ``ALIVE`` agents)."""
        return await paginated_list(
            api,
            "agent_list",
            fields=fields,
            variables={
                "status": (status, "String"),
                "scaling_group": (scaling_group, "String"),
                "filter": (filter, "String"),
                "order": (order, "String"),
            },
            limit=limit,
            offset=offset,
        )

    @classmethod
    async def detail(
        cls, api: APIClient, agent_id: str, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The agent *agent_id*; ``None`` if there is none."""
        return await fetch_object(
            api, "agent", fields=fields, variables={"agent_id": (agent_id, "String!")}
        )
