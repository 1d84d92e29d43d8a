"""``bai admin domain ...``: list, show, add, change, deactivate and purge domains.

``delete`` deactivates a domain (it stays, and its users cannot sign in);
``purge`` removes it, which the manager refuses while it still has users,
projects or sessions.  Resource slots and folder-host permissions are JSON
(``--total-resource-slots '{"cpu": "64"}'``).  Through :class:`bai.client.Domain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import click

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

__all__ = ["domain", "domain_options"]

FIELDS: Final = (
    "name",
    "description",
    "is_active",
    "created_at",
    "modified_at",
    "total_resource_slots",
    "allowed_vfolder_hosts",
    "allowed_docker_registries",
    "integration_id",
    "scaling_groups",
)


@click.group(context_settings=CONTEXT)
def domain() -> None:
    """Domains (superadmins; ``info``: your own, for anyone)."""


@domain.command("list", context_settings=CONTEXT)
@click.option("--active/--inactive", "is_active", default=None, help="Only (in)active ones.")
@format_option(FIELDS)
@paging_options
@output_option
def list_domains(
    is_active: bool | None, format_: str | None, limit: int, offset: int, output: str
) -> None:
    """List domains."""
    from bai.client import Domain

    fields = parse_format(format_, FIELDS, Domain.LIST_FIELDS)

    async def main(api: APIClient) -> None:
        items = await Domain.list(api, is_active=is_active, fields=fields)
        emit_list(
            page_of(items, limit, offset),
            fields,
            output,
            total=len(items),
            offset=offset,
            noun="domains",
        )

    run_client(main)


@domain.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@format_option(FIELDS)
@output_option
def info(name: str | None, format_: str | None, output: str) -> None:
    """Show the domain NAME (your own without NAME)."""
    from bai.client import Domain

    fields = parse_format(format_, FIELDS, Domain.INFO_FIELDS)

    async def main(api: APIClient) -> int:
        found = await Domain.detail(api, name, fields=fields)
        if found is None:
            print_fail(f"There is no domain {name!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


def domain_options(fn: Any) -> Any:
    """The options ``add`` and ``update`` share (also used for projects)."""
    for option in reversed(
        (
            click.option("--description", help="A description."),
            click.option(
                "--total-resource-slots", metavar="JSON", help='Limits, e.g. \'{"cpu": "64"}\'.'
            ),
            click.option(
                "--allowed-vfolder-hosts",
                metavar="JSON",
                help='Folder hosts and permissions, e.g. \'{"local:local": ["create-vfolder"]}\'.',
            ),
            click.option("--integration-id", metavar="ID", help="An external system's id."),
        )
    ):
        fn = option(fn)
    return fn


@domain.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-i", "--inactive", is_flag=True, help="Create it inactive.")
@click.option(
    "--allowed-docker-registries", metavar="A,B", help="Comma-separated image registries."
)
@domain_options
@output_option
def add(
    name: str,
    inactive: bool,
    allowed_docker_registries: str | None,
    description: str | None,
    total_resource_slots: str | None,
    allowed_vfolder_hosts: str | None,
    integration_id: str | None,
    output: str,
) -> None:
    """Create the domain NAME."""
    from bai.client import Domain

    slots = parse_json_option(total_resource_slots, "'--total-resource-slots'")
    hosts = parse_json_option(allowed_vfolder_hosts, "'--allowed-vfolder-hosts'")

    async def main(api: APIClient) -> None:
        await Domain.create(
            api,
            name,
            description=description or "",
            is_active=not inactive,
            total_resource_slots=slots,
            allowed_vfolder_hosts=hosts,
            allowed_docker_registries=_names(allowed_docker_registries),
            integration_id=integration_id,
        )
        emit_done(f"Domain {name} created.", output)

    run_client(main)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@domain.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("--new-name", metavar="NAME", help="Rename the domain.")
@click.option("--active/--inactive", "is_active", default=None)
@click.option("--allowed-docker-registries", metavar="A,B")
@domain_options
@output_option
def update(
    name: str,
    new_name: str | None,
    is_active: bool | None,
    allowed_docker_registries: str | None,
    description: str | None,
    total_resource_slots: str | None,
    allowed_vfolder_hosts: str | None,
    integration_id: str | None,
    output: str,
) -> None:
    """Change the domain NAME (only what the options give)."""
    from bai.client import Domain

    slots = parse_json_option(total_resource_slots, "'--total-resource-slots'")
    hosts = parse_json_option(allowed_vfolder_hosts, "'--allowed-vfolder-hosts'")

    async def main(api: APIClient) -> None:
        await Domain.update(
            api,
            name,
            new_name=new_name,
            description=description,
            is_active=is_active,
            total_resource_slots=slots,
            allowed_vfolder_hosts=hosts,
            allowed_docker_registries=_names(allowed_docker_registries),
            integration_id=integration_id,
        )
        emit_done(f"Domain {name} updated.", output)

    run_client(main)


@domain.command(context_settings=CONTEXT)
@click.argument("name")
@output_option
def delete(name: str, output: str) -> None:
    """Deactivate the domain NAME (it stays; its users cannot sign in)."""
    from bai.client import Domain

    async def main(api: APIClient) -> None:
        await Domain.delete(api, name)
        emit_done(f"Domain {name} deleted.", output)

    run_client(main)


@domain.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@output_option
def purge(name: str, yes: bool, output: str) -> None:
    """Remove the domain NAME for good (refused while it has users, projects or sessions)."""
    from bai.client import Domain

    if not yes:
        click.confirm(f"Purge the domain {name} for good?", abort=True, err=True)

    async def main(api: APIClient) -> None:
        await Domain.purge(api, name)
        emit_done(f"Domain {name} purged.", output)

    run_client(main)
