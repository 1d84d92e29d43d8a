"""``bai admin ...``: administering a running cluster through the manager's API.

One subgroup per kind of object, in the official ``backend.ai admin``
style: ``user``, ``keypair``, ``domain``, ``group`` (projects),
``scaling-group``, ``preset``, ``resource-policy``, ``agent``, ``session``,
``announcement``, ``manager``, ``error-log``.  Each has ``list`` (paged with
``--limit``/``--offset``, columns with ``-f``), ``info`` and, where the
object can change, ``add``/``update``/``delete`` (and ``purge``,
``activate``/``deactivate`` where they apply); every command takes
``-o json`` for scripts (:mod:`bai.cli.commands.admin.output`).

What a keypair may do is the manager's decision: a refusal prints the
manager's reason and exits with status 1.  The modules import only click;
the SDK (:mod:`bai.client.identity`, :mod:`bai.client.cluster`,
:mod:`bai.client.manager`) is imported when a command runs.
"""

from __future__ import annotations

import click

from bai.cli.commands.admin.agent import agent, session
from bai.cli.commands.admin.domain import domain
from bai.cli.commands.admin.group import group
from bai.cli.commands.admin.keypair import keypair
from bai.cli.commands.admin.manager import announcement, error_log, manager
from bai.cli.commands.admin.output import CONTEXT
from bai.cli.commands.admin.preset import preset
from bai.cli.commands.admin.resource_policy import resource_policy
from bai.cli.commands.admin.scaling_group import scaling_group
from bai.cli.commands.admin.user import user

__all__ = ["admin"]


@click.group(context_settings=CONTEXT)
def admin() -> None:
    """Administer the cluster: users, projects, domains, keypairs, policies, resources."""


for _command in (
    user,
    keypair,
    domain,
    group,
    scaling_group,
    preset,
    resource_policy,
    agent,
    session,
    announcement,
    manager,
    error_log,
):
    admin.add_command(_command)
