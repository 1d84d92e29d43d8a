"""``bai config``: the client's configuration, and the manager's shared config.

``bai config`` alone shows where the client connects and with which keypair
(secret key masked) and asks the server for its versions, as the official
``backend.ai config`` does.  ``bai config get|set|delete`` read and write the
manager's shared configuration through ``/config/get|set|delete``
(superadmin keypairs only).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from bai.cli.commands.params import parse_json
from bai.cli.commands.pretty import print_done
from bai.cli.commands.runtime import load_config, run_client

if TYPE_CHECKING:
    from bai.client import APIClient, APIConfig

__all__ = ["config", "mask_secret", "print_value"]


def mask_secret(secret: str) -> str:
    """Show only the first and last 4 characters of a secret key."""
    if len(secret) <= 12:
        return "*" * len(secret)
    return f"{secret[:4]}{'*' * (len(secret) - 8)}{secret[-4:]}"


def _describe(config: APIConfig) -> list[str]:
    from bai import __version__

    lines = [
        f"API endpoint: {click.style(config.endpoint, bold=True)} (mode: {config.endpoint_type})",
        f"Client version: {__version__} (API: {config.api_version})",
        f'Domain name: "{config.domain}"',
        f'Group name: "{config.group}"',
    ]
    if config.has_credentials:
        lines.append(f'Access key: "{config.access_key}"')
        lines.append(f'Secret key: "{mask_secret(config.secret_key)}"')
    else:
        lines.append("Access key: (not set: BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY are needed)")
    lines.append(f"Signature hash type: {config.hash_type}")
    lines.append(f"Skip SSL certificate validation? {config.skip_sslcert_validation}")
    if config.vfolder_mounts:
        lines.append(f"Auto-mounted vfolders: {', '.join(config.vfolder_mounts)}")
    return lines


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def config(ctx: click.Context) -> None:
    """Show the client configuration; get/set/delete the manager's shared config."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(show)


@config.command()
def show() -> None:
    """Show where the client connects, with which keypair, and the server's versions."""
    settings = load_config(needs_credentials=False)
    for line in _describe(settings):
        click.echo(line)

    async def main(api: APIClient) -> int:
        from bai.client import BackendError

        try:
            versions = await api.hello()
        except BackendError as exc:
            click.echo(f"Server version: (failed to fetch: {exc})")
            return 1
        click.echo(
            f"Server version: {versions.get('manager', 'unknown')} (API: {versions['version']})"
        )
        return 0

    run_client(main, needs_credentials=False)


def print_value(value: Any) -> None:
    """Print a shared-config value: a string as is, anything else as indented JSON."""
    if isinstance(value, str):
        click.echo(value)
    else:
        click.echo(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


@config.command()
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Read every key starting with KEY, as a tree.")
def get(key: str, prefix: bool) -> None:
    """Print the shared-config value under KEY (nothing if unset)."""

    async def main(api: APIClient) -> int:
        from bai.client import get_config

        value = await get_config(api, key, prefix=prefix)
        if value is not None and value != {}:
            print_value(value)
        return 0

    run_client(main)


@config.command("set")
@click.argument("key")
@click.argument("value")
@click.option(
    "--json", "as_json", is_flag=True, help="VALUE is a JSON object, stored as a subtree."
)
def set_(key: str, value: str, as_json: bool) -> None:
    """Store VALUE under KEY in the shared config."""
    stored: str | dict[str, Any] = value
    if as_json:
        parsed = parse_json(value, "VALUE")
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object", param_hint="VALUE")
        stored = parsed

    async def main(api: APIClient) -> int:
        from bai.client import set_config

        await set_config(api, key, stored)
        print_done(f"Set {key}.")
        return 0

    run_client(main)


@config.command()
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
def delete(key: str, prefix: bool) -> None:
    """Delete KEY from the shared config."""

    async def main(api: APIClient) -> int:
        from bai.client import delete_config

        await delete_config(api, key, prefix=prefix)
        print_done(f"Deleted {key}{' and every key under it' if prefix else ''}.")
        return 0

    run_client(main)
