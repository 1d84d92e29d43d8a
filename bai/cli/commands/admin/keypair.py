"""``bai admin keypair ...``: list, show, add, change, (de)activate and delete keypairs.

As the official ``backend.ai admin keypair`` commands: ``add USER_ID``
prints the new access and secret key (the secret is shown only here),
``update ACCESS_KEY --rate-limit N``, ``activate``/``deactivate`` (an
inactive keypair's requests are refused), ``delete``.  Through
:class:`bai.client.KeyPair`.
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
    paging_options,
    parse_format,
)
from bai.cli.commands.pretty import print_fail
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["keypair"]

FIELDS: Final = (
    "user_id",
    "access_key",
    "secret_key",
    "is_active",
    "is_admin",
    "resource_policy",
    "created_at",
    "modified_at",
    "last_used",
    "rate_limit",
    "num_queries",
    "concurrency_used",
    "domain_name",
    "ssh_public_key",
)


@click.group(context_settings=CONTEXT)
def keypair() -> None:
    """Keypairs (administrators; ``info``: your own, for anyone)."""


@keypair.command("list", context_settings=CONTEXT)
@click.option("-u", "--user-id", metavar="EMAIL", help="Only this user's keypairs.")
@click.option("--active/--inactive", "is_active", default=None, help="Only (in)active ones.")
@click.option("-d", "--domain", "domain_name", metavar="NAME", help="Only this domain's.")
@click.option("--filter", "filter_", metavar="EXPR", help="A filter such as 'is_admin == true'.")
@click.option("--order", metavar="EXPR", help="An order such as '-created_at'.")
@format_option(FIELDS)
@paging_options
@output_option
def list_keypairs(
    user_id: str | None,
    is_active: bool | None,
    domain_name: str | None,
    filter_: str | None,
    order: str | None,
    format_: str | None,
    limit: int,
    offset: int,
    output: str,
) -> None:
    """List keypairs, a page at a time."""
    from bai.client import KeyPair

    fields = parse_format(format_, FIELDS, KeyPair.LIST_FIELDS)

    async def main(api: APIClient) -> None:
        page = await KeyPair.list(
            api,
            user_id=user_id,
            is_active=is_active,
            domain_name=domain_name,
            filter=filter_,
            order=order,
            fields=fields,
            limit=limit,
            offset=offset,
        )
        emit_list(
            page.items, fields, output, total=page.total_count, offset=offset, noun="keypairs"
        )

    run_client(main)


@keypair.command(context_settings=CONTEXT)
@click.argument("access_key", required=False)
@format_option(FIELDS)
@output_option
def info(access_key: str | None, format_: str | None, output: str) -> None:
    """Show the keypair ACCESS_KEY (your own without it)."""
    from bai.client import KeyPair

    fields = parse_format(format_, FIELDS, KeyPair.INFO_FIELDS)

    async def main(api: APIClient) -> int:
        found = await KeyPair.detail(api, access_key, fields=fields)
        if found is None:
            print_fail(f"There is no keypair {access_key!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@keypair.command(context_settings=CONTEXT)
@click.argument("user_id", metavar="USER_ID")
@click.option("-a", "--admin", "is_admin", is_flag=True, help="An administrator's keypair.")
@click.option("-i", "--inactive", is_flag=True, help="Create it inactive.")
@click.option("-r", "--resource-policy", metavar="NAME", help="Its keypair resource policy.")
@click.option("-l", "--rate-limit", type=click.IntRange(min=1), help="Requests per 15 minutes.")
@click.option("--concurrency-limit", type=click.IntRange(min=0), help="Concurrent sessions.")
@output_option
def add(
    user_id: str,
    is_admin: bool,
    inactive: bool,
    resource_policy: str | None,
    rate_limit: int | None,
    concurrency_limit: int | None,
    output: str,
) -> None:
    """Create a keypair for the user USER_ID (an email); prints both keys."""
    from bai.client import KeyPair

    async def main(api: APIClient) -> None:
        created = await KeyPair.create(
            api,
            user_id,
            is_active=not inactive,
            is_admin=is_admin,
            resource_policy=resource_policy,
            rate_limit=rate_limit,
            concurrency_limit=concurrency_limit,
        )
        emit_done(
            f"Keypair created for {user_id}.",
            output,
            access_key=created.get("access_key"),
            secret_key=created.get("secret_key"),
        )

    run_client(main)


@keypair.command(context_settings=CONTEXT)
@click.argument("access_key")
@click.option("--admin/--no-admin", "is_admin", default=None, help="Administrator or not.")
@click.option("-r", "--resource-policy", metavar="NAME")
@click.option("-l", "--rate-limit", type=click.IntRange(min=1))
@click.option("--concurrency-limit", type=click.IntRange(min=0))
@output_option
def update(
    access_key: str,
    is_admin: bool | None,
    resource_policy: str | None,
    rate_limit: int | None,
    concurrency_limit: int | None,
    output: str,
) -> None:
    """Change the keypair ACCESS_KEY (only what the options give)."""
    from bai.client import KeyPair

    async def main(api: APIClient) -> None:
        await KeyPair.update(
            api,
            access_key,
            is_admin=is_admin,
            resource_policy=resource_policy,
            rate_limit=rate_limit,
            concurrency_limit=concurrency_limit,
        )
        emit_done(f"Keypair {access_key} updated.", output)

    run_client(main)


def _set_active(access_key: str, active: bool, output: str) -> None:
    from bai.client import KeyPair

    async def main(api: APIClient) -> None:
        await KeyPair.update(api, access_key, is_active=active)
        emit_done(f"Keypair {access_key} {'activated' if active else 'deactivated'}.", output)

    run_client(main)


@keypair.command(context_settings=CONTEXT)
@click.argument("access_key")
@output_option
def activate(access_key: str, output: str) -> None:
    """Let the keypair ACCESS_KEY sign requests again."""
    _set_active(access_key, True, output)


@keypair.command(context_settings=CONTEXT)
@click.argument("access_key")
@output_option
def deactivate(access_key: str, output: str) -> None:
    """Refuse every request the keypair ACCESS_KEY signs."""
    _set_active(access_key, False, output)


@keypair.command(context_settings=CONTEXT)
@click.argument("access_key")
@output_option
def delete(access_key: str, output: str) -> None:
    """Delete the keypair ACCESS_KEY for good."""
    from bai.client import KeyPair

    async def main(api: APIClient) -> None:
        await KeyPair.delete(api, access_key)
        emit_done(f"Keypair {access_key} deleted.", output)

    run_client(main)
