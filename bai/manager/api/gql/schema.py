"""The GraphQL schema of the admin API (:data:`SCHEMA`), field names as the spec writes them.

Types follow the spec's "Manager GraphQL API" chapter and the fields the
official client 23.9 asks for; objects are plain dicts built by the
resolver modules, so most fields resolve by key.  Paginated fields are
``*_list(limit, offset, ...)`` returning ``{items, total_count}`` and take
``filter`` / ``order`` expressions (:mod:`~bai.manager.api.gql.filters`).
Resolvers are synchronous (see :mod:`bai.manager.api.gql.execution`).

Queries: ``compute_session``, ``compute_session_list``,
``compute_container``, ``compute_container_list``, ``agent``, ``agents``,
``agent_list``, ``domain``, ``domains``, ``group``, ``groups``,
``groups_by_name``, ``user``, ``user_from_uuid``, ``users``, ``user_list``,
``keypair``, ``keypairs``, ``keypair_list``, ``keypair_resource_policy``,
``keypair_resource_policies``, ``scaling_group``, ``scaling_groups``,
``scaling_groups_for_domain``, ``scaling_groups_for_user_group``,
``scaling_groups_for_keypair``, ``resource_preset``, ``resource_presets``,
``storage_volume``, ``storage_volume_list``, ``vfolder_host_permissions``,
``vfolder_list``, ``vfolder_own_list``, ``vfolder_invited_list``,
``vfolder_project_list``, ``image``, ``images``.  Who may ask what is
documented per resolver module; a field the caller may not query is
``null`` with a ``forbidden`` error (``extensions.code``).

Queries of :mod:`~bai.manager.api.gql.mutations.policies`:
``user_resource_policy``, ``user_resource_policies``,
``project_resource_policy``, ``project_resource_policies``.

Mutations (:mod:`~bai.manager.api.gql.mutations`): ``create_``/``modify_``/
``delete_`` of ``keypair_resource_policy``, ``user_resource_policy``,
``project_resource_policy``, ``keypair``, ``domain`` (and ``purge_domain``),
``group`` (by ``gid`` or ``name``; and ``purge_group``), ``user`` (and ``purge_user``),
``scaling_group`` and ``resource_preset``;
``associate_``/``disassociate_scaling_group_with_domain``,
``..._with_user_group``, ``..._with_keypair``,
``disassociate_all_scaling_groups_with_domain`` and
``disassociate_all_scaling_groups_with_group``.

Not in the schema (a query naming them fails validation): the image
mutations of the spec, the ``images`` filters
``is_installed``/``domain``/``group``/``scaling_group`` and the
``installed``/``installed_agents``/``humanized_name`` image fields (bai does
not record which agent holds which image), and ``User.password``, which is
never readable.  ``ComputeSession.cluster_template`` (reserved in the spec)
and ``KeyPair.dotfiles``/``bootstrap_script`` are always ``null``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
)

from bai.manager.api.gql import identity, images, mutations, resources, sessions, vfolders
from bai.manager.api.gql.scalars import BigInt, DateTime, JSONString, UUIDType

__all__ = ["SCHEMA"]

Resolver = Callable[..., Any]


def _fields(**types: GraphQLOutputType) -> dict[str, GraphQLField]:
    return {name: GraphQLField(kind) for name, kind in types.items()}


def _args(**types: GraphQLInputType) -> dict[str, GraphQLArgument]:
    return {name: GraphQLArgument(kind) for name, kind in types.items()}


def _field(kind: GraphQLOutputType, resolve: Resolver, **args: GraphQLInputType) -> GraphQLField:
    return GraphQLField(kind, args=_args(**args), resolve=resolve)


def _described(kind: GraphQLOutputType, description: str) -> GraphQLField:
    return GraphQLField(kind, description=description)


def _list(kind: GraphQLOutputType) -> GraphQLList[Any]:
    return GraphQLList(kind)


def _required(kind: Any) -> GraphQLNonNull[Any]:
    return GraphQLNonNull(kind)


STR, INT, BOOL, FLOAT = GraphQLString, GraphQLInt, GraphQLBoolean, GraphQLFloat
STRS = GraphQLList(GraphQLString)

_PAGE_ARGS: Final[dict[str, GraphQLInputType]] = {
    "limit": GraphQLNonNull(GraphQLInt),
    "offset": GraphQLNonNull(GraphQLInt),
}


def _paginated(name: str, item: GraphQLObjectType) -> GraphQLObjectType:
    return GraphQLObjectType(name, _fields(items=_list(item), total_count=INT))


# ------------------------------------------------------------------------ common

KVPair = GraphQLObjectType("KVPair", _fields(key=STR, value=STR))
ResourceLimit = GraphQLObjectType("ResourceLimit", _fields(key=STR, min=STR, max=STR))

# ---------------------------------------------------------------------- sessions

ComputeContainer = GraphQLObjectType(
    "ComputeContainer",
    lambda: {
        **_fields(
            id=UUIDType,
            idx=INT,
            role=STR,
            cluster_role=STR,
            cluster_idx=INT,
            local_rank=INT,
            hostname=STR,
            cluster_hostname=STR,
            session_id=UUIDType,
            image=STR,
            architecture=STR,
            status=STR,
            status_info=STR,
            status_data=JSONString,
            status_history=JSONString,
            status_changed=DateTime,
            created_at=DateTime,
            terminated_at=DateTime,
            agent=STR,
            agent_addr=STR,
            container_id=STR,
            resource_opts=JSONString,
            occupied_slots=JSONString,
            requested_slots=JSONString,
            attached_devices=JSONString,
            service_ports=JSONString,
            preopen_ports=_list(INT),
            exit_code=INT,
            live_stat=JSONString,
            last_stat=JSONString,
        ),
        "registry": _field(STR, sessions.resolve_container_registry),
    },
)

ComputeSession: GraphQLObjectType = GraphQLObjectType(
    "ComputeSession",
    lambda: {
        **_fields(
            id=UUIDType,
            session_id=UUIDType,
            main_kernel_id=UUIDType,
            name=STR,
            session_name=STR,
            type=STR,
            session_type=STR,
            tag=STR,
            image=STR,
            architecture=STR,
            cluster_mode=STR,
            cluster_size=INT,
            priority=INT,
            domain_name=STR,
            group_name=STR,
            group_id=UUIDType,
            user_email=STR,
            user_id=UUIDType,
            access_key=STR,
            created_user_email=STR,
            created_user_id=UUIDType,
            created_user_uuid=UUIDType,
            status=STR,
            status_info=STR,
            status_data=JSONString,
            status_history=JSONString,
            status_changed=DateTime,
            status_updated=DateTime,
            created_at=DateTime,
            terminated_at=DateTime,
            starts_at=DateTime,
            scheduled_at=DateTime,
            startup_command=STR,
            batch_timeout=BigInt,
            result=STR,
            resource_opts=JSONString,
            scaling_group=STR,
            service_ports=JSONString,
            mounts=STRS,
            vfolder_mounts=JSONString,
            requested_slots=JSONString,
            occupied_slots=JSONString,
            occupying_slots=JSONString,
            num_queries=BigInt,
            agent_ids=STRS,
            containers=_list(ComputeContainer),
            abusing_reports=_list(JSONString),
        ),
        "idle_checks": _field(JSONString, sessions.resolve_idle_checks),
        "registry": _field(STR, sessions.resolve_session_registry),
        "cluster_template": _described(STR, "Reserved in the spec: always null."),
        "dependencies": _field(_list(ComputeSession), sessions.resolve_session_dependencies),
    },
)

# ------------------------------------------------------------------------ agents

Agent = GraphQLObjectType(
    "Agent",
    lambda: {
        **_fields(
            id=GraphQLID,
            status=STR,
            status_changed=DateTime,
            region=STR,
            scaling_group=STR,
            schedulable=BOOL,
            available_slots=JSONString,
            occupied_slots=JSONString,
            addr=STR,
            public_host=STR,
            first_contact=DateTime,
            lost_at=DateTime,
            version=STR,
            architecture=STR,
            compute_plugins=JSONString,
            mem_slots=INT,
            cpu_slots=FLOAT,
            gpu_slots=FLOAT,
            tpu_slots=FLOAT,
            used_mem_slots=INT,
            used_cpu_slots=FLOAT,
            used_gpu_slots=FLOAT,
            used_tpu_slots=FLOAT,
        ),
        "live_stat": _described(JSONString, "Always null: bai samples kernels, not agents."),
        "hardware_metadata": _described(JSONString, "Always null: not collected from agents."),
        "local_config": _described(JSONString, "Always null: not collected from agents."),
        "cpu_cur_pct": _described(
            FLOAT, "Percent of the agent's CPUs allocated to its kernels (not measured use)."
        ),
        "mem_cur_bytes": _described(
            FLOAT, "Bytes of memory allocated to the agent's kernels (not measured use)."
        ),
        "compute_containers": _field(
            _list(ComputeContainer), sessions.resolve_agent_containers, status=STR
        ),
    },
)

# ---------------------------------------------------------------------- identity

Domain = GraphQLObjectType(
    "Domain",
    lambda: {
        **_fields(
            name=STR,
            description=STR,
            is_active=BOOL,
            created_at=DateTime,
            modified_at=DateTime,
            total_resource_slots=JSONString,
            allowed_vfolder_hosts=STRS,
            allowed_docker_registries=STRS,
            integration_id=STR,
        ),
        "scaling_groups": _field(STRS, identity.resolve_domain_scaling_groups),
    },
)

Group = GraphQLObjectType(
    "Group",
    lambda: {
        **_fields(
            id=UUIDType,
            name=STR,
            description=STR,
            is_active=BOOL,
            created_at=DateTime,
            modified_at=DateTime,
            domain_name=STR,
            total_resource_slots=JSONString,
            allowed_vfolder_hosts=STRS,
            integration_id=STR,
            resource_policy=STR,
        ),
        "scaling_groups": _field(STRS, identity.resolve_group_scaling_groups),
    },
)

UserGroup = GraphQLObjectType("UserGroup", _fields(id=UUIDType, name=STR))

User = GraphQLObjectType(
    "User",
    lambda: {
        **_fields(
            uuid=UUIDType,
            id=GraphQLID,
            username=STR,
            email=STR,
            need_password_change=BOOL,
            full_name=STR,
            description=STR,
            is_active=BOOL,
            status=STR,
            status_info=STR,
            created_at=DateTime,
            modified_at=DateTime,
            domain_name=STR,
            role=STR,
            resource_policy=STR,
            allowed_client_ip=STRS,
            totp_activated=BOOL,
            sudo_session_enabled=BOOL,
        ),
        "groups": _field(_list(UserGroup), identity.resolve_user_groups),
        "main_access_key": _field(STR, identity.resolve_user_main_access_key),
    },
)

# ---------------------------------------------------------------------- vfolders

VirtualFolder = GraphQLObjectType(
    "VirtualFolder",
    lambda: {
        **_fields(
            id=UUIDType,
            host=STR,
            name=STR,
            user=UUIDType,
            group=UUIDType,
            user_email=STR,
            group_name=STR,
            creator=STR,
            status=STR,
            unmanaged_path=STR,
            usage_mode=STR,
            permission=STR,
            ownership_type=STR,
            max_files=INT,
            max_size=BigInt,
            quota=BigInt,
            created_at=DateTime,
            last_used=DateTime,
            cloneable=BOOL,
        ),
        "num_files": _field(INT, vfolders.resolve_vfolder_num_files),
        "cur_size": _field(BigInt, vfolders.resolve_vfolder_cur_size),
    },
)

UserInfo = GraphQLObjectType("UserInfo", _fields(email=STR, full_name=STR))

KeyPair = GraphQLObjectType(
    "KeyPair",
    lambda: {
        **_fields(
            user_id=STR,
            access_key=STR,
            secret_key=STR,
            is_active=BOOL,
            is_admin=BOOL,
            resource_policy=STR,
            created_at=DateTime,
            modified_at=DateTime,
            last_used=DateTime,
            rate_limit=INT,
            num_queries=BigInt,
            user=UUIDType,
            domain_name=STR,
            ssh_public_key=STR,
            ssh_private_key=STR,
        ),
        "dotfiles": _described(STR, "Always null: dotfiles belong to users (/user-config)."),
        "bootstrap_script": _described(STR, "Always null: the script belongs to the user."),
        "user_info": _field(UserInfo, identity.resolve_keypair_user_info),
        "projects": _field(STRS, identity.resolve_keypair_projects),
        "concurrency_used": _field(INT, identity.resolve_keypair_concurrency_used),
        "compute_sessions": _field(
            _list(ComputeSession), sessions.resolve_keypair_sessions, status=STR
        ),
        "vfolders": _field(_list(VirtualFolder), vfolders.resolve_keypair_vfolders),
    },
)

KeyPairResourcePolicy = GraphQLObjectType(
    "KeyPairResourcePolicy",
    _fields(
        name=STR,
        created_at=DateTime,
        default_for_unspecified=STR,
        total_resource_slots=JSONString,
        max_session_lifetime=INT,
        max_concurrent_sessions=INT,
        max_pending_session_count=INT,
        max_pending_session_resource_slots=JSONString,
        max_containers_per_session=INT,
        idle_timeout=BigInt,
        allowed_vfolder_hosts=STRS,
        max_vfolder_count=INT,
        max_vfolder_size=BigInt,
    ),
)

# --------------------------------------------------------------------- resources

ScalingGroup = GraphQLObjectType(
    "ScalingGroup",
    _fields(
        name=STR,
        description=STR,
        is_active=BOOL,
        is_public=BOOL,
        created_at=DateTime,
        wsproxy_addr=STR,
        wsproxy_api_token=STR,
        driver=STR,
        driver_opts=JSONString,
        scheduler=STR,
        scheduler_opts=JSONString,
        use_host_network=BOOL,
    ),
)

StorageVolume = GraphQLObjectType(
    "StorageVolume",
    {
        **_fields(id=STR, backend=STR, path=STR, capabilities=STRS),
        "fsprefix": _described(STR, "Always null: volumes have no prefix in bai."),
        "hardware_metadata": _described(JSONString, "Always null: not collected."),
        "performance_metric": _described(JSONString, "Always null: not collected."),
        "usage": _described(JSONString, "Always null: ask a folder's usage instead."),
    },
)

VirtualFolderPermission = GraphQLObjectType(
    "VirtualFolderPermission", _fields(vfolder_host_permission_list=STRS)
)

ResourcePreset = GraphQLObjectType(
    "ResourcePreset", _fields(name=STR, resource_slots=JSONString, shared_memory=BigInt)
)

Image = GraphQLObjectType(
    "Image",
    _fields(
        id=UUIDType,
        name=STR,
        registry=STR,
        image=STR,
        tag=STR,
        architecture=STR,
        digest=STR,
        size_bytes=BigInt,
        labels=_list(KVPair),
        aliases=STRS,
        resource_limits=_list(ResourceLimit),
        supported_accelerators=STRS,
        created_at=DateTime,
    ),
)

UserResourcePolicy = GraphQLObjectType(
    "UserResourcePolicy",
    _fields(
        id=GraphQLID, name=STR, created_at=DateTime, max_vfolder_count=INT,
        max_quota_scope_size=BigInt,
    ),
)  # fmt: skip
ProjectResourcePolicy = GraphQLObjectType(
    "ProjectResourcePolicy",
    _fields(
        id=GraphQLID, name=STR, created_at=DateTime, max_vfolder_count=INT,
        max_quota_scope_size=BigInt,
    ),
)  # fmt: skip

# -------------------------------------------------------------------------- query

_LIST_FILTERS: Final[dict[str, GraphQLInputType]] = {"filter": STR, "order": STR}
VirtualFolderList = _paginated("VirtualFolderList", VirtualFolder)

Query = GraphQLObjectType(
    "Query",
    {
        "compute_session": _field(
            ComputeSession, sessions.resolve_compute_session, id=_required(UUIDType)
        ),
        "compute_session_list": _field(
            _paginated("ComputeSessionList", ComputeSession),
            sessions.resolve_compute_session_list,
            **_PAGE_ARGS,
            order_key=STR,
            order_asc=BOOL,
            domain_name=STR,
            group_id=STR,
            access_key=STR,
            status=STR,
            **_LIST_FILTERS,
        ),
        "compute_container": _field(
            ComputeContainer, sessions.resolve_compute_container, id=_required(UUIDType)
        ),
        "compute_container_list": _field(
            _paginated("ComputeContainerList", ComputeContainer),
            sessions.resolve_compute_container_list,
            **_PAGE_ARGS,
            session_id=_required(UUIDType),
            role=STR,
        ),
        "agent": _field(Agent, resources.resolve_agent, agent_id=_required(STR)),
        "agents": _field(_list(Agent), resources.resolve_agents, scaling_group=STR, status=STR),
        "agent_list": _field(
            _paginated("AgentList", Agent),
            resources.resolve_agent_list,
            **_PAGE_ARGS,
            order_key=STR,
            order_asc=BOOL,
            scaling_group=STR,
            status=STR,
            **_LIST_FILTERS,
        ),
        "domain": _field(Domain, identity.resolve_domain, name=STR),
        "domains": _field(_list(Domain), identity.resolve_domains, is_active=BOOL),
        "group": _field(Group, identity.resolve_group, id=_required(UUIDType), domain_name=STR),
        "groups": _field(_list(Group), identity.resolve_groups, domain_name=STR, is_active=BOOL),
        "groups_by_name": _field(
            _list(Group), identity.resolve_groups_by_name, name=_required(STR), domain_name=STR
        ),
        "user": _field(User, identity.resolve_user, domain_name=STR, email=STR),
        "user_from_uuid": _field(
            User, identity.resolve_user_from_uuid, domain_name=STR, user_id=GraphQLID
        ),
        "users": _field(
            _list(User),
            identity.resolve_users,
            domain_name=STR,
            group_id=UUIDType,
            is_active=BOOL,
            status=STR,
        ),
        "user_list": _field(
            _paginated("UserList", User),
            identity.resolve_user_list,
            **_PAGE_ARGS,
            domain_name=STR,
            group_id=UUIDType,
            is_active=BOOL,
            status=STR,
            **_LIST_FILTERS,
        ),
        "keypair": _field(KeyPair, identity.resolve_keypair, domain_name=STR, access_key=STR),
        "keypairs": _field(
            _list(KeyPair),
            identity.resolve_keypairs,
            domain_name=STR,
            email=STR,
            is_active=BOOL,
        ),
        "keypair_list": _field(
            _paginated("KeyPairList", KeyPair),
            identity.resolve_keypair_list,
            **_PAGE_ARGS,
            domain_name=STR,
            email=STR,
            is_active=BOOL,
            **_LIST_FILTERS,
        ),
        "keypair_resource_policy": _field(
            KeyPairResourcePolicy, identity.resolve_keypair_policy, name=STR
        ),
        "keypair_resource_policies": _field(
            _list(KeyPairResourcePolicy), identity.resolve_keypair_policies
        ),
        "scaling_group": _field(ScalingGroup, resources.resolve_scaling_group, name=STR),
        "scaling_groups": _field(
            _list(ScalingGroup), resources.resolve_scaling_groups, name=STR, is_active=BOOL
        ),
        "scaling_groups_for_domain": _field(
            _list(ScalingGroup),
            resources.resolve_scaling_groups_for_domain,
            domain=_required(STR),
            is_active=BOOL,
        ),
        "scaling_groups_for_user_group": _field(
            _list(ScalingGroup),
            resources.resolve_scaling_groups_for_user_group,
            user_group=_required(STR),
            is_active=BOOL,
        ),
        "scaling_groups_for_keypair": _field(
            _list(ScalingGroup),
            resources.resolve_scaling_groups_for_keypair,
            access_key=_required(STR),
            is_active=BOOL,
        ),
        "resource_preset": _field(
            ResourcePreset, resources.resolve_resource_preset, name=_required(STR)
        ),
        "resource_presets": _field(_list(ResourcePreset), resources.resolve_resource_presets),
        "storage_volume": _field(
            StorageVolume, resources.resolve_storage_volume, id=_required(STR)
        ),
        "storage_volume_list": _field(
            _paginated("StorageVolumeList", StorageVolume),
            resources.resolve_storage_volume_list,
            **_PAGE_ARGS,
            **_LIST_FILTERS,
        ),
        "vfolder_host_permissions": _field(
            VirtualFolderPermission, resources.resolve_vfolder_host_permissions
        ),
        "vfolder_list": _field(
            VirtualFolderList,
            vfolders.resolve_vfolder_list,
            **_PAGE_ARGS,
            order_key=STR,
            order_asc=BOOL,
            domain_name=STR,
            group_id=UUIDType,
            access_key=STR,
            **_LIST_FILTERS,
        ),
        "vfolder_own_list": _field(
            VirtualFolderList, vfolders.resolve_vfolder_own_list, **_PAGE_ARGS, **_LIST_FILTERS
        ),
        "vfolder_invited_list": _field(
            VirtualFolderList,
            vfolders.resolve_vfolder_invited_list,
            **_PAGE_ARGS,
            **_LIST_FILTERS,
        ),
        "vfolder_project_list": _field(
            VirtualFolderList,
            vfolders.resolve_vfolder_project_list,
            **_PAGE_ARGS,
            **_LIST_FILTERS,
        ),
        "user_resource_policy": _field(
            UserResourcePolicy, mutations.resolve_user_resource_policy, name=STR
        ),
        "user_resource_policies": _field(
            _list(UserResourcePolicy), mutations.resolve_user_resource_policies
        ),
        "project_resource_policy": _field(
            ProjectResourcePolicy, mutations.resolve_project_resource_policy, name=_required(STR)
        ),
        "project_resource_policies": _field(
            _list(ProjectResourcePolicy), mutations.resolve_project_resource_policies
        ),
        "image": _field(Image, images.resolve_image, reference=_required(STR), architecture=STR),
        "images": _field(_list(Image), images.resolve_images, is_operation=BOOL, architecture=STR),
    },
)

# ---------------------------------------------------------------------- mutations
# Input and argument types follow what the official client 23.9 sends where it differs
# from the spec's listing (the client's variable types must match for validation):
# ``CreateScalingGroupInput``, ``purge_user(props)``,
# ``associate_scaling_group_with_user_group(user_group: UUID!)``.  Projects are named by
# ``gid`` (the client) or ``name`` (the spec), both optional in the schema.


def _input(type_name: str, /, **types: GraphQLInputType) -> GraphQLInputObjectType:
    return GraphQLInputObjectType(
        type_name, {field: GraphQLInputField(kind) for field, kind in types.items()}
    )


def _result(name: str, **extra: GraphQLOutputType) -> GraphQLObjectType:
    return GraphQLObjectType(name, _fields(ok=BOOL, msg=STR, **extra))


_POLICY_OPTIONAL: Final[dict[str, GraphQLInputType]] = {
    "max_session_lifetime": INT,
    "max_concurrent_sftp_sessions": INT,
    "max_pending_session_count": INT,
    "max_pending_session_resource_slots": JSONString,
    "max_vfolder_count": INT,
    "max_vfolder_size": BigInt,
    "allowed_vfolder_hosts": JSONString,
}

CreateKeyPairResourcePolicyInput = _input(
    "CreateKeyPairResourcePolicyInput",
    default_for_unspecified=_required(STR),
    total_resource_slots=_required(JSONString),
    max_concurrent_sessions=_required(INT),
    max_containers_per_session=_required(INT),
    idle_timeout=_required(BigInt),
    **_POLICY_OPTIONAL,
)

ModifyKeyPairResourcePolicyInput = _input(
    "ModifyKeyPairResourcePolicyInput",
    default_for_unspecified=STR,
    total_resource_slots=JSONString,
    max_concurrent_sessions=INT,
    max_containers_per_session=INT,
    idle_timeout=BigInt,
    **_POLICY_OPTIONAL,
)

_FOLDER_POLICY: Final[dict[str, GraphQLInputType]] = {
    "max_vfolder_count": INT,
    "max_quota_scope_size": BigInt,
}

_KEYPAIR_INPUT: Final[dict[str, GraphQLInputType]] = {
    "is_active": BOOL,
    "is_admin": BOOL,
    "resource_policy": STR,
    "concurrency_limit": INT,
    "rate_limit": INT,
}

_DOMAIN_INPUT: Final[dict[str, GraphQLInputType]] = {
    "description": STR,
    "is_active": BOOL,
    "total_resource_slots": JSONString,
    "allowed_vfolder_hosts": JSONString,
    "allowed_docker_registries": STRS,
    "integration_id": STR,
}

_SCALING_GROUP_INPUT: Final[dict[str, GraphQLInputType]] = {
    "description": STR,
    "is_active": BOOL,
    "is_public": BOOL,
    "wsproxy_addr": STR,
    "wsproxy_api_token": STR,
    "driver_opts": JSONString,
    "scheduler_opts": JSONString,
    "use_host_network": BOOL,
}

_PRESET_INPUT: Final[dict[str, GraphQLInputType]] = {
    "resource_slots": JSONString,
    "shared_memory": STR,
}

_USER_INPUT: Final[dict[str, GraphQLInputType]] = {
    "username": STR,
    "full_name": STR,
    "description": STR,
    "is_active": BOOL,
    "status": STR,
    "role": STR,
    "group_ids": STRS,
    "allowed_client_ip": STRS,
    "totp_activated": BOOL,
    "resource_policy": STR,
    "sudo_session_enabled": BOOL,
}

_GROUP_INPUT: Final[dict[str, GraphQLInputType]] = {
    "description": STR,
    "is_active": BOOL,
    "total_resource_slots": JSONString,
    "allowed_vfolder_hosts": JSONString,
    "integration_id": STR,
    "resource_policy": STR,
}

_UUID = _required(UUIDType)
_NAME = _required(STR)


def _name_props(
    name: str, result: GraphQLObjectType, resolve: Resolver, props: GraphQLInputObjectType
) -> tuple[str, GraphQLField]:
    return name, _field(result, resolve, name=_NAME, props=_required(props))


def _by_name(name: str, result: str, resolve: Resolver) -> tuple[str, GraphQLField]:
    return name, _field(_result(result), resolve, name=_NAME)


def _association(
    name: str, resolve: Resolver, **args: GraphQLInputType
) -> tuple[str, GraphQLField]:
    result = "".join(part.capitalize() for part in name.split("_")).replace("Keypair", "KeyPair")
    return name, _field(_result(result), resolve, **args)


_SG = _required(STR)

Mutation = GraphQLObjectType(
    "Mutation",
    dict(
        [
            # keypair resource policies
            _name_props(
                "create_keypair_resource_policy",
                _result("CreateKeyPairResourcePolicy", resource_policy=KeyPairResourcePolicy),
                mutations.create_keypair_resource_policy,
                CreateKeyPairResourcePolicyInput,
            ),
            _name_props(
                "modify_keypair_resource_policy",
                _result("ModifyKeyPairResourcePolicy"),
                mutations.modify_keypair_resource_policy,
                ModifyKeyPairResourcePolicyInput,
            ),
            _by_name(
                "delete_keypair_resource_policy",
                "DeleteKeyPairResourcePolicy",
                mutations.delete_keypair_resource_policy,
            ),
            # user and project resource policies
            _name_props(
                "create_user_resource_policy",
                _result("CreateUserResourcePolicy", resource_policy=UserResourcePolicy),
                mutations.create_user_resource_policy,
                _input("CreateUserResourcePolicyInput", **_FOLDER_POLICY),
            ),
            _name_props(
                "modify_user_resource_policy",
                _result("ModifyUserResourcePolicy", resource_policy=UserResourcePolicy),
                mutations.modify_user_resource_policy,
                _input("ModifyUserResourcePolicyInput", **_FOLDER_POLICY),
            ),
            _by_name(
                "delete_user_resource_policy",
                "DeleteUserResourcePolicy",
                mutations.delete_user_resource_policy,
            ),
            _name_props(
                "create_project_resource_policy",
                _result("CreateProjectResourcePolicy", resource_policy=ProjectResourcePolicy),
                mutations.create_project_resource_policy,
                _input("CreateProjectResourcePolicyInput", **_FOLDER_POLICY),
            ),
            _name_props(
                "modify_project_resource_policy",
                _result("ModifyProjectResourcePolicy", resource_policy=ProjectResourcePolicy),
                mutations.modify_project_resource_policy,
                _input("ModifyProjectResourcePolicyInput", **_FOLDER_POLICY),
            ),
            _by_name(
                "delete_project_resource_policy",
                "DeleteProjectResourcePolicy",
                mutations.delete_project_resource_policy,
            ),
            # keypairs
            (
                "create_keypair",
                _field(
                    _result("CreateKeyPair", keypair=KeyPair),
                    mutations.create_keypair,
                    user_id=_required(STR),
                    props=_required(_input("KeyPairInput", **_KEYPAIR_INPUT)),
                ),
            ),
            (
                "modify_keypair",
                _field(
                    _result("ModifyKeyPair"),
                    mutations.modify_keypair,
                    access_key=_required(STR),
                    props=_required(_input("ModifyKeyPairInput", **_KEYPAIR_INPUT)),
                ),
            ),
            (
                "delete_keypair",
                _field(
                    _result("DeleteKeyPair"), mutations.delete_keypair, access_key=_required(STR)
                ),
            ),
            # domains
            _name_props(
                "create_domain",
                _result("CreateDomain", domain=Domain),
                mutations.create_domain,
                _input("DomainInput", **_DOMAIN_INPUT),
            ),
            _name_props(
                "modify_domain",
                _result("ModifyDomain", domain=Domain),
                mutations.modify_domain,
                _input("ModifyDomainInput", name=STR, **_DOMAIN_INPUT),
            ),
            _by_name("delete_domain", "DeleteDomain", mutations.delete_domain),
            _by_name("purge_domain", "PurgeDomain", mutations.purge_domain),
            # projects
            _name_props(
                "create_group",
                _result("CreateGroup", group=Group),
                mutations.create_group,
                _input("GroupInput", domain_name=_required(STR), **_GROUP_INPUT),
            ),
            (
                "modify_group",
                _field(
                    _result("ModifyGroup", group=Group),
                    mutations.modify_group,
                    gid=UUIDType,
                    name=STR,
                    props=_required(
                        _input(
                            "ModifyGroupInput",
                            name=STR,
                            domain_name=STR,
                            user_update_mode=STR,
                            user_uuids=STRS,
                            **_GROUP_INPUT,
                        )
                    ),
                ),
            ),
            (
                "delete_group",
                _field(_result("DeleteGroup"), mutations.delete_group, gid=UUIDType, name=STR),
            ),
            (
                "purge_group",
                _field(_result("PurgeGroup"), mutations.purge_group, gid=UUIDType, name=STR),
            ),
            # users
            (
                "create_user",
                _field(
                    _result("CreateUser", user=User),
                    mutations.create_user,
                    email=_required(STR),
                    props=_required(
                        _input(
                            "UserInput",
                            password=_required(STR),
                            need_password_change=BOOL,
                            domain_name=_required(STR),
                            **_USER_INPUT,
                        )
                    ),
                ),
            ),
            (
                "modify_user",
                _field(
                    _result("ModifyUser", user=User),
                    mutations.modify_user,
                    email=_required(STR),
                    props=_required(
                        _input(
                            "ModifyUserInput",
                            password=STR,
                            need_password_change=BOOL,
                            domain_name=STR,
                            **_USER_INPUT,
                        )
                    ),
                ),
            ),
            (
                "delete_user",
                _field(_result("DeleteUser"), mutations.delete_user, email=_required(STR)),
            ),
            (
                "purge_user",
                _field(
                    _result("PurgeUser"),
                    mutations.purge_user,
                    email=_required(STR),
                    props=_input("PurgeUserInput", purge_shared_vfolders=BOOL),
                ),
            ),
            # resource (scaling) groups
            _name_props(
                "create_scaling_group",
                _result("CreateScalingGroup", scaling_group=ScalingGroup),
                mutations.create_scaling_group,
                _input(
                    "CreateScalingGroupInput",
                    driver=_required(STR),
                    scheduler=_required(STR),
                    **_SCALING_GROUP_INPUT,
                ),
            ),
            _name_props(
                "modify_scaling_group",
                _result("ModifyScalingGroup"),
                mutations.modify_scaling_group,
                _input(
                    "ModifyScalingGroupInput", driver=STR, scheduler=STR, **_SCALING_GROUP_INPUT
                ),
            ),
            _by_name("delete_scaling_group", "DeleteScalingGroup", mutations.delete_scaling_group),
            _association(
                "associate_scaling_group_with_domain",
                mutations.associate_scaling_group_with_domain,
                domain=_required(STR),
                scaling_group=_SG,
            ),
            _association(
                "disassociate_scaling_group_with_domain",
                mutations.disassociate_scaling_group_with_domain,
                domain=_required(STR),
                scaling_group=_SG,
            ),
            _association(
                "disassociate_all_scaling_groups_with_domain",
                mutations.disassociate_all_scaling_groups_with_domain,
                domain=_required(STR),
            ),
            _association(
                "associate_scaling_group_with_user_group",
                mutations.associate_scaling_group_with_user_group,
                scaling_group=_SG,
                user_group=_UUID,
            ),
            _association(
                "disassociate_scaling_group_with_user_group",
                mutations.disassociate_scaling_group_with_user_group,
                scaling_group=_SG,
                user_group=_required(STR),
            ),
            _association(
                "disassociate_all_scaling_groups_with_group",
                mutations.disassociate_all_scaling_groups_with_group,
                user_group=_UUID,
            ),
            _association(
                "associate_scaling_group_with_keypair",
                mutations.associate_scaling_group_with_keypair,
                access_key=_required(STR),
                scaling_group=_SG,
            ),
            _association(
                "disassociate_scaling_group_with_keypair",
                mutations.disassociate_scaling_group_with_keypair,
                access_key=_required(STR),
                scaling_group=_SG,
            ),
            # resource presets
            _name_props(
                "create_resource_preset",
                _result("CreateResourcePreset", resource_preset=ResourcePreset),
                mutations.create_resource_preset,
                _input("CreateResourcePresetInput", **_PRESET_INPUT),
            ),
            _name_props(
                "modify_resource_preset",
                _result("ModifyResourcePreset"),
                mutations.modify_resource_preset,
                _input("ModifyResourcePresetInput", **_PRESET_INPUT),
            ),
            _by_name(
                "delete_resource_preset", "DeleteResourcePreset", mutations.delete_resource_preset
            ),
        ]
    ),
)

#: The admin API's schema.
SCHEMA: Final = GraphQLSchema(query=Query, mutation=Mutation)
