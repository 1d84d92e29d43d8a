"""``bai admin group ...``: projects (the API calls them groups) and their members.

Projects are named by id (``GROUP_ID``, a UUID, as the official client's
commands take them; ``list`` shows the ids).  ``delete`` deactivates a
project, ``purge`` removes it (refused while it has folders or live
sessions); ``add-users``/``remove-users`` take user UUIDs.  Through
:class:`bai.client.Group`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import click

from bai.cli.commands.admin.domain import domain_options
from bai.cli.commands.admin.output import (
    CONTEXT,
    emit_done,
    emit_item,
    emit_list,
    format_option,
    output_option,
    page_of,
    paging_options,
    parse_format,
    parse_json_option,
)
from bai.cli.commands.pretty import print_fail
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["group"]

FIELDS: Final = (
    "id",
    "name",
    "domain_name",
    "is_active",
    "description",
    "created_at",
    "modified_at",
    "total_resource_slots",
    "allowed_vfolder_hosts",
    "integration_id",
    "resource_policy",
    "scaling_groups",
)


@click.group(context_settings=CONTEXT)
def group() -> None:
    """Projects (user groups) and their members (administrators)."""


@group.command("list", context_settings=CONTEXT)
@click.option("-d", "--domain", "domain_name", metavar="NAME", help="This domain's projects.")
@click.option("--active/--inactive", "is_active", default=None, help="Only (in)active ones.")
@format_option(FIELDS)
@paging_options
@output_option
def list_groups(
    domain_name: str | None,
    is_active: bool | None,
    format_: str | None,
    limit: int,
    offset: int,
    output: str,
) -> None:
    """List the projects of a domain (yours by default)."""
    from bai.client import Group

    fields = parse_format(format_, FIELDS, Group.LIST_FIELDS)

    async def main(api: APIClient) -> None:
        items = await Group.list(api, domain_name=domain_name, is_active=is_active, fields=fields)
        emit_list(
            page_of(items, limit, offset),
            fields,
            output,
            total=len(items),
            offset=offset,
            noun="projects",
        )

    run_client(main)


@group.command(context_settings=CONTEXT)
@click.argument("group_id")
@format_option(FIELDS)
@output_option
def info(group_id: str, format_: str | None, output: str) -> None:
    """Show the project GROUP_ID."""
    from bai.client import Group

    fields = parse_format(format_, FIELDS, Group.INFO_FIELDS)

    async def main(api: APIClient) -> int:
        found = await Group.detail(api, group_id, fields=fields)
        if found is None:
            print_fail(f"There is no project {group_id!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@group.command(context_settings=CONTEXT)
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@click.option("-i", "--inactive", is_flag=True, help="Create it inactive.")
@click.option("--resource-policy", metavar="NAME", help="The project resource policy.")
@domain_options
@output_option
def add(
    domain_name: str,
    name: str,
    inactive: bool,
    resource_policy: str | None,
    description: str | None,
    total_resource_slots: str | None,
    allowed_vfolder_hosts: str | None,
    integration_id: str | None,
    output: str,
) -> None:
    """Create the project NAME in DOMAIN; prints its id."""
    from bai.client import Group

    slots = parse_json_option(total_resource_slots, "'--total-resource-slots'")
    hosts = parse_json_option(allowed_vfolder_hosts, "'--allowed-vfolder-hosts'")

    async def main(api: APIClient) -> None:
        created = await Group.create(
            api,
            domain_name,
            name,
            description=description or "",
            is_active=not inactive,
            total_resource_slots=slots,
            allowed_vfolder_hosts=hosts,
            integration_id=integration_id,
            resource_policy=resource_policy,
        )
        emit_done(f"Project {name} created.", output, id=created.get("id"))

    run_client(main)


@group.command(context_settings=CONTEXT)
@click.argument("group_id")
@click.option("-n", "--name", help="Rename the project.")
@click.option("--active/--inactive", "is_active", default=None)
@click.option("--resource-policy", metavar="NAME")
@domain_options
@output_option
def update(
    group_id: str,
    name: str | None,
    is_active: bool | None,
    resource_policy: str | None,
    description: str | None,
    total_resource_slots: str | None,
    allowed_vfolder_hosts: str | None,
    integration_id: str | None,
    output: str,
) -> None:
    """Change the project GROUP_ID (only what the options give)."""
    from bai.client import Group

    slots = parse_json_option(total_resource_slots, "'--total-resource-slots'")
    hosts = parse_json_option(allowed_vfolder_hosts, "'--allowed-vfolder-hosts'")

    async def main(api: APIClient) -> None:
        await Group.update(
            api,
            group_id,
            name=name,
            description=description,
            is_active=is_active,
            total_resource_slots=slots,
            allowed_vfolder_hosts=hosts,
            integration_id=integration_id,
            resource_policy=resource_policy,
        )
        emit_done(f"Project {group_id} updated.", output)

    run_client(main)


@group.command("add-users", context_settings=CONTEXT)
@click.argument("group_id")
@click.argument("user_uuids", nargs=-1, required=True)
@output_option
def add_users(group_id: str, user_uuids: tuple[str, ...], output: str) -> None:
    """Make the users USER_UUIDS members of the project GROUP_ID."""
    from bai.client import Group

    async def main(api: APIClient) -> None:
        await Group.add_users(api, group_id, user_uuids)
        emit_done(f"{len(user_uuids)} user(s) added to {group_id}.", output)

    run_client(main)


@group.command("remove-users", context_settings=CONTEXT)
@click.argument("group_id")
@click.argument("user_uuids", nargs=-1, required=True)
@output_option
def remove_users(group_id: str, user_uuids: tuple[str, ...], output: str) -> None:
    """Take the users USER_UUIDS out of the project GROUP_ID."""
    from bai.client import Group

    async def main(api: APIClient) -> None:
        await Group.remove_users(api, group_id, user_uuids)
        emit_done(f"{len(user_uuids)} user(s) removed from {group_id}.", output)

    run_client(main)


@group.command(context_settings=CONTEXT)
@click.argument("group_id")
@output_option
def delete(group_id: str, output: str) -> None:
    """Deactivate the project GROUP_ID (it stays, inactive)."""
    from bai.client import Group

    async def main(api: APIClient) -> None:
        await Group.delete(api, group_id)
        emit_done(f"Project {group_id} deleted.", output)

    run_client(main)


@group.command(context_settings=CONTEXT)
@click.argument("group_id")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@output_option
def purge(group_id: str, yes: bool, output: str) -> None:
    """Remove the project GROUP_ID for good (refused while it has folders or sessions)."""
    from bai.client import Group

    if not yes:
        click.confirm(f"Purge the project {group_id} for good?", abort=True, err=True)

    async def main(api: APIClient) -> None:
        await Group.purge(api, group_id)
        emit_done(f"Project {group_id} purged.", output)

    run_client(main)
