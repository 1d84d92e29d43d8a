"""``bai watcher --config agent.toml``: the watcher under :func:`bai.common.daemon.run_daemon`.

It reads the agent's own ``agent.toml`` (its ``[watcher]`` section), so the
agent it runs (``control = "process"``) uses the same file.  A bad config or
a missing ``[watcher] token`` exits 2 with one line naming the problem; a
clean stop (SIGINT, SIGTERM) stops the agent first and exits 0.
"""

from __future__ import annotations

from pathlib import Path

import trio

from bai.common.config import AgentConfig, ConfigError, load_config
from bai.common.daemon import run_daemon
from bai.watcher.server import WatcherService


def main(config_path: Path | None) -> int:
    """Run the watcher until a signal; returns the process exit code."""
    try:
        config = load_config(AgentConfig, config_path).config
    except ConfigError:
        pass  # run_daemon reports it
    else:
        if config.watcher.token is None:
            print("bai watcher: [watcher] token is not set: managers could not be told apart")
            return 2

    async def start(config: AgentConfig, nursery: trio.Nursery) -> None:
        await nursery.start(WatcherService(config, config_path).serve)

    return run_daemon(
        "watcher",
        AgentConfig,
        config_path,
        start=start,
        logging_of=lambda config: config.logging,
        pid_file_of=lambda config: None,
    )
