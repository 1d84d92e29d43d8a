"""``bai admin resource-policy ...``: resource policies of keypairs, users and projects.

``--kind keypair|user|project`` (default ``keypair``) picks which; the
official client's ``backend.ai admin keypair-resource-policy`` commands are
the ``keypair`` kind.  ``add NAME`` takes the policy's limits as options
(``--total-resource-slots '{"cpu": "8"}'``, ``--max-concurrent-sessions``,
... for keypairs; ``--max-vfolder-count``, ``--max-quota-scope-size`` for
users and projects); an option of another kind is a usage error.  Through
:class:`bai.client.ResourcePolicy`.
"""

from __future__ import annotations

from collections.abc import Mapping
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

__all__ = ["policy_values", "resource_policy"]

KINDS: Final = ("keypair", "user", "project")
FIELDS: Final = (
    "name",
    "created_at",
    "default_for_unspecified",
    "total_resource_slots",
    "max_concurrent_sessions",
    "max_containers_per_session",
    "max_session_lifetime",
    "max_pending_session_count",
    "idle_timeout",
    "allowed_vfolder_hosts",
    "max_vfolder_count",
    "max_vfolder_size",
    "max_quota_scope_size",
)
#: Option (as its parameter name) -> the kinds it applies to.
_KIND_OF: Final[Mapping[str, tuple[str, ...]]] = {
    "default_for_unspecified": ("keypair",),
    "total_resource_slots": ("keypair",),
    "max_concurrent_sessions": ("keypair",),
    "max_containers_per_session": ("keypair",),
    "max_session_lifetime": ("keypair",),
    "max_pending_session_count": ("keypair",),
    "idle_timeout": ("keypair",),
    "allowed_vfolder_hosts": ("keypair",),
    "max_vfolder_count": ("user", "project"),
    "max_quota_scope_size": ("user", "project"),
}
_JSON_OPTIONS: Final = frozenset({"total_resource_slots", "allowed_vfolder_hosts"})


def policy_values(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The policy input from the options *given* (``None``: not given) for *kind*.

    An option of another kind, or JSON that does not parse, is a usage error.
    """
    values: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        option = "--" + name.replace("_", "-")
        if kind not in _KIND_OF[name]:
            raise click.UsageError(f"{option} does not apply to {kind} resource policies.")
        values[name] = parse_json_option(value, option) if name in _JSON_OPTIONS else value
    return values


def _policy_options(fn: Any) -> Any:
    options = (
        click.option(
            "--default-for-unspecified",
            type=click.Choice(["LIMITED", "UNLIMITED"]),
            help="Slots the policy does not name: LIMITED (none) or UNLIMITED.",
        ),
        click.option(
            "--total-resource-slots", metavar="JSON", help='Slots, e.g. \'{"cpu": "8"}\'.'
        ),
        click.option("--max-concurrent-sessions", type=click.IntRange(min=0)),
        click.option("--max-containers-per-session", type=click.IntRange(min=1)),
        click.option("--max-session-lifetime", type=click.IntRange(min=0), metavar="SECONDS"),
        click.option("--max-pending-session-count", type=click.IntRange(min=0)),
        click.option("--idle-timeout", type=click.IntRange(min=0), metavar="SECONDS"),
        click.option("--allowed-vfolder-hosts", metavar="JSON", help="Hosts and permissions."),
        click.option("--max-vfolder-count", type=click.IntRange(min=0)),
        click.option("--max-quota-scope-size", type=click.IntRange(min=-1), metavar="BYTES"),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


def _kind_option(fn: Any) -> Any:
    return click.option(
        "-k",
        "--kind",
        type=click.Choice(KINDS),
        default="keypair",
        show_default=True,
        help="Whose policies.",
    )(fn)


@click.group("resource-policy", context_settings=CONTEXT)
def resource_policy() -> None:
    """Resource policies of keypairs, users and projects (superadmins)."""


@resource_policy.command("list", context_settings=CONTEXT)
@_kind_option
@format_option(FIELDS)
@paging_options
@output_option
def list_policies(kind: str, format_: str | None, limit: int, offset: int, output: str) -> None:
    """List the resource policies of one kind."""
    from bai.client import ResourcePolicy

    fields = parse_format(format_, FIELDS, ResourcePolicy.FIELDS[kind])

    async def main(api: APIClient) -> None:
        items = await ResourcePolicy.list(api, kind, fields=fields)
        emit_list(
            page_of(items, limit, offset),
            fields,
            output,
            total=len(items),
            offset=offset,
            noun=f"{kind} resource policies",
        )

    run_client(main)


@resource_policy.command(context_settings=CONTEXT)
@click.argument("name")
@_kind_option
@format_option(FIELDS)
@output_option
def info(name: str, kind: str, format_: str | None, output: str) -> None:
    """Show the resource policy NAME."""
    from bai.client import ResourcePolicy

    fields = parse_format(format_, FIELDS, ResourcePolicy.FIELDS[kind])

    async def main(api: APIClient) -> int:
        found = await ResourcePolicy.detail(api, name, kind, fields=fields)
        if found is None:
            print_fail(f"There is no {kind} resource policy {name!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@resource_policy.command(context_settings=CONTEXT, name="add")
@click.argument("name")
@_kind_option
@_policy_options
@output_option
def add(name: str, kind: str, output: str, **given: Any) -> None:
    """Create the resource policy NAME."""
    from bai.client import ResourcePolicy

    values = policy_values(kind, given)

    async def main(api: APIClient) -> None:
        await ResourcePolicy.create(api, name, values, kind)
        emit_done(f"The {kind} resource policy {name} created.", output)

    run_client(main)


@resource_policy.command(context_settings=CONTEXT)
@click.argument("name")
@_kind_option
@_policy_options
@output_option
def update(name: str, kind: str, output: str, **given: Any) -> None:
    """Change the resource policy NAME (only what the options give)."""
    from bai.client import ResourcePolicy

    values = policy_values(kind, given)
    if not values:
        raise click.UsageError("Give at least one value to change.")

    async def main(api: APIClient) -> None:
        await ResourcePolicy.update(api, name, values, kind)
        emit_done(f"The {kind} resource policy {name} updated.", output)

    run_client(main)


@resource_policy.command(context_settings=CONTEXT)
@click.argument("name")
@_kind_option
@output_option
def delete(name: str, kind: str, output: str) -> None:
    """Delete the resource policy NAME (refused while something uses it)."""
    from bai.client import ResourcePolicy

    async def main(api: APIClient) -> None:
        await ResourcePolicy.delete(api, name, kind)
        emit_done(f"The {kind} resource policy {name} deleted.", output)

    run_client(main)
