"""``bai admin preset ...``: resource presets, which the spec manages only through GraphQL.

``add NAME -r cpu=2 -r mem=4g [--shared-memory 64m]`` (the same ``-r``
syntax as ``bai run``), ``update``, ``delete``, ``list``, ``info``.
Through :class:`bai.client.ResourcePreset`.
"""

from __future__ import annotations

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
)
from bai.cli.commands.params import parse_resources
from bai.cli.commands.pretty import print_fail
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["preset"]

FIELDS: Final = ("name", "resource_slots", "shared_memory")
_RESOURCE_HELP: Final = "A slot and its amount, e.g. -r cpu=2 -r mem=4g (repeatable)."


@click.group(context_settings=CONTEXT)
def preset() -> None:
    """Resource presets (superadmins)."""


@preset.command("list", context_settings=CONTEXT)
@format_option(FIELDS)
@paging_options
@output_option
def list_presets(format_: str | None, limit: int, offset: int, output: str) -> None:
    """List resource presets."""
    from bai.client import ResourcePreset

    fields = parse_format(format_, FIELDS, FIELDS)

    async def main(api: APIClient) -> None:
        items = await ResourcePreset.list(api, fields=fields)
        emit_list(
            page_of(items, limit, offset),
            fields,
            output,
            total=len(items),
            offset=offset,
            noun="presets",
        )

    run_client(main)


@preset.command(context_settings=CONTEXT)
@click.argument("name")
@format_option(FIELDS)
@output_option
def info(name: str, format_: str | None, output: str) -> None:
    """Show the preset NAME."""
    from bai.client import ResourcePreset

    fields = parse_format(format_, FIELDS, FIELDS)

    async def main(api: APIClient) -> int:
        found = await ResourcePreset.detail(api, name, fields=fields)
        if found is None:
            print_fail(f"There is no preset {name!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@preset.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-r", "--resource", "resources", multiple=True, required=True, help=_RESOURCE_HELP)
@click.option("--shared-memory", metavar="SIZE", help="Shared memory, e.g. 64m.")
@output_option
def add(name: str, resources: tuple[str, ...], shared_memory: str | None, output: str) -> None:
    """Create the preset NAME."""
    from bai.client import ResourcePreset

    slots = parse_resources(resources, "'-r' / '--resource'")

    async def main(api: APIClient) -> None:
        await ResourcePreset.create(api, name, slots, shared_memory=shared_memory)
        emit_done(f"Preset {name} created.", output)

    run_client(main)


@preset.command(context_settings=CONTEXT)
@click.argument("name")
@click.option("-r", "--resource", "resources", multiple=True, help=_RESOURCE_HELP)
@click.option("--shared-memory", metavar="SIZE", help="Shared memory, e.g. 64m.")
@output_option
def update(name: str, resources: tuple[str, ...], shared_memory: str | None, output: str) -> None:
    """Change the preset NAME (``-r`` replaces all its slots)."""
    from bai.client import ResourcePreset

    slots = parse_resources(resources, "'-r' / '--resource'") if resources else None

    async def main(api: APIClient) -> None:
        await ResourcePreset.update(api, name, resource_slots=slots, shared_memory=shared_memory)
        emit_done(f"Preset {name} updated.", output)

    run_client(main)


@preset.command(context_settings=CONTEXT)
@click.argument("name")
@output_option
def delete(name: str, output: str) -> None:
    """Delete the preset NAME."""
    from bai.client import ResourcePreset

    async def main(api: APIClient) -> None:
        await ResourcePreset.delete(api, name)
        emit_done(f"Preset {name} deleted.", output)

    run_client(main)
