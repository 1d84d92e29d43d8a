"""``bai app-proxy``: run the app proxy daemon (distributed mode)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("app-proxy")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="app-proxy.toml to use (default: search ./, ~/.config/bai/, /etc/bai/).",
)
def app_proxy(config_path: Path | None) -> None:
    """Run an app proxy: sessions' web apps on ports or host names, for browsers."""
    from bai.appproxy.daemon import main

    raise SystemExit(main(config_path))
