"""``bai watcher``: run the agent watcher next to an agent (distributed mode)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("watcher")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="the agent's agent.toml, read for [watcher] (default: ./, ~/.config/bai/, /etc/bai/).",
)
def watcher(config_path: Path | None) -> None:
    """Run an agent watcher: the agent's state, start, stop and restart for the manager."""
    from bai.watcher.daemon import main

    raise SystemExit(main(config_path))
