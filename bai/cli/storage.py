"""``bai storage-proxy``: run the storage proxy daemon (distributed mode)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("storage-proxy")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="storage-proxy.toml to use (default: search ./, ~/.config/bai/, /etc/bai/).",
)
def storage_proxy(config_path: Path | None) -> None:
    """Run a storage proxy: vfolder volumes, the manager-facing and the client-facing APIs."""
    from bai.storage.daemon import main

    raise SystemExit(main(config_path))
