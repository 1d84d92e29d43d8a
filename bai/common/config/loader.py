"""Finding, reading and validating a daemon's TOML file into its config struct."""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import msgspec

from bai.common.config.blame import Blame, translate, walk_problems
from bai.common.config.env import apply_env
from bai.common.config.errors import ConfigError
from bai.common.config.schema import DaemonConfig, dec_hook

__all__ = [
    "MAX_CONFIG_BYTES",
    "LoadedConfig",
    "find_config_file",
    "load_config",
    "parse_config",
    "search_paths",
]

#: Larger config files are rejected unread; real ones are a few KiB.
MAX_CONFIG_BYTES: Final = 1024 * 1024

T = TypeVar("T", bound=DaemonConfig)


@dataclass(frozen=True, slots=True)
class LoadedConfig(Generic[T]):
    """A validated config and where it came from.

    ``path`` is the file used, or ``None`` when no file was found and the
    defaults apply; ``env_overrides`` lists the environment variables applied.
    """

    config: T
    path: Path | None
    env_overrides: tuple[str, ...]

    def describe(self) -> str:
        """One line for the start-up log: which file, which overrides."""
        name = type(self.config).FILE_NAME
        text = f"{name}: {self.path}" if self.path else f"{name}: not found, using defaults"
        if self.env_overrides:
            text += f" (overridden by {', '.join(self.env_overrides)})"
        return text


def search_paths() -> tuple[Path, ...]:
    """The folders searched for config files, in order: ``./``, ``~/.config/bai/``, ``/etc/bai/``.

    Computed on every call, so a changed working directory or ``HOME`` is honoured.
    A working directory that no longer exists, or a user without a home, is
    left out rather than failing the search.
    """
    folders: list[Path] = []
    with contextlib.suppress(OSError):
        folders.append(Path.cwd())
    with contextlib.suppress(RuntimeError):
        folders.append(Path.home() / ".config" / "bai")
    folders.append(Path("/etc/bai"))
    return tuple(folders)


def find_config_file(file_name: str, folders: Sequence[Path] | None = None) -> Path | None:
    """Return the first ``folder/file_name`` that exists, or ``None``.

    *folders* defaults to :func:`search_paths`.  A path that exists but cannot
    be read is still returned, so the loader reports it instead of silently
    falling through to a less specific file.
    """
    for folder in search_paths() if folders is None else folders:
        candidate = folder / file_name
        if candidate.exists():
            return candidate
    return None


def load_config(
    kind: type[T],
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    folders: Sequence[Path] | None = None,
) -> LoadedConfig[T]:
    """Load *kind* from *path* (or the first file found in *folders*) plus *env*.

    *env* defaults to ``os.environ``; *folders* to :func:`search_paths`.  An
    explicit *path* that does not exist is an error; a search that finds
    nothing gives the defaults.  Raises :class:`ConfigError` for every problem.
    """
    file_path = Path(path) if path is not None else find_config_file(kind.FILE_NAME, folders)
    data = b"" if file_path is None else _read_limited(file_path)
    source = str(file_path) if file_path is not None else f"default {kind.FILE_NAME}"
    config, applied = _build(kind, data, source=source, env=os.environ if env is None else env)
    return LoadedConfig(config=config, path=file_path, env_overrides=applied)


def parse_config(
    kind: type[T],
    data: str | bytes,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
) -> T:
    """Validate TOML *data* as *kind*; *env* (default: none) overrides keys.

    Raises :class:`ConfigError` naming *source*.
    """
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", source=source)
    config, _ = _build(kind, raw, source=source, env=env or {})
    return config


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file: {exc.strerror or exc}", source=str(path)
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {MAX_CONFIG_BYTES} bytes", source=str(path))
    return data


def _build(
    kind: type[T], data: bytes, *, source: str, env: Mapping[str, str]
) -> tuple[T, tuple[str, ...]]:
    raw = _parse_toml(data, source)
    overrides = apply_env(kind, raw, env, source)
    blame = Blame(source, overrides)
    try:
        config = msgspec.convert(raw, type=kind, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise translate(kind, raw, exc, blame) from None
    first = next(walk_problems(config, ""), None)
    if first is not None:
        key, problem, value = first
        raise ConfigError(problem, source=blame.source_of(key), key=key, value=value)
    return config, tuple(overrides)


def _parse_toml(data: bytes, source: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", source=source, line=line
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        if found is None:
            raise ConfigError(f"TOML syntax error: {message}", source=source) from None
        line = int(found[1])
        lines = text.splitlines()
        offending = lines[line - 1] if line <= len(lines) else ""
        raise ConfigError(
            f"TOML syntax error: {message}", source=source, line=line, value=offending
        ) from None
    except RecursionError:
        raise ConfigError("TOML values are nested too deeply", source=source) from None
