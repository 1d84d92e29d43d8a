"""Entry point of the ``bai`` command.

Subcommands import their daemons lazily so that ``bai --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from bai import __version__


@click.group()
@click.version_option(__version__, prog_name="bai")
def cli() -> None:
    """bai: run people's code on shared accelerator clusters (Backend.AI compatible)."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def info(as_json: bool) -> None:
    """Show the version and what this host offers kernels (cgroups, bwrap, Docker, GPUs)."""
    from bai.agent.hostinfo import detect_host
    from bai.common import slots

    host = detect_host()
    report = {
        "version": __version__,
        "slots_implementation": slots.IMPLEMENTATION,
        **dataclasses.asdict(host),
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    cg = host.cgroups
    click.echo(f"bai {__version__} (slot arithmetic: {slots.IMPLEMENTATION})")
    click.echo(f"cpus     : {host.cpu_count}")
    if cg.version is None:
        click.echo(f"cgroups  : none ({cg.detail})")
    else:
        access = "writable" if cg.writable else "read-only"
        click.echo(f"cgroups  : v{cg.version}, {', '.join(cg.controllers)} ({access})")
    for name, tool in (("bwrap", host.bwrap), ("docker", host.docker)):
        click.echo(f"{name:<9}: {tool.version if tool.available else 'no - ' + tool.detail}")
    if host.gpus.devices:
        click.echo(f"gpus     : driver {host.gpus.driver_version}")
        for dev in host.gpus.devices:
            gib = dev["memory_bytes"] / 2**30
            click.echo(f"  [{dev['index']}] {dev['name']} {gib:.1f} GiB {dev['uuid']}")
    else:
        click.echo(f"gpus     : none ({host.gpus.detail})")


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="agent.toml to use (default: search ./, ~/.config/bai/, /etc/bai/).",
)
def agent(config_path: Path | None) -> None:
    """Run an agent: kernels on this host, RPC for the manager, heartbeats."""
    from bai.agent.daemon import main

    raise SystemExit(main(config_path))


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("./bai-data"),
    show_default=True,
    help="Where the database, kernels' scratch directories and client.env live.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API listens on.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="API port.")
@click.option(
    "--image-catalog",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The agent's image catalog (default: the built-in one; configs/images.toml is a sample).",
)
def up(data_dir: Path, host: str, port: int | None, image_catalog: Path | None) -> None:
    """Run everything in one process: manager, one agent, SQLite, local kernels.

    Prints the endpoint and access keys and writes DATA_DIR/client.env (the
    superadmin's secret key is there, not in the output); `source` it and both
    `bai` and the official `backend.ai` client talk to this cluster.
    Ctrl-C stops everything and leaves no kernel behind.
    """
    from bai.embedded import DEFAULT_PORT, main

    raise SystemExit(
        main(
            data_dir,
            host=host,
            port=DEFAULT_PORT if port is None else port,
            image_catalog=image_catalog,
        )
    )


def _register_daemon_groups() -> None:
    from bai.cli.appproxy import app_proxy
    from bai.cli.manager import manager
    from bai.cli.storage import storage_proxy
    from bai.cli.watcher import watcher
    from bai.cli.webserver import webserver

    cli.add_command(manager)
    cli.add_command(storage_proxy)
    cli.add_command(app_proxy)
    cli.add_command(webserver)
    cli.add_command(watcher)


_register_daemon_groups()


def _register_client_commands() -> None:
    # run, start, ps, rm, logs, events, config: their modules import only click.
    from bai.cli.commands import register

    register(cli)


_register_client_commands()
