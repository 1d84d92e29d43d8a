"""Logging setup for bai's daemons: per-component loggers, console and rotating-file drivers.

Mirrors the spec's ``[logging]`` sections: a global ``level``, a list of
``drivers`` (``console``, ``file``), per-package levels (``pkg-ns``), console
options (``colored``, ``format`` = ``simple`` | ``verbose``) and file options
(``path``, ``filename``, ``backup-count``, ``rotation-size``).

:func:`setup_logging` is idempotent: it replaces the handlers it installed
before, so a daemon restarted in the same process (as in tests or ``bai up``)
never logs each line twice.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from bai.common.config import LoggingConfig

ROOT_LOGGER = "bai"

LogFormat = Literal["simple", "verbose"]

_FORMATS: dict[str, str] = {
    "simple": "%(levelname)-7s %(name)s: %(message)s",
    "verbose": "%(asctime)s %(levelname)-7s %(name)s [%(process)d] %(message)s",
}
_LEVEL_COLORS = {
    logging.DEBUG: "\x1b[36m",
    logging.INFO: "\x1b[32m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}
_RESET = "\x1b[0m"
# Marks handlers installed here so a later call removes exactly these and nothing else.
_OWNED_ATTR = "_bai_owned"


def get_logger(component: str) -> logging.Logger:
    """Return the logger of one bai component, e.g. ``get_logger("agent.backends.local")``."""
    return logging.getLogger(f"{ROOT_LOGGER}.{component}" if component else ROOT_LOGGER)


class _ColorFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        color = _LEVEL_COLORS.get(record.levelno)
        return f"{color}{text}{_RESET}" if color else text


def _console_handler(stream: TextIO, colored: bool | None, fmt: LogFormat) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    use_color = stream.isatty() if colored is None else colored
    formatter_cls = _ColorFormatter if use_color else logging.Formatter
    handler.setFormatter(formatter_cls(_FORMATS[fmt]))
    return handler


def _file_handler(
    path: Path, filename: str, backup_count: int, rotation_size: int
) -> logging.Handler:
    path.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path / filename, maxBytes=rotation_size, backupCount=backup_count, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(_FORMATS["verbose"]))
    return handler


def setup_logging(
    *,
    level: str | int = "INFO",
    drivers: Sequence[str] = ("console",),
    pkg_levels: Mapping[str, str | int] | None = None,
    console_colored: bool | None = None,
    console_format: LogFormat = "verbose",
    console_stream: TextIO | None = None,
    file_path: Path = Path("./logs"),
    file_name: str = "bai.log",
    file_backup_count: int = 10,
    file_rotation_size: int = 10 * 1024 * 1024,
) -> None:
    """Install the configured drivers on the root logger.

    ``console_colored=None`` colors only when the stream is a terminal.  An
    unknown driver name raises :class:`ValueError` naming it: the config layer
    validates first, so reaching this is a programming error.
    """
    handlers: list[logging.Handler] = []
    for driver in drivers:
        if driver == "console":
            stream = console_stream if console_stream is not None else sys.stderr
            handlers.append(_console_handler(stream, console_colored, console_format))
        elif driver == "file":
            handlers.append(
                _file_handler(file_path, file_name, file_backup_count, file_rotation_size)
            )
        else:
            raise ValueError(f"unknown logging driver {driver!r}; known: console, file")

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWNED_ATTR, False)]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        setattr(handler, _OWNED_ATTR, True)
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(ROOT_LOGGER).setLevel(level)
    for name, pkg_level in (pkg_levels or {}).items():
        logging.getLogger(name or None).setLevel(pkg_level)


def setup_logging_from(config: LoggingConfig) -> None:
    """Install the drivers a daemon's validated ``[logging]`` section asks for."""
    setup_logging(
        level=config.level,
        drivers=config.drivers,
        pkg_levels=config.pkg_ns,
        console_colored=config.console.colored,
        console_format=config.console.format,
        file_path=config.file.path,
        file_name=config.file.filename,
        file_backup_count=config.file.backup_count,
        file_rotation_size=int(config.file.rotation_size),
    )
