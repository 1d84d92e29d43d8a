"""``bai admin scaling-group ...``: resource groups and who may use them.

``add NAME`` (driver ``static``, scheduler ``fifo`` unless told), ``update``,
``delete`` (refused while agents or sessions use it); ``associate-domain``,
``associate-group`` (a project id), ``associate-keypair`` and their
``dissociate-*`` twins decide who may schedule sessions there;
``available PROJECT`` lists those the caller may use in a project (any
user).  Through :class:`bai.client.ScalingGroup`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

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

__all__ = ["scaling_group"]

FIELDS: Final = (
    "name",
    "description",
    "is_active",
    "is_public",
    "created_at",
    "driver",
    "driver_opts",
    "scheduler",
    "scheduler_opts",
    "use_host_network",
    "wsproxy_addr",
    "wsproxy_api_token",
)


@click.group("scaling-group", context_settings=CONTEXT)
def scaling_group() -> None:
    """Resource groups (scaling groups) of agents (administrators)."""


@scaling_group.command("list", context_settings=CONTEXT)
@click.option("--active/--inactive", "is_active", default=None, help="Only (in)active ones.")
@format_option(FIELDS)
@paging_options
@output_option
def list_scaling_groups(
    is_active: bool | None, format_: str | None, limit: int, offset: int, output: str
) -> None:
    """List resource groups."""
    from bai.client import ScalingGroup

    fields = parse_format(format_, FIELDS, ScalingGroup.LIST_FIELDS)

    async def main(api: APIClient) -> None:
        items = await ScalingGroup.list(api, is_active=is_active, fields=fields)
        emit_list(
            page_of(items, limit, offset),
            fields,
            output,
            total=len(items),
            offset=offset,
            noun="resource groups",
        )

    run_client(main)


@scaling_group.command(context_settings=CONTEXT)
@click.argument("name")
@format_option(FIELDS)
@output_option
def info(name: str, format_: str | None, output: str) -> None:
    """Show the resource group NAME."""
    from bai.client import ScalingGroup

    fields = parse_format(format_, FIELDS, ScalingGroup.INFO_FIELDS)

    async def main(api: APIClient) -> int:
        found = await ScalingGroup.detail(api, name, fields=fields)
        if found is None:
            print_fail(f"There is no resource group {name!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@scaling_group.command(context_settings=CONTEXT)
@click.argument("project")
@output_option
def available(project: str, output: str) -> None:
    """List the resource groups you may use in PROJECT (name or id)."""
    from bai.client import ScalingGroup

    async def main(api: APIClient) -> None:
        items = await ScalingGroup.list_available(api, project)
        emit_list(items, ["name"], output, total=len(items), offset=0, noun="resource groups")

    run_client(main)


_SHARED_OPTIONS: Final = (
    click.option("--description", help="A description."),
    click.option("--driver", help="The agent driver (static)."),
    click.option("--driver-opts", metavar="JSON", help="The driver's options."),
    click.option("--scheduler", help="fifo, lifo or drf."),
    click.option("--scheduler-opts", metavar="JSON", help="The scheduler's options."),
    click.option("--wsproxy-addr", metavar="URL", help="The app proxy's address."),
    click.option("--wsproxy-api-token", metavar="TOKEN", help="The app proxy's API token."),
    click.option("--use-host-network/--no-use-host-network", default=None),
)


def _shared_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_SHARED_OPTIONS):
        fn = option(fn)
    return fn


@scaling_group.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-i", "--inactive", is_flag=True, help="Create it inactive.")
@click.option("--private", is_flag=True, help="Not public: only associated users may use it.")
@_shared_options
@output_option
def add(
    name: str,
    inactive: bool,
    private: bool,
    description: str | None,
    driver: str | None,
    driver_opts: str | None,
    scheduler: str | None,
    scheduler_opts: str | None,
    wsproxy_addr: str | None,
    wsproxy_api_token: str | None,
    use_host_network: bool | None,
    output: str,
) -> None:
    """Create the resource group NAME."""
    from bai.client import ScalingGroup

    dopts = parse_json_option(driver_opts, "'--driver-opts'")
    sopts = parse_json_option(scheduler_opts, "'--scheduler-opts'")

    async def main(api: APIClient) -> None:
        await ScalingGroup.create(
            api,
            name,
            driver=driver or "static",
            scheduler=scheduler or "fifo",
            description=description or "",
            is_active=not inactive,
            is_public=not private,
            driver_opts=dopts,
            scheduler_opts=sopts,
            use_host_network=bool(use_host_network),
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
        )
        emit_done(f"Resource group {name} created.", output)

    run_client(main)


@scaling_group.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("--active/--inactive", "is_active", default=None)
@click.option("--public/--private", "is_public", default=None)
@_shared_options
@output_option
def update(
    name: str,
    is_active: bool | None,
    is_public: bool | None,
    description: str | None,
    driver: str | None,
    driver_opts: str | None,
    scheduler: str | None,
    scheduler_opts: str | None,
    wsproxy_addr: str | None,
    wsproxy_api_token: str | None,
    use_host_network: bool | None,
    output: str,
) -> None:
    """Change the resource group NAME (only what the options give)."""
    from bai.client import ScalingGroup

    dopts = parse_json_option(driver_opts, "'--driver-opts'")
    sopts = parse_json_option(scheduler_opts, "'--scheduler-opts'")

    async def main(api: APIClient) -> None:
        await ScalingGroup.update(
            api,
            name,
            driver=driver,
            scheduler=scheduler,
            description=description,
            is_active=is_active,
            is_public=is_public,
            driver_opts=dopts,
            scheduler_opts=sopts,
            use_host_network=use_host_network,
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
        )
        emit_done(f"Resource group {name} updated.", output)

    run_client(main)


@scaling_group.command(context_settings=CONTEXT)
@click.argument("name")
@output_option
def delete(name: str, output: str) -> None:
    """Delete the resource group NAME."""
    from bai.client import ScalingGroup

    async def main(api: APIClient) -> None:
        await ScalingGroup.delete(api, name)
        emit_done(f"Resource group {name} deleted.", output)

    run_client(main)


def _association(
    verb: str,
    what: str,
    call: Callable[[APIClient, str, str], Awaitable[None]],
) -> Callable[[str, str, str], None]:
    def command(scaling_group: str, target: str, output: str) -> None:
        async def main(api: APIClient) -> None:
            await call(api, scaling_group, target)
            emit_done(f"Resource group {scaling_group} {verb} {what} {target}.", output)

        run_client(main)

    return command


def _register_associations() -> None:
    # Imported here, not at module level, so `bai --help` never loads the SDK:
    # the wrappers are looked up when a command runs.
    for name, verb, what, method, metavar in (
        ("associate-domain", "associated with", "domain", "associate_domain", "DOMAIN"),
        ("dissociate-domain", "dissociated from", "domain", "dissociate_domain", "DOMAIN"),
        ("associate-group", "associated with", "project", "associate_group", "GROUP_ID"),
        ("dissociate-group", "dissociated from", "project", "dissociate_group", "GROUP_ID"),
        ("associate-keypair", "associated with", "keypair", "associate_keypair", "ACCESS_KEY"),
        (
            "dissociate-keypair",
            "dissociated from",
            "keypair",
            "dissociate_keypair",
            "ACCESS_KEY",
        ),
    ):

        async def call(api: APIClient, sg: str, target: str, method: str = method) -> None:
            from bai.client import ScalingGroup

            await getattr(ScalingGroup, method)(api, sg, target)

        command = _association(verb, what, call)
        command.__doc__ = (
            f"Let the {what} {metavar} use the resource group SCALING_GROUP."
            if name.startswith("associate")
            else f"Stop the {what} {metavar} from using the resource group SCALING_GROUP."
        )
        decorated = output_option(command)
        decorated = click.argument("target", metavar=metavar)(decorated)
        decorated = click.argument("scaling_group")(decorated)
        scaling_group.command(name, context_settings=CONTEXT)(decorated)


_register_associations()
