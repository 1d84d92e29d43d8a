"""Who may use the cluster: users, projects (groups), domains, keypairs, resource policies.

Each class groups the GraphQL queries and mutations of one kind of object
(``POST /admin/gql``, built by :mod:`bai.client.admin`), with the names and
argument shapes of the spec and of the official client's ``User``,
``Group``, ``Domain``, ``KeyPair`` and ``KeyPairResourcePolicy`` functions,
so one manager serves both clients.  The methods are class methods taking
the :class:`~bai.client.request.APIClient` first::

    async with APIClient(config) as api:
        await User.create(api, "default", "ann@example.com", "secret-pass-1")
        page = await User.list(api, status="active", limit=50)

In ``create``/``update`` methods a keyword left ``None`` is not sent: the
manager's default applies (create) or the value stays as it is (update).
``fields`` picks the GraphQL fields answered; each class names sensible
defaults.  Most calls need an administrator's keypair; a domain admin acts
inside its own domain only; the manager decides and refuses with a
:class:`~bai.client.exceptions.GraphQLError` or
:class:`~bai.client.exceptions.MutationFailed` naming the reason.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from bai.client.admin import Page, Variables, fetch_list, fetch_object, mutate, paginated_list
from bai.client.request import APIClient
from bai.common.errors import InvalidValue

__all__ = [
    "POLICY_KINDS",
    "Domain",
    "Group",
    "KeyPair",
    "PolicyKind",
    "ResourcePolicy",
    "User",
    "props",
]

_Item = dict[str, Any]
PolicyKind = Literal["keypair", "user", "project"]
POLICY_KINDS: Final[tuple[PolicyKind, ...]] = ("keypair", "user", "project")


def props(**values: Any) -> dict[str, Any]:
    """The ``props`` input of a mutation: the keywords that are not ``None``."""
    return {key: value for key, value in values.items() if value is not None}


def _slots(value: Mapping[str, Any] | str | None) -> str | None:
    """A resource-slot mapping as the ``JSONString`` the schema takes."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(dict(value))


