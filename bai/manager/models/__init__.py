"""The manager's schema: SQLAlchemy Core tables, migrations and the queries that derive usage.

Every table is registered in :data:`metadata`; :mod:`bai.manager.models.migrate`
creates and upgrades the schema with alembic on SQLite and PostgreSQL.
Modules by area: :mod:`~.identity` (domains, projects, users, keypairs,
resource policies), :mod:`~.resource` (resource groups, agents, presets),
:mod:`~.session` (sessions, kernels, dependencies, templates), :mod:`~.image`,
:mod:`~.shared_config` (the shared key-value configuration), :mod:`~.errorlog`,
:mod:`~.vfolder` (virtual folders, invitations, per-user permissions), and
:mod:`~.usage` (occupancy derived from kernels).
"""

from bai.manager.models.base import metadata
from bai.manager.models.errorlog import ErrorLogSeverity, error_logs
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
    keypairs,
    project_resource_policies,
    user_resource_policies,
    users,
)
from bai.manager.models.image import image_aliases, images
from bai.manager.models.resource import (
    AgentStatus,
    agents,
    resource_presets,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from bai.manager.models.session import (
    SessionTemplateType,
    kernels,
    session_dependencies,
    session_templates,
    sessions,
)
from bai.manager.models.shared_config import shared_config
from bai.manager.models.vfolder import vfolder_invitations, vfolder_permissions, vfolders

__all__ = [
    "AgentStatus",
    "ErrorLogSeverity",
    "SessionTemplateType",
    "UserRole",
    "UserStatus",
    "agents",
    "association_groups_users",
    "domains",
    "error_logs",
    "groups",
    "image_aliases",
    "images",
    "kernels",
    "keypair_resource_policies",
    "keypairs",
    "metadata",
    "project_resource_policies",
    "resource_presets",
    "scaling_groups",
    "session_dependencies",
    "session_templates",
    "sessions",
    "sgroups_for_domains",
    "sgroups_for_groups",
    "sgroups_for_keypairs",
    "shared_config",
    "user_resource_policies",
    "users",
    "vfolder_invitations",
    "vfolder_permissions",
    "vfolders",
]
