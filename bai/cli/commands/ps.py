"""``bai ps``: list sessions, like the official ``backend.ai ps``.

Sessions come from the GraphQL field ``compute_session_list`` (the REST API
has no list route).  Without options, active sessions are shown (every
status but TERMINATED and CANCELLED); ``--running`` and ``--dead`` narrow it
as the spec's table says.  ``-f`` picks columns from :data:`FIELDS`;
``used_memory``, ``max_used_memory`` (MiB) and ``cpu_using`` (percent of
one core) add up the live statistics of the session's kernels (``-`` when
none runs), and ``idle_checks`` shows each idle checker's remaining time.

The list is printed by :func:`~bai.cli.commands.pretty.print_table`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import click

from bai.cli.commands.pretty import cell, print_info, print_table
from bai.cli.commands.runtime import run_client
from bai.common.livestat import stat_value

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["FIELDS", "ps"]

_LIVE: Final = "containers { live_stat }"
#: ``-f`` name -> (GraphQL field of ComputeSession, column header).
FIELDS: Final[Mapping[str, tuple[str, str]]] = {
    "name": ("name", "Name"),
    "id": ("id", "Session ID"),
    "session_id": ("id", "Session ID"),
    "owner": ("access_key", "Owner"),
    "access_key": ("access_key", "Owner"),
    "user_email": ("user_email", "User"),
    "domain_name": ("domain_name", "Domain"),
    "group_name": ("group_name", "Project/Group"),
    "image": ("image", "Image"),
    "type": ("type", "Type"),
    "status": ("status", "Status"),
    "status_info": ("status_info", "Status Info"),
    "last_updated": ("status_changed", "Last Updated"),
    "status_changed": ("status_changed", "Last Updated"),
    "created_at": ("created_at", "Created At"),
    "terminated_at": ("terminated_at", "Terminated At"),
    "result": ("result", "Result"),
    "tag": ("tag", "Tag"),
    "occupied_slots": ("occupied_slots", "Occupied Resource"),
    "scaling_group": ("scaling_group", "Resource Group"),
    "startup_command": ("startup_command", "Startup Command"),
    "used_memory": (_LIVE, "Used Memory (MiB)"),
    "max_used_memory": (_LIVE, "Max Used Memory (MiB)"),
    "cpu_using": (_LIVE, "CPU Using (%)"),
    "idle_checks": ("idle_checks", "Idle Checks"),
}

DEFAULT_FIELDS: Final = (
    "name",
    "id",
    "owner",
    "image",
    "type",
    "status",
    "status_info",
    "last_updated",
    "result",
)
DETAIL_FIELDS: Final = ("tag", "created_at", "occupied_slots", "idle_checks")

ACTIVE: Final = (
    "PENDING",
    "SCHEDULED",
    "PREPARING",
    "PULLING",
    "PREPARED",
    "CREATING",
    "RUNNING",
    "RESTARTING",
    "RUNNING_DEGRADED",
    "TERMINATING",
    "ERROR",
)
RUNNING: Final = ("PREPARING", "PULLING", "PREPARED", "CREATING", "RUNNING", "RUNNING_DEGRADED")
DEAD: Final = ("CANCELLED", "TERMINATED")
ALL: Final = (*ACTIVE, *DEAD)


def _live_total(item: Mapping[str, Any], metric: str, key: str) -> Decimal | None:
    """The sum of *metric*'s *key* over the session's kernels that report it."""
    total: Decimal | None = None
    for container in item.get("containers") or []:
        stat = container.get("live_stat") if isinstance(container, Mapping) else None
        if isinstance(stat, str):
            try:
                stat = json.loads(stat)
            except ValueError:
                stat = None
        value = stat_value(stat if isinstance(stat, Mapping) else None, metric, key)
        if value is not None:
            total = (total or Decimal(0)) + value
    return total


#: Computed columns: ``-f`` name -> (metric, key, divisor).
_COMPUTED: Final = {
    "used_memory": ("mem", "current", Decimal(1024**2)),
    "max_used_memory": ("mem", "stats.max", Decimal(1024**2)),
    "cpu_using": ("cpu_util", "current", Decimal(1)),
}


def _column(item: Mapping[str, Any], name: str) -> str:
    if name in _COMPUTED:
        metric, key, divisor = _COMPUTED[name]
        total = _live_total(item, metric, key)
        return "-" if total is None else f"{total / divisor:.1f}"
    return cell(item.get(FIELDS[name][0]))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--running", is_flag=True, help="Only sessions being prepared or running.")
@click.option("--dead", is_flag=True, help="Only terminated and cancelled sessions.")
@click.option("-a", "--all", "all_", is_flag=True, help="Sessions in any status.")
@click.option(
    "-s",
    "--status",
    type=click.Choice(ALL, case_sensitive=False),
    default=None,
    help="Only sessions in this status.",
)
@click.option("--id-only", is_flag=True, help="Print only session IDs, one per line.")
@click.option("--name-only", is_flag=True, help="Print only session names, one per line.")
@click.option("--detail", is_flag=True, help="Add tag, creation time and occupied resources.")
@click.option(
    "-f",
    "--format",
    "format_",
    metavar="FIELDS",
    default=None,
    help=f"Comma-separated columns: {', '.join(FIELDS)}.",
)
@click.option(
    "--access-key",
    metavar="KEY",
    default=None,
    help="List this keypair's sessions (administrators).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many sessions.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many sessions (most recently changed first).",
)
def ps(
    running: bool,
    dead: bool,
    all_: bool,
    status: str | None,
    id_only: bool,
    name_only: bool,
    detail: bool,
    format_: str | None,
    access_key: str | None,
    limit: int,
    offset: int,
) -> None:
    """List your compute sessions (by default: the active ones)."""
    if sum((running, dead, all_, status is not None)) > 1:
        raise click.UsageError("Use at most one of --running, --dead, --all and --status.")
    if id_only and name_only:
        raise click.UsageError("Use either --id-only or --name-only.")
    if id_only:
        names: Sequence[str] = ("id",)
    elif name_only:
        names = ("name",)
    elif format_ is not None:
        names = [item.strip() for item in format_.split(",") if item.strip()]
        unknown = [n for n in names if n not in FIELDS]
        if unknown or not names:
            raise click.BadParameter(
                f"unknown field {unknown[0] if unknown else format_!r}; "
                f"choose from {', '.join(FIELDS)}",
                param_hint="'-f' / '--format'",
            )
    else:
        names = DEFAULT_FIELDS + (DETAIL_FIELDS if detail else ())
    statuses: tuple[str, ...]
    if running:
        statuses, what = RUNNING, "running"
    elif dead:
        statuses, what = DEAD, "dead"
    elif all_:
        statuses, what = ALL, "in any status"
    elif status is not None:
        statuses, what = (status.upper(),), status.lower()
    else:
        statuses, what = ACTIVE, "active"
    gql_fields = list(dict.fromkeys(FIELDS[n][0] for n in names))

    async def main(api: APIClient) -> int:
        from bai.client import list_sessions

        page = await list_sessions(
            api,
            fields=gql_fields,
            statuses=statuses,
            access_key=access_key,
            limit=limit,
            offset=offset,
        )
        if id_only or name_only:
            for item in page.items:
                click.echo(cell(item.get(FIELDS[names[0]][0])))
            return 0
        if not page.items:
            click.echo(f"There are no compute sessions currently {what}.")
            return 0
        headers = [FIELDS[n][1] for n in names]
        rows = [[_column(item, n) for n in names] for item in page.items]
        print_table(headers, rows)
        shown_until = offset + len(page.items)
        if page.total_count > shown_until:
            print_info(
                f"Showing {offset + 1}-{shown_until} of {page.total_count} sessions; "
                f"use --offset {shown_until} for more."
            )
        return 0

    run_client(main)
