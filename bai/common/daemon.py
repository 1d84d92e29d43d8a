"""Running one bai daemon as a process: config, logging, pid file, signals.

:func:`run_daemon` is the body of ``bai agent`` and ``bai manager``: it loads
the daemon's TOML config (a bad file exits 2 with one line naming the
problem), sets up logging from its ``[logging]`` section, writes the pid file
if one is configured, and runs the daemon's services in one root nursery
until SIGINT or SIGTERM, which cancels them all.  The pid file is removed on
the way out, whatever ended the run.

:func:`serve_until_signal` is that run loop on its own (``bai up`` uses it too);
:func:`tune_collector` sets the garbage collector up for a long-running
server; every daemon entry point (``bai agent``, ``bai manager``, ``bai up``)
calls it once its modules are imported.

:func:`private_dir` and :func:`private_file` keep what a daemon holds secret
(keys, kernels' environments and output) to the daemon's user: folders 0700,
files 0600, also those an earlier run left with looser modes.
"""

from __future__ import annotations

import errno
import functools
import gc
import logging
import os
import signal
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import trio

from bai.common.config import ConfigError, DaemonConfig, LoggingConfig, load_config
from bai.common.logging import setup_logging_from

log = logging.getLogger(__name__)

C = TypeVar("C", bound=DaemonConfig)

#: Net new container objects between young garbage collections in a daemon.
GC_YOUNG_THRESHOLD: Final = 10_000


def tune_collector() -> None:
    """Set the cyclic garbage collector up for a server process; once per process.

    Under load the objects of requests in flight survive young collections
    and reach the oldest generation often enough to trigger a full collection
    every second or so, and each full collection walks every module, class
    and function of the process again (about 10 % of the manager's time at
    1,500 requests/s).  So what the process holds now (its imported code) is
    frozen out of later collections (reference counting still frees those
    objects; only cycles among them outlive their use), and young collections
    run every :data:`GC_YOUNG_THRESHOLD` net allocations instead of 700,
    which lets most request objects die young.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def private_dir(path: Path) -> None:
    """Make *path* a folder for the daemon's user only, and every file directly in it.

    Creates the folder (and missing parents) where it is missing.  The folder
    becomes mode 0700 and each regular file in it 0600, all owned by the
    process's effective user: an earlier run's files of another user are taken
    over where the process may (as root), else PermissionError names the
    first one.  Subfolders and links in it are left alone, and so is a shared
    folder such as ``/tmp`` (sticky bit): PermissionError says to give the
    daemon a folder of its own.  Blocking.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.stat(path).st_mode & stat.S_ISVTX:
        raise PermissionError(
            errno.EPERM, "a shared folder cannot be made private: use one of its own", str(path)
        )
    _make_private(path, 0o700)
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                _make_private(entry.path, 0o600)


def private_file(path: Path) -> None:
    """Make *path* a file only the daemon's user can use (mode 0600), created empty if missing.

    Creating it first keeps a file another program fills with secrets (a
    SQLite database) from ever being readable by others.  Blocking.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    _make_private(path, 0o600)


def _make_private(path: str | Path, mode: int) -> None:
    uid, gid = os.geteuid(), os.getegid()
    info = os.stat(path)
    if info.st_uid != uid:
        os.chown(path, uid, gid)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


async def serve_until_signal(start: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    """Start services with ``start(nursery)``, then run until SIGINT or SIGTERM cancels them all."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await start(nursery)
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
    tune_collector()
    pid_file = pid_file_of(config)
    if pid_file is not None:
        pid_file.write_text(f"{os.getpid()}\n")
    try:
        trio.run(serve_until_signal, functools.partial(start, config))
    finally:
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
    return 0
