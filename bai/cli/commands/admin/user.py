"""``bai admin user ...``: list, show, add, change, deactivate and purge users.

As the official ``backend.ai admin user`` commands: ``add DOMAIN EMAIL
PASSWORD``, ``update EMAIL --full-name ...``, ``delete EMAIL`` (deactivates:
status ``deleted``, the data stays), ``purge EMAIL`` (removes the user with
its folders and ended sessions).  ``activate``/``deactivate`` set the status
to ``active``/``inactive``.  Through :class:`bai.client.User`.
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

__all__ = ["user"]

ROLES: Final = ("superadmin", "admin", "user", "monitor")
STATUSES: Final = ("active", "inactive", "deleted", "before-verification")
#: Every field ``-f`` may name (the SDK's defaults are subsets).
FIELDS: Final = (
    "uuid",
    "email",
    "username",
    "full_name",
    "domain_name",
    "role",
    "status",
    "status_info",
    "created_at",
    "modified_at",
    "need_password_change",
    "description",
    "resource_policy",
    "main_access_key",
    "groups { id name }",
)


@click.group(context_settings=CONTEXT)
def user() -> None:
    """Users (administrators)."""


@user.command("list", context_settings=CONTEXT)
@click.option("-s", "--status", type=click.Choice(STATUSES), help="Only users in this status.")
@click.option("-g", "--group", metavar="PROJECT_ID", help="Only members of this project.")
@click.option("-d", "--domain", "domain_name", metavar="NAME", help="Only users of this domain.")
@click.option(
    "--filter", "filter_", metavar="EXPR", help="A filter such as 'email ilike \"%@x.org\"'."
)
@click.option("--order", metavar="EXPR", help="An order such as '-created_at'.")
@format_option(FIELDS)
@paging_options
@output_option
def list_users(
    status: str | None,
    group: str | None,
    domain_name: str | None,
    filter_: str | None,
    order: str | None,
    format_: str | None,
    limit: int,
    offset: int,
    output: str,
) -> None:
    """List users, a page at a time."""
    from bai.client import User

    fields = parse_format(format_, FIELDS, User.LIST_FIELDS)

    async def main(api: APIClient) -> None:
        page = await User.list(
            api,
            status=status,
            group=group,
            domain_name=domain_name,
            filter=filter_,
            order=order,
            fields=fields,
            limit=limit,
            offset=offset,
        )
        emit_list(page.items, fields, output, total=page.total_count, offset=offset, noun="users")

    run_client(main)


@user.command(context_settings=CONTEXT)
@click.argument("email", required=False)
@format_option(FIELDS)
@output_option
def info(email: str | None, format_: str | None, output: str) -> None:
    """Show the user EMAIL (yourself without EMAIL)."""
    from bai.client import User

    fields = parse_format(format_, FIELDS, User.INFO_FIELDS)

    async def main(api: APIClient) -> int:
        found = await User.detail(api, email, fields=fields)
        if found is None:
            print_fail(f"There is no user {email!r}.")
            return EXIT_FAILURE
        emit_item(found, fields, output)
        return 0

    run_client(main)


@user.command(context_settings=CONTEXT)
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("email")
@click.argument("password")
@click.option("-u", "--username", help="Login name (default: the email).")
@click.option("-n", "--full-name", help="The user's full name.")
@click.option("-r", "--role", type=click.Choice(ROLES), default="user", show_default=True)
@click.option("-s", "--status", type=click.Choice(STATUSES), default="active", show_default=True)
@click.option("--need-password-change", is_flag=True, help="Ask for a new password first.")
@click.option("--description", default="", help="A note on the user.")
@click.option("--resource-policy", metavar="NAME", help="The user resource policy.")
@click.option(
    "-g", "--group", "groups", multiple=True, metavar="PROJECT_ID", help="Add to this project."
)
@output_option
def add(
    domain_name: str,
    email: str,
    password: str,
    username: str | None,
    full_name: str | None,
    role: str,
    status: str,
    need_password_change: bool,
    description: str,
    resource_policy: str | None,
    groups: tuple[str, ...],
    output: str,
) -> None:
    """Create the user EMAIL in DOMAIN with PASSWORD (and a keypair of its own)."""
    from bai.client import User

    async def main(api: APIClient) -> None:
        created = await User.create(
            api,
            domain_name,
            email,
            password,
            username=username,
            full_name=full_name,
            role=role,
            status=status,
            need_password_change=need_password_change,
            description=description,
            resource_policy=resource_policy,
            group_ids=groups or None,
        )
        emit_done(f"User {email} created.", output, uuid=created.get("uuid"))

    run_client(main)


@user.command(context_settings=CONTEXT)
@click.argument("email")
@click.option("-p", "--password", help="A new password.")
@click.option("-u", "--username", help="A new login name.")
@click.option("-n", "--full-name", help="A new full name.")
@click.option("-d", "--domain", "domain_name", metavar="NAME", help="Move to this domain.")
@click.option("-r", "--role", type=click.Choice(ROLES))
@click.option("-s", "--status", type=click.Choice(STATUSES))
@click.option("--need-password-change/--no-need-password-change", default=None)
@click.option("--description")
@click.option("--resource-policy", metavar="NAME")
@click.option("--main-access-key", metavar="KEY", help="The keypair the user signs in with.")
@output_option
def update(
    email: str,
    password: str | None,
    username: str | None,
    full_name: str | None,
    domain_name: str | None,
    role: str | None,
    status: str | None,
    need_password_change: bool | None,
    description: str | None,
    resource_policy: str | None,
    main_access_key: str | None,
    output: str,
) -> None:
    """Change the user EMAIL (only what the options give)."""
    from bai.client import User

    async def main(api: APIClient) -> None:
        await User.update(
            api,
            email,
            password=password,
            username=username,
            full_name=full_name,
            domain_name=domain_name,
            role=role,
            status=status,
            need_password_change=need_password_change,
            description=description,
            resource_policy=resource_policy,
            main_access_key=main_access_key,
        )
        emit_done(f"User {email} updated.", output)

    run_client(main)


def _set_status(email: str, status: str, output: str, verb: str) -> None:
    from bai.client import User

    async def main(api: APIClient) -> None:
        await User.update(api, email, status=status)
        emit_done(f"User {email} {verb}.", output)

    run_client(main)


@user.command(context_settings=CONTEXT)
@click.argument("email")
@output_option
def activate(email: str, output: str) -> None:
    """Let the user EMAIL sign in again (status ``active``)."""
    _set_status(email, "active", output, "activated")


@user.command(context_settings=CONTEXT)
@click.argument("email")
@output_option
def deactivate(email: str, output: str) -> None:
    """Stop the user EMAIL from signing in (status ``inactive``)."""
    _set_status(email, "inactive", output, "deactivated")


@user.command(context_settings=CONTEXT)
@click.argument("email")
@output_option
def delete(email: str, output: str) -> None:
    """Deactivate the user EMAIL for good (status ``deleted``; the data stays)."""
    from bai.client import User

    async def main(api: APIClient) -> None:
        await User.delete(api, email)
        emit_done(f"User {email} deleted.", output)

    run_client(main)


@user.command(context_settings=CONTEXT)
@click.argument("email")
@click.option(
    "--purge-shared-vfolders",
    is_flag=True,
    help="Also delete folders the user shares with others (else they pass to you).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@output_option
def purge(email: str, purge_shared_vfolders: bool, yes: bool, output: str) -> None:
    """Remove the user EMAIL with its folders and ended sessions (cannot be undone)."""
    from bai.client import User

    if not yes:
        click.confirm(f"Purge the user {email} and its data for good?", abort=True, err=True)

    async def main(api: APIClient) -> None:
        await User.purge(api, email, purge_shared_vfolders=purge_shared_vfolders)
        emit_done(f"User {email} purged.", output)

    run_client(main)
