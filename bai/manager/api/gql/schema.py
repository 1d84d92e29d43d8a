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
``vfolder_list``, ``vfolder_own_list``, ``vfolder_invited_list``,
``vfolder_project_list``, ``image``, ``images``.

Mutations: ``create_``/``modify_``/``delete_keypair_resource_policy`` and
``create_``/``modify_``/``delete_keypair``.

Not in the schema (a query naming them fails validation): the other
mutations of the spec (domains, projects, users, resource groups and their
associations, presets, images), the ``images`` filters
``is_installed``/``domain``/``group``/``scaling_group`` and the
``installed``/``installed_agents``/``humanized_name`` image fields (bai does
not record which agent holds which image), ``cluster_template`` (reserved
in the spec), and ``User.password``, which is never readable.
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
            status=STR,
            status_info=STR,
            status_data=JSONString,
            status_history=JSONString,
            status_changed=DateTime,
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
            idle_checks=JSONString,
            abusing_reports=_list(JSONString),
        ),
        "registry": _field(STR, sessions.resolve_session_registry),
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
        "live_stat": _described(JSONString, "Always null: bai keeps no live statistics."),
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
        ),
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
        "image": _field(Image, images.resolve_image, reference=_required(STR), architecture=STR),
        "images": _field(_list(Image), images.resolve_images, is_operation=BOOL, architecture=STR),
    },
)

# ---------------------------------------------------------------------- mutations


def _input(name: str, **types: GraphQLInputType) -> GraphQLInputObjectType:
    return GraphQLInputObjectType(
        name, {field: GraphQLInputField(kind) for field, kind in types.items()}
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

_KEYPAIR_INPUT: Final[dict[str, GraphQLInputType]] = {
    "is_active": BOOL,
    "is_admin": BOOL,
    "resource_policy": STR,
    "concurrency_limit": INT,
    "rate_limit": INT,
}
KeyPairInput = _input("KeyPairInput", **_KEYPAIR_INPUT)
ModifyKeyPairInput = _input("ModifyKeyPairInput", **_KEYPAIR_INPUT)

Mutation = GraphQLObjectType(
    "Mutation",
    {
        "create_keypair_resource_policy": _field(
            _result("CreateKeyPairResourcePolicy", resource_policy=KeyPairResourcePolicy),
            mutations.create_keypair_resource_policy,
            name=_required(STR),
            props=_required(CreateKeyPairResourcePolicyInput),
        ),
        "modify_keypair_resource_policy": _field(
            _result("ModifyKeyPairResourcePolicy"),
            mutations.modify_keypair_resource_policy,
            name=_required(STR),
            props=_required(ModifyKeyPairResourcePolicyInput),
        ),
        "delete_keypair_resource_policy": _field(
            _result("DeleteKeyPairResourcePolicy"),
            mutations.delete_keypair_resource_policy,
            name=_required(STR),
        ),
        "create_keypair": _field(
            _result("CreateKeyPair", keypair=KeyPair),
            mutations.create_keypair,
            user_id=_required(STR),
            props=_required(KeyPairInput),
        ),
        "modify_keypair": _field(
            _result("ModifyKeyPair"),
            mutations.modify_keypair,
            access_key=_required(STR),
            props=_required(ModifyKeyPairInput),
        ),
        "delete_keypair": _field(
            _result("DeleteKeyPair"), mutations.delete_keypair, access_key=_required(STR)
        ),
    },
)

#: The admin API's schema.
SCHEMA: Final = GraphQLSchema(query=Query, mutation=Mutation)
