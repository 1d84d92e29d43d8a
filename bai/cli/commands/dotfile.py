"""``bai dotfile``: dotfiles every new kernel gets in ``/home/work``, and the bootstrap script.

``create``/``update PATH`` read the content from ``-f FILE`` or stdin (kept
byte for byte) and take ``--perm`` (three octal digits, ``755`` by default
as the official client); ``list`` prints a table (path, permission, the
first line of the content); ``get PATH`` prints the content as stored;
``delete PATH`` asks first unless ``-f``.  ``-o ACCESS_KEY`` acts on another
keypair's dotfiles (admins), ``-g GROUP`` on a project's (its id, or its name
with ``-d DOMAIN``), ``-d DOMAIN`` alone on a domain's, as the official
``backend.ai dotfile``.  ``bai dotfile bootstrap-script`` shows the stored
bootstrap script, or stores one with ``-f FILE`` (``-f -``: stdin).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bai.cli.commands.pretty import print_done, print_info, print_table
from bai.cli.commands.runtime import run_client

if TYPE_CHECKING:
    from bai.client import APIClient
    from bai.client.dotfile import DotfileScope

__all__ = ["dotfile"]

F = TypeVar("F", bound=Callable[..., Any])


def _scope_options(fn: F) -> F:
    for option in reversed(
        (
            click.option(
                "-o",
                "--owner",
                "--owner-access-key",
                "owner_access_key",
                metavar="ACCESS_KEY",
                help="Act on the dotfiles of this keypair's user (admins).",
            ),
            click.option("-d", "--domain", metavar="DOMAIN", help="A domain's dotfiles."),
            click.option(
                "-g",
                "--group",
                metavar="GROUP",
                help="A project's dotfiles: its id, or its name with -d DOMAIN.",
            ),
        )
    ):
        fn = option(fn)
    return fn


def _scope(owner_access_key: str | None, domain: str | None, group: str | None) -> DotfileScope:
    from bai.client.dotfile import DotfileScope

    return DotfileScope(owner_access_key=owner_access_key, group=group, domain=domain)


def _content(path: str | None) -> str:
    if path is None or path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as source:
        return source.read()


_PERM = click.option(
    "--perm",
    "permission",
    default="755",
    show_default=True,
    help="The file's mode in three octal digits.",
)
_FILE = click.option(
    "-f",
    "--file",
    "source",
    metavar="FILE",
    help="Read the content from FILE (default: stdin).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def dotfile() -> None:
    """Dotfiles written into every new kernel's /home/work (user over project over domain)."""


@dotfile.command()
@click.argument("path")
@_PERM
@_FILE
@_scope_options
def create(
    path: str,
    permission: str,
    source: str | None,
    owner_access_key: str | None,
    domain: str | None,
    group: str | None,
) -> None:
    """Store a new dotfile at PATH (relative to /home/work)."""
    data = _content(source)
    scope = _scope(owner_access_key, domain, group)

    async def main(api: APIClient) -> int:
        from bai.client.dotfile import create_dotfile

        await create_dotfile(api, path, data, permission, scope)
        print_done(f"Dotfile {path} created.")
        return 0

    run_client(main)


@dotfile.command(name="list")
@_scope_options
def list_(owner_access_key: str | None, domain: str | None, group: str | None) -> None:
    """List the dotfiles."""
    scope = _scope(owner_access_key, domain, group)

    async def main(api: APIClient) -> int:
        from bai.client.dotfile import list_dotfiles

        entries = await list_dotfiles(api, scope)
        if not entries:
            print_info("There are no dotfiles.")
            return 0
        rows = [
            (item["path"], item["permission"], (item["data"].splitlines() or [""])[0][:40])
            for item in entries
        ]
        print_table(("Path", "Permission", "Data"), rows)
        return 0

    run_client(main)


@dotfile.command()
@click.argument("path")
@_scope_options
def get(path: str, owner_access_key: str | None, domain: str | None, group: str | None) -> None:
    """Print the content of the dotfile at PATH."""
    scope = _scope(owner_access_key, domain, group)

    async def main(api: APIClient) -> int:
        from bai.client.dotfile import get_dotfile

        found = await get_dotfile(api, path, scope)
        click.echo(found["data"], nl=False)
        return 0

    run_client(main)


@dotfile.command()
@click.argument("path")
@_PERM
@_FILE
@_scope_options
def update(
    path: str,
    permission: str,
    source: str | None,
    owner_access_key: str | None,
    domain: str | None,
    group: str | None,
) -> None:
    """Replace the content and mode of the dotfile at PATH."""
    data = _content(source)
    scope = _scope(owner_access_key, domain, group)

    async def main(api: APIClient) -> int:
        from bai.client.dotfile import update_dotfile

        await update_dotfile(api, path, data, permission, scope)
        print_done(f"Dotfile {path} updated.")
        return 0

    run_client(main)


@dotfile.command()
@click.argument("path")
@click.option("-f", "--force", is_flag=True, help="Delete without asking.")
@_scope_options
def delete(
    path: str, force: bool, owner_access_key: str | None, domain: str | None, group: str | None
) -> None:
    """Delete the dotfile at PATH."""
    if not force and not click.confirm(f"Delete the dotfile {path}?"):
        print_info("Aborted.")
        return
    scope = _scope(owner_access_key, domain, group)

    async def main(api: APIClient) -> int:
        from bai.client.dotfile import delete_dotfile

        await delete_dotfile(api, path, scope)
        print_done(f"Dotfile {path} deleted.")
        return 0

    run_client(main)


@dotfile.command(name="bootstrap-script")
@_FILE
def bootstrap_script(source: str | None) -> None:
    """Show the stored bootstrap script, or store one from -f FILE (-f -: stdin)."""
    script = None if source is None else _content(source)

    async def main(api: APIClient) -> int:
        from bai.client.dotfile import get_bootstrap_script, set_bootstrap_script

        if script is None:
            click.echo(await get_bootstrap_script(api))
            return 0
        await set_bootstrap_script(api, script)
        print_done("Bootstrap script stored.")
        return 0

    run_client(main)
