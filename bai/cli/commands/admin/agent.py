"""``bai admin agent ...``: the agents (superadmins), and ``bai admin session ...``:
every keypair's sessions.

``agent list`` pages ``agent_list`` (``--status ALIVE`` by default; ``--all``
for any status), ``agent info ID`` shows one agent.  ``session list`` is
``bai ps`` for administrators (any keypair's sessions, ``--access-key`` to
pick one), ``session info ID`` one session.  Through :class:`bai.client.Agent`
and :func:`bai.client.list_sessions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import click

from bai.cli.commands.admin.output import (
    CONTEXT,
    emit_item,
    emit_list,
    format_option,
    output_option,
    paging_options,
    parse_format,
)
from bai.cli.commands.pretty import print_fail
from bai.cli.commands.ps import ALL
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["agent", "session"]

AGENT_STATUSES: Final = ("ALIVE", "LOST", "RESTARTING", "TERMINATED")
AGENT_FIELDS: Final = (
    "id",
    "status",
    "status_changed",
    "region",
    "scaling_group",
    "schedulable",
    "addr",
    "architecture",
    "version",
    "first_contact",
    "lost_at",
    "cpu_cur_pct",
    "mem_cur_bytes",
    "available_slots",
    "occupied_slots",
    "compute_plugins",
)
SESSION_FIELDS: Final = (
    "id",
    "name",
    "type",
    "status",
    "status_info",
    "status_changed",
    "image",
    "access_key",
    "user_email",
    "domain_name",
    "group_name",
    "scaling_group",
    "created_at",
    "terminated_at",
    "occupied_slots",
    "result",
    "tag",
)
SESSION_LIST_FIELDS: Final = ("id", "name", "status", "image", "access_key", "created_at")


@click.group(context_settings=CONTEXT)
def agent() -> None:
    """Agents (superadmins)."""


@agent.command("list", context_settings=CONTEXT)
@click.option(
    "-s",
    "--status",
    type=click.Choice(AGENT_STATUSES, case_sensitive=False),
    default="ALIVE",
    show_default=True,
)
@click.option("-a", "--all", "all_", is_flag=True, help="Agents in any status.")
@click.option("--scaling-group", metavar="NAME", help="Only this resource group's agents.")
@click.option("--filter", "filter_", metavar="EXPR", help="A filter such as 'region == \"x\"'.")
@click.option("--order", metavar="EXPR", help="An order such as 'id'.")
@format_option(AGENT_FIELDS)
@paging_options
@output_option
def list_agents(
    status: str,
    all_: bool,
    scaling_group: str | None,
    filter_: str | None,
    order: str | None,
    format_: str | None,
    limit: int,
    offset: int,
    output: str,
) -> None:
    """List agents, a page at a time."""
    from bai.client import Agent

    fields = parse_format(format_, AGENT_FIELDS, Agent.LIST_FIELDS)

    async def main(api: APIClient) -> None:
        page = await Agent.list(
            api,
            status=None if all_ else status.upper(),
            scaling_group=scaling_group,
            filter=filter_,
            order=order,
            fields=fields,
            limit=limit,
            offset=offset,
        )
        emit_list(page.items, fields, output, total=page.total_count, offset=offset, noun="agents")

    run_client(main)


@agent.command(context_settings=CONTEXT)
@click.argument("agent_id")
@format_option(AGENT_FIELDS)
@output_option
def info(agent_id: str, format_: str | None, output: str) -> None:
    """Show the agent AGENT_ID."""
    from bai.client import Agent

    fields = parse_format(format_, AGENT_FIELDS, Agent.INFO_FIELDS)

    async def main(api: APIClient) -> int:
        found = await Agent.detail(api, agent_id, fields=fields)
        if found is None:
            print_fail(f"There is no agent {agent_id!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@click.group(context_settings=CONTEXT)
def session() -> None:
    """Every keypair's compute sessions (administrators)."""


@session.command("list", context_settings=CONTEXT)
@click.option(
    "-s",
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(ALL, case_sensitive=False),
    help="Only sessions in this status (repeatable; default: any).",
)
@click.option("--access-key", metavar="KEY", help="Only this keypair's sessions.")
@format_option(SESSION_FIELDS)
@paging_options
@output_option
def list_sessions_command(
    statuses: tuple[str, ...],
    access_key: str | None,
    format_: str | None,
    limit: int,
    offset: int,
    output: str,
) -> None:
    """List compute sessions, a page at a time (most recently changed first)."""
    from bai.client import list_sessions

    fields = parse_format(format_, SESSION_FIELDS, SESSION_LIST_FIELDS)

    async def main(api: APIClient) -> None:
        page = await list_sessions(
            api,
            fields=fields,
            statuses=[s.upper() for s in statuses],
            access_key=access_key,
            limit=limit,
            offset=offset,
        )
        emit_list(
            page.items, fields, output, total=page.total_count, offset=offset, noun="sessions"
        )

    run_client(main)


@session.command("info", context_settings=CONTEXT)
@click.argument("session_id")
@format_option(SESSION_FIELDS)
@output_option
def session_info(session_id: str, format_: str | None, output: str) -> None:
    """Show the compute session SESSION_ID (a UUID)."""
    from bai.client.admin import fetch_object

    fields = parse_format(format_, SESSION_FIELDS, SESSION_FIELDS)

    async def main(api: APIClient) -> int:
        found = await fetch_object(
            api, "compute_session", fields=fields, variables={"id": (session_id, "UUID!")}
        )
        if found is None:
            print_fail(f"There is no session {session_id!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)
