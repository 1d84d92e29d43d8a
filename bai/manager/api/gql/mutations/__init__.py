"""Every mutation of the admin API, one module per kind of object.

Each mutation answers ``{ok, msg}`` plus, where the spec or the official
client names it, the object (``domain``, ``group``, ``user``, ``keypair``,
``scaling_group``, ``resource_preset``, ``resource_policy``).  The outcome
follows the official manager's convention:

* input that cannot be valid (a malformed name or email, slots that do not
  parse, a negative or absurd limit, an unknown role or status) is a
  GraphQL error naming the field (``props.<name>``);
* a missing privilege is a GraphQL error (``forbidden``): plain users may
  run no mutation; domain admins only on users, projects and keypairs of
  their own domain (never on superadmins); the rest is for superadmins;
* a conflict with the database's state (a name taken, an object that does
  not exist, an unknown domain, project or policy, an object still in use)
  is ``ok: false`` with a message saying which.

Each mutation runs in one transaction: when it is refused, nothing changed.
"""

from bai.manager.api.gql.mutations.domains import (
    create_domain,
    delete_domain,
    modify_domain,
    purge_domain,
)
from bai.manager.api.gql.mutations.groups import (
    create_group,
    delete_group,
    modify_group,
    purge_group,
)
from bai.manager.api.gql.mutations.keypairs import create_keypair, delete_keypair, modify_keypair
from bai.manager.api.gql.mutations.policies import (
    create_keypair_resource_policy,
    create_project_resource_policy,
    create_user_resource_policy,
    delete_keypair_resource_policy,
    delete_project_resource_policy,
    delete_user_resource_policy,
    modify_keypair_resource_policy,
    modify_project_resource_policy,
    modify_user_resource_policy,
    resolve_project_resource_policies,
    resolve_project_resource_policy,
    resolve_user_resource_policies,
    resolve_user_resource_policy,
)
from bai.manager.api.gql.mutations.presets import (
    create_resource_preset,
    delete_resource_preset,
    modify_resource_preset,
)
from bai.manager.api.gql.mutations.scaling_groups import (
    associate_scaling_group_with_domain,
    associate_scaling_group_with_keypair,
    associate_scaling_group_with_user_group,
    create_scaling_group,
    delete_scaling_group,
    disassociate_all_scaling_groups_with_domain,
    disassociate_all_scaling_groups_with_group,
    disassociate_scaling_group_with_domain,
    disassociate_scaling_group_with_keypair,
    disassociate_scaling_group_with_user_group,
    modify_scaling_group,
)
from bai.manager.api.gql.mutations.users import create_user, delete_user, modify_user, purge_user

__all__ = [
    "associate_scaling_group_with_domain",
    "associate_scaling_group_with_keypair",
    "associate_scaling_group_with_user_group",
    "create_domain",
    "create_group",
    "create_keypair",
    "create_keypair_resource_policy",
    "create_project_resource_policy",
    "create_resource_preset",
    "create_scaling_group",
    "create_user",
    "create_user_resource_policy",
    "delete_domain",
    "delete_group",
    "delete_keypair",
    "delete_keypair_resource_policy",
    "delete_project_resource_policy",
    "delete_resource_preset",
    "delete_scaling_group",
    "delete_user",
    "delete_user_resource_policy",
    "disassociate_all_scaling_groups_with_domain",
    "disassociate_all_scaling_groups_with_group",
    "disassociate_scaling_group_with_domain",
    "disassociate_scaling_group_with_keypair",
    "disassociate_scaling_group_with_user_group",
    "modify_domain",
    "modify_group",
    "modify_keypair",
    "modify_keypair_resource_policy",
    "modify_project_resource_policy",
    "modify_resource_preset",
    "modify_scaling_group",
    "modify_user",
    "modify_user_resource_policy",
    "purge_domain",
    "purge_group",
    "purge_user",
    "resolve_project_resource_policies",
    "resolve_project_resource_policy",
    "resolve_user_resource_policies",
    "resolve_user_resource_policy",
]
