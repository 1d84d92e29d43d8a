"""Which folder hosts (``PROXY:VOLUME``) a caller may use: ``allowed_vfolder_hosts``.

Three places name hosts in their ``allowed_vfolder_hosts``: the caller's
domain, projects, and keypair resource policy.  A value is a JSON list of
hosts or an object whose keys are hosts (the later per-host permission
map; its permissions are not distinguished here).  The rule
(:func:`merge_allowed`):

* the allowed set is the union of what the domain, the projects that apply
  (for a user folder: every project of the user; for a project folder: that
  project) and the keypair policy name;
* when none of them names any host, nothing is restricted: every host the
  storage proxies serve is allowed (a fresh cluster works without setup);
* either way only hosts that a proxy serves right now are offered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from bai.manager.db import Connection
from bai.manager.models.identity import (
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
)

__all__ = ["configured_hosts", "host_names", "merge_allowed"]


def host_names(value: Any) -> set[str]:
    """The hosts an ``allowed_vfolder_hosts`` value names (a list, or a map's keys)."""
    if isinstance(value, Mapping):
        return {str(host) for host in value}
    if isinstance(value, list | tuple):
        return {str(host) for host in value if isinstance(host, str)}
    return set()


def merge_allowed(configured: Iterable[Any], available: Iterable[str]) -> list[str]:
    """The hosts allowed by the *configured* ``allowed_vfolder_hosts`` values, among the
    *available* ones, sorted (rule in the module docs)."""
    named: set[str] = set()
    for value in configured:
        named |= host_names(value)
    hosts = set(available)
    return sorted(hosts if not named else named & hosts)


async def configured_hosts(
    conn: Connection,
    *,
    domain_name: str,
    resource_policy: str,
    user_id: uuid.UUID | None = None,
    group_id: uuid.UUID | None = None,
) -> list[Any]:
    """The ``allowed_vfolder_hosts`` values that apply: the domain's, the keypair policy's,
    and the projects' (project *group_id*, or every project of *user_id*)."""
    values: list[Any] = []
    values.extend(
        (
            await conn.execute(
                sa.select(domains.c.allowed_vfolder_hosts).where(domains.c.name == domain_name)
            )
        ).scalars()
    )
    values.extend(
        (
            await conn.execute(
                sa.select(keypair_resource_policies.c.allowed_vfolder_hosts).where(
                    keypair_resource_policies.c.name == resource_policy
                )
            )
        ).scalars()
    )
    if group_id is not None:
        project_query = sa.select(groups.c.allowed_vfolder_hosts).where(groups.c.id == group_id)
    elif user_id is not None:
        project_query = (
            sa.select(groups.c.allowed_vfolder_hosts)
            .join(association_groups_users, association_groups_users.c.group_id == groups.c.id)
            .where(association_groups_users.c.user_id == user_id)
        )
    else:
        return values
    values.extend((await conn.execute(project_query)).scalars())
    return values
