"""Running one bai daemon as a process: config, logging, pid file, signals.

:func:`run_daemon` is the body of ``bai agent`` and ``bai manager``: it loads
the daemon's TOML config (a bad file exits 2 with one line naming the
problem), sets up logging from its ``[logging]`` section, writes the pid file
if one is configured, and runs the daemon's services in one root nursery
until SIGINT or SIGTERM, which cancels them all.  The pid file is removed on
the way out, whatever ended the run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio

from bai.common.config import ConfigError, DaemonConfig, LoggingConfig, load_config
from bai.common.logging import setup_logging_from

log = logging.getLogger(__name__)

C = TypeVar("C", bound=DaemonConfig)


async def _serve_until_signal(
    config: C, start: Callable[[C, trio.Nursery], Awaitable[None]]
) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await start(config, nursery)
            async for signum in signals:
                log.info("received %s; stopping", signal.Signals(signum).name)
                break
        nursery.cancel_scope.cancel()


def run_daemon(
    name: str,
    kind: type[C],
    config_path: Path | None,
    *,
    start: Callable[[C, trio.Nursery], Awaitable[None]],
    logging_of: Callable[[C], LoggingConfig],
    pid_file_of: Callable[[C], Path | None],
) -> int:
    """Run daemon *name* until a signal and return the process exit code.

    *start* starts the daemon's services in the root nursery and returns once
    they are ready; *logging_of* and *pid_file_of* pick those settings out of
    the loaded config.
    """
    try:
        loaded = load_config(kind, config_path)
    except ConfigError as exc:
        print(f"bai {name}: {exc}")
        return 2
    config = loaded.config
    setup_logging_from(logging_of(config))
    log.info("%s", loaded.describe())
    pid_file = pid_file_of(config)
    if pid_file is not None:
        pid_file.write_text(f"{os.getpid()}\n")
    try:
        trio.run(_serve_until_signal, config, start)
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    return 0