def _ids(values: Iterable[str | uuid.UUID] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


class User:
    """Users (``user``, ``user_list``; ``create_``, ``modify_``, ``delete_``, ``purge_user``)."""

    LIST_FIELDS: Final = (
        "uuid",
        "email",
        "username",
        "full_name",
        "domain_name",
        "role",
        "status",
        "created_at",
    )
    INFO_FIELDS: Final = (
        *LIST_FIELDS,
        "need_password_change",
        "description",
        "resource_policy",
        "main_access_key",
        "groups { id name }",
    )

    @classmethod
    async def list(
        cls,
        api: APIClient,
        *,
        status: str | None = None,
        group: str | uuid.UUID | None = None,
        domain_name: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        fields: Sequence[str] = LIST_FIELDS,
        limit: int = 20,
        offset: int = 0,
    ) -> Page:
        """One page of ``user_list``: users with *status* (``active``, ``inactive``,
        ``deleted``, ``before-verification``), in project *group* or domain."""
        return await paginated_list(
            api,
            "user_list",
            fields=fields,
            variables={
                "status": (status, "String"),
                "group_id": (None if group is None else str(group), "UUID"),
                "domain_name": (domain_name, "String"),
                "filter": (filter, "String"),
                "order": (order, "String"),
            },
            limit=limit,
            offset=offset,
        )

    @classmethod
    async def detail(
        cls, api: APIClient, email: str | None = None, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The user with *email* (the caller when ``None``); ``None`` if there is none."""
        variables: Variables = {} if email is None else {"email": (email, "String")}
        return await fetch_object(api, "user", fields=fields, variables=variables)

    @classmethod
    async def detail_by_uuid(
        cls, api: APIClient, user_id: str | uuid.UUID, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The user with the UUID *user_id*; ``None`` if there is none."""
        return await fetch_object(
            api, "user_from_uuid", fields=fields, variables={"user_id": (str(user_id), "ID")}
        )

    @classmethod
    async def create(
        cls,
        api: APIClient,
        domain_name: str,
        email: str,
        password: str,
        *,
        username: str | None = None,
        full_name: str | None = None,
        role: str = "user",
        status: str = "active",
        need_password_change: bool = False,
        description: str = "",
        resource_policy: str | None = None,
        group_ids: Iterable[str | uuid.UUID] | None = None,
        fields: Sequence[str] = ("uuid", "email", "username", "domain_name"),
    ) -> _Item:
        """Create a user (with a keypair of its own); answers the new ``user``.

        ``username`` defaults to *email* as the official client's CLI sends it.
        """
        values = props(
            password=password,
            username=username if username is not None else email,
            full_name=full_name,
            role=role,
            status=status,
            need_password_change=need_password_change,
            description=description,
            domain_name=domain_name,
            resource_policy=resource_policy,
            group_ids=_ids(group_ids),
        )
        payload = await mutate(
            api,
            "create_user",
            {"email": (email, "String!"), "props": (values, "UserInput!")},
            result="user",
            fields=fields,
        )
        return dict(payload.get("user") or {})

    @classmethod
    async def update(
        cls,
        api: APIClient,
        email: str,
        *,
        password: str | None = None,
        username: str | None = None,
        full_name: str | None = None,
        domain_name: str | None = None,
        role: str | None = None,
        status: str | None = None,
        need_password_change: bool | None = None,
        description: str | None = None,
        resource_policy: str | None = None,
        group_ids: Iterable[str | uuid.UUID] | None = None,
        main_access_key: str | None = None,
    ) -> None:
        """Change the user with *email* (only the keywords given)."""
        values = props(
            password=password,
            username=username,
            full_name=full_name,
            domain_name=domain_name,
            role=role,
            status=status,
            need_password_change=need_password_change,
            description=description,
            resource_policy=resource_policy,
            group_ids=_ids(group_ids),
            main_access_key=main_access_key,
        )
        await mutate(
            api,
            "modify_user",
            {"email": (email, "String!"), "props": (values, "ModifyUserInput!")},
        )

    @classmethod
    async def delete(cls, api: APIClient, email: str) -> None:
        """Deactivate the user (status ``deleted``, keypairs inactive); its data stays."""
        await mutate(api, "delete_user", {"email": (email, "String!")})

    @classmethod
    async def purge(
        cls, api: APIClient, email: str, *, purge_shared_vfolders: bool = False
    ) -> None:
        """Delete the user for good with its folders and ended sessions; folders it
        shares with others pass to the caller unless *purge_shared_vfolders*."""
        await mutate(
            api,
            "purge_user",
            {
                "email": (email, "String!"),
                "props": ({"purge_shared_vfolders": purge_shared_vfolders}, "PurgeUserInput!"),
            },
        )


class Group:
    """Projects, which the API calls groups (``group``, ``groups``, ``create_group``...)."""

    LIST_FIELDS: Final = ("id", "name", "domain_name", "is_active", "description", "created_at")
    INFO_FIELDS: Final = (
        *LIST_FIELDS,
        "total_resource_slots",
        "allowed_vfolder_hosts",
        "integration_id",
        "scaling_groups",
    )

    @classmethod
    async def list(
        cls,
        api: APIClient,
        *,
        domain_name: str | None = None,
        is_active: bool | None = None,
        fields: Sequence[str] = LIST_FIELDS,
    ) -> builtins.list[_Item]:
        """The projects of *domain_name* (the caller's domain when ``None``)."""
        return await fetch_list(
            api,
            "groups",
            fields=fields,
            variables={
                "domain_name": (domain_name, "String"),
                "is_active": (is_active, "Boolean"),
            },
        )

    @classmethod
    async def detail(
        cls, api: APIClient, gid: str | uuid.UUID, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The project with id *gid*; ``None`` if there is none."""
        return await fetch_object(
            api, "group", fields=fields, variables={"id": (str(gid), "UUID!")}
        )

    @classmethod
    async def from_name(
        cls,
        api: APIClient,
        name: str,
        *,
        domain_name: str | None = None,
        fields: Sequence[str] = INFO_FIELDS,
    ) -> builtins.list[_Item]:
        """The projects named *name* (one per domain at most)."""
        return await fetch_list(
            api,
            "groups_by_name",
            fields=fields,
            variables={"name": (name, "String!"), "domain_name": (domain_name, "String")},
        )

    @classmethod
    async def create(
        cls,
        api: APIClient,
        domain_name: str,
        name: str,
        *,
        description: str = "",
        is_active: bool = True,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | str | None = None,
        integration_id: str | None = None,
        resource_policy: str | None = None,
        fields: Sequence[str] = ("id", "domain_name", "name"),
    ) -> _Item:
        """Create a project in *domain_name*; answers the new ``group``."""
        values = props(
            description=description,
            is_active=is_active,
            domain_name=domain_name,
            total_resource_slots=_slots(total_resource_slots),
            allowed_vfolder_hosts=_slots(allowed_vfolder_hosts),
            integration_id=integration_id,
            resource_policy=resource_policy,
        )
        payload = await mutate(
            api,
            "create_group",
            {"name": (name, "String!"), "props": (values, "GroupInput!")},
            result="group",
            fields=fields,
        )
        return dict(payload.get("group") or {})

    @classmethod
    async def update(
        cls,
        api: APIClient,
        gid: str | uuid.UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        is_active: bool | None = None,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | str | None = None,
        integration_id: str | None = None,
        resource_policy: str | None = None,
    ) -> None:
        """Change the project *gid* (only the keywords given)."""
        values = props(
            name=name,
            description=description,
            is_active=is_active,
            total_resource_slots=_slots(total_resource_slots),
            allowed_vfolder_hosts=_slots(allowed_vfolder_hosts),
            integration_id=integration_id,
            resource_policy=resource_policy,
        )
        await cls._modify(api, gid, values)

    @classmethod
    async def add_users(
        cls, api: APIClient, gid: str | uuid.UUID, user_uuids: Iterable[str | uuid.UUID]
    ) -> None:
        """Make the users (by UUID) members of the project."""
        await cls._modify(api, gid, {"user_update_mode": "add", "user_uuids": _ids(user_uuids)})

    @classmethod
    async def remove_users(
        cls, api: APIClient, gid: str | uuid.UUID, user_uuids: Iterable[str | uuid.UUID]
    ) -> None:
        """Take the users (by UUID) out of the project."""
        await cls._modify(api, gid, {"user_update_mode": "remove", "user_uuids": _ids(user_uuids)})

    @classmethod
    async def _modify(cls, api: APIClient, gid: str | uuid.UUID, values: dict[str, Any]) -> None:
        await mutate(
            api,
            "modify_group",
            {"gid": (str(gid), "UUID!"), "props": (values, "ModifyGroupInput!")},
        )

    @classmethod
    async def delete(cls, api: APIClient, gid: str | uuid.UUID) -> None:
        """Deactivate the project (it stays, inactive)."""
        await mutate(api, "delete_group", {"gid": (str(gid), "UUID!")})

    @classmethod
    async def purge(cls, api: APIClient, gid: str | uuid.UUID) -> None:
        """Delete the project for good (refused while it has folders or live sessions)."""
        await mutate(api, "purge_group", {"gid": (str(gid), "UUID!")})


class Domain:
    """Domains (``domain``, ``domains``, ``create_domain``/``modify_domain``/...)."""

    LIST_FIELDS: Final = ("name", "description", "is_active", "created_at")
    INFO_FIELDS: Final = (
        *LIST_FIELDS,
        "total_resource_slots",
        "allowed_vfolder_hosts",
        "allowed_docker_registries",
        "integration_id",
        "scaling_groups",
    )

    @classmethod
    async def list(
        cls, api: APIClient, *, is_active: bool | None = None, fields: Sequence[str] = LIST_FIELDS
    ) -> builtins.list[_Item]:
        """Every domain (superadmins)."""
        return await fetch_list(
            api, "domains", fields=fields, variables={"is_active": (is_active, "Boolean")}
        )

    @classmethod
    async def detail(
        cls, api: APIClient, name: str | None = None, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The domain *name* (the caller's when ``None``); ``None`` if there is none."""
        return await fetch_object(
            api, "domain", fields=fields, variables={"name": (name, "String")}
        )

    @classmethod
    async def create(
        cls,
        api: APIClient,
        name: str,
        *,
        description: str = "",
        is_active: bool = True,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | str | None = None,
        allowed_docker_registries: Sequence[str] | None = None,
        integration_id: str | None = None,
        fields: Sequence[str] = ("name",),
    ) -> _Item:
        """Create a domain; answers the new ``domain``."""
        values = props(
            description=description,
            is_active=is_active,
            total_resource_slots=_slots(total_resource_slots),
            allowed_vfolder_hosts=_slots(allowed_vfolder_hosts),
            allowed_docker_registries=(
                None if allowed_docker_registries is None else list(allowed_docker_registries)
            ),
            integration_id=integration_id,
        )
        payload = await mutate(
            api,
            "create_domain",
            {"name": (name, "String!"), "props": (values, "DomainInput!")},
            result="domain",
            fields=fields,
        )
        return dict(payload.get("domain") or {})

    @classmethod
    async def update(
        cls,
        api: APIClient,
        name: str,
        *,
        new_name: str | None = None,
        description: str | None = None,
        is_active: bool | None = None,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Mapping[str, Any] | str | None = None,
        allowed_docker_registries: Sequence[str] | None = None,
        integration_id: str | None = None,
    ) -> None:
        """Change the domain *name* (only the keywords given; *new_name* renames it)."""
        values = props(
            name=new_name,
            description=description,
            is_active=is_active,
            total_resource_slots=_slots(total_resource_slots),
            allowed_vfolder_hosts=_slots(allowed_vfolder_hosts),
            allowed_docker_registries=(
                None if allowed_docker_registries is None else list(allowed_docker_registries)
            ),
            integration_id=integration_id,
        )
        await mutate(
            api,
            "modify_domain",
            {"name": (name, "String!"), "props": (values, "ModifyDomainInput!")},
        )

    @classmethod
    async def delete(cls, api: APIClient, name: str) -> None:
        """Deactivate the domain (it stays, inactive)."""
        await mutate(api, "delete_domain", {"name": (name, "String!")})

    @classmethod
    async def purge(cls, api: APIClient, name: str) -> None:
        """Delete the domain for good (refused while it has users, projects or sessions)."""
        await mutate(api, "purge_domain", {"name": (name, "String!")})


class KeyPair:
    """Keypairs (``keypair``, ``keypair_list``, ``create_keypair``/``modify_keypair``/...)."""

    LIST_FIELDS: Final = (
        "user_id",
        "access_key",
        "is_active",
        "is_admin",
        "resource_policy",
        "created_at",
    )
    INFO_FIELDS: Final = (
        *LIST_FIELDS,
        "secret_key",
        "rate_limit",
        "num_queries",
        "concurrency_used",
        "last_used",
    )

    @classmethod
    async def list(
        cls,
        api: APIClient,
        *,
        user_id: str | None = None,
        is_active: bool | None = None,
        domain_name: str | None = None,
        filter: str | None = None,
        order: str | None = None,
        fields: Sequence[str] = LIST_FIELDS,
        limit: int = 20,
        offset: int = 0,
    ) -> Page:
        """One page of ``keypair_list``, optionally of one user (by email)."""
        return await paginated_list(
            api,
            "keypair_list",
            fields=fields,
            variables={
                "email": (user_id, "String"),
                "is_active": (is_active, "Boolean"),
                "domain_name": (domain_name, "String"),
                "filter": (filter, "String"),
                "order": (order, "String"),
            },
            limit=limit,
            offset=offset,
        )

    @classmethod
    async def detail(
        cls, api: APIClient, access_key: str | None = None, *, fields: Sequence[str] = INFO_FIELDS
    ) -> _Item | None:
        """The keypair *access_key* (the caller's when ``None``); ``None`` if there is none."""
        variables: Variables = {} if access_key is None else {"access_key": (access_key, "String")}
        return await fetch_object(api, "keypair", fields=fields, variables=variables)

    @classmethod
    async def create(
        cls,
        api: APIClient,
        user_id: str,
        *,
        is_active: bool = True,
        is_admin: bool = False,
        resource_policy: str | None = None,
        rate_limit: int | None = None,
        concurrency_limit: int | None = None,
        fields: Sequence[str] = ("access_key", "secret_key"),
    ) -> _Item:
        """Create a keypair for the user *user_id* (an email); answers the new ``keypair``."""
        values = props(
            is_active=is_active,
            is_admin=is_admin,
            resource_policy=resource_policy,
            rate_limit=rate_limit,
            concurrency_limit=concurrency_limit,
        )
        payload = await mutate(
            api,
            "create_keypair",
            {"user_id": (user_id, "String!"), "props": (values, "KeyPairInput!")},
            result="keypair",
            fields=fields,
        )
        return dict(payload.get("keypair") or {})

    @classmethod
    async def update(
        cls,
        api: APIClient,
        access_key: str,
        *,
        is_active: bool | None = None,
        is_admin: bool | None = None,
        resource_policy: str | None = None,
        rate_limit: int | None = None,
        concurrency_limit: int | None = None,
    ) -> None:
        """Change the keypair (only the keywords given)."""
        values = props(
            is_active=is_active,
            is_admin=is_admin,
            resource_policy=resource_policy,
            rate_limit=rate_limit,
            concurrency_limit=concurrency_limit,
        )
        await mutate(
            api,
            "modify_keypair",
            {"access_key": (access_key, "String!"), "props": (values, "ModifyKeyPairInput!")},
        )

    @classmethod
    async def activate(cls, api: APIClient, access_key: str) -> None:
        """Let the keypair sign requests again."""
        await cls.update(api, access_key, is_active=True)

    @classmethod
    async def deactivate(cls, api: APIClient, access_key: str) -> None:
        """Refuse every request the keypair signs until it is activated again."""
        await cls.update(api, access_key, is_active=False)

    @classmethod
    async def delete(cls, api: APIClient, access_key: str) -> None:
        """Delete the keypair for good."""
        await mutate(api, "delete_keypair", {"access_key": (access_key, "String!")})


class ResourcePolicy:
    """Resource policies of keypairs, users and projects (*kind* ``keypair``,
    ``user`` or ``project``): ``{kind}_resource_policy``/``..._policies`` and the
    ``create_``/``modify_``/``delete_{kind}_resource_policy`` mutations.

    ``values`` of :meth:`create` and :meth:`update` are the input fields of the
    kind, e.g. for keypairs ``total_resource_slots`` (a mapping or its JSON),
    ``max_concurrent_sessions``, ``max_containers_per_session``,
    ``idle_timeout``, ``max_session_lifetime``, ``allowed_vfolder_hosts``;
    for users and projects ``max_vfolder_count`` and ``max_quota_scope_size``.
    """

    FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
        "keypair": (
            "name",
            "created_at",
            "default_for_unspecified",
            "total_resource_slots",
            "max_concurrent_sessions",
            "max_containers_per_session",
            "max_session_lifetime",
            "idle_timeout",
            "allowed_vfolder_hosts",
        ),
        "user": ("name", "created_at", "max_vfolder_count", "max_quota_scope_size"),
        "project": ("name", "created_at", "max_vfolder_count", "max_quota_scope_size"),
    }
    #: Input fields that the schema takes as ``JSONString``.
    _JSON_FIELDS: Final = frozenset(
        {"total_resource_slots", "allowed_vfolder_hosts", "max_pending_session_resource_slots"}
    )

    #: The kinds as the schema's type names spell them.
    _TYPE_NAMES: Final[Mapping[PolicyKind, str]] = {
        "keypair": "KeyPair",
        "user": "User",
        "project": "Project",
    }

    @staticmethod
    def _kind(kind: str) -> PolicyKind:
        for known in POLICY_KINDS:
            if kind == known:
                return known
        raise InvalidValue(f"must be one of {', '.join(POLICY_KINDS)}", value=kind, field="kind")

    @classmethod
    def _values(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            key: _slots(value) if key in cls._JSON_FIELDS else value
            for key, value in values.items()
            if value is not None
        }

    @classmethod
    async def list(
        cls, api: APIClient, kind: str = "keypair", *, fields: Sequence[str] | None = None
    ) -> builtins.list[_Item]:
        """Every policy of *kind*."""
        checked = cls._kind(kind)
        return await fetch_list(
            api, f"{checked}_resource_policies", fields=fields or cls.FIELDS[checked]
        )

    @classmethod
    async def detail(
        cls,
        api: APIClient,
        name: str,
        kind: str = "keypair",
        *,
        fields: Sequence[str] | None = None,
    ) -> _Item | None:
        """The policy *name* of *kind*; ``None`` if there is none."""
        checked = cls._kind(kind)
        return await fetch_object(
            api,
            f"{checked}_resource_policy",
            fields=fields or cls.FIELDS[checked],
            # String! fits both a nullable and a required ``name`` argument.
            variables={"name": (name, "String!")},
        )

    @classmethod
    async def create(
        cls, api: APIClient, name: str, values: Mapping[str, Any], kind: str = "keypair"
    ) -> None:
        """Create the policy *name* of *kind* with *values* (see the class docs)."""
        checked = cls._kind(kind)
        await mutate(
            api,
            f"create_{checked}_resource_policy",
            {
                "name": (name, "String!"),
                "props": (
                    cls._values(values),
                    f"Create{cls._TYPE_NAMES[checked]}ResourcePolicyInput!",
                ),
            },
        )

    @classmethod
    async def update(
        cls, api: APIClient, name: str, values: Mapping[str, Any], kind: str = "keypair"
    ) -> None:
        """Change the policy *name* of *kind* (only the keys of *values*)."""
        checked = cls._kind(kind)
        await mutate(
            api,
            f"modify_{checked}_resource_policy",
            {
                "name": (name, "String!"),
                "props": (
                    cls._values(values),
                    f"Modify{cls._TYPE_NAMES[checked]}ResourcePolicyInput!",
                ),
            },
        )

    @classmethod
    async def delete(cls, api: APIClient, name: str, kind: str = "keypair") -> None:
        """Delete the policy *name* of *kind* (refused while something uses it)."""
        checked = cls._kind(kind)
        await mutate(api, f"delete_{checked}_resource_policy", {"name": (name, "String!")})
