"""``bai webserver``: run the console server (session mode) as its own daemon."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("webserver")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="webserver.toml to use (default: search ./, ~/.config/bai/, /etc/bai/).",
)
def webserver(config_path: Path | None) -> None:
    """Run a console server: password logins and cookie sessions relayed to the API."""
    from bai.webserver.daemon import main

    raise SystemExit(main(config_path))
