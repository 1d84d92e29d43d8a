"""``client.env``: the shell file that points both CLIs at a running ``bai up``.

:func:`write_client_env` writes it from an endpoint and a keypair (what
``bai up`` knows once the manager answers); ``source DATA_DIR/client.env``
then exports the official client's variable names (``BACKEND_ENDPOINT``,
``BACKEND_ACCESS_KEY``, ``BACKEND_SECRET_KEY``, ``BACKEND_ENDPOINT_TYPE=api``),
which ``bai`` reads too (see :mod:`bai.client.settings`).

``bai login`` keeps the keypair it signs in with in such a file too, at
:func:`login_env_path` (``$BAI_CLIENT_ENV``, else
``$XDG_CONFIG_HOME/bai/client.env``, else ``~/.config/bai/client.env``);
``bai`` falls back to it when no keypair is set in the environment.

Guarantees: values are shell-quoted, so any text survives ``source``; the
file is written atomically (a reader never sees half of it) and is readable by
its owner only, since it holds a secret key.  :func:`read_client_env` parses
what :func:`write_client_env` writes (and simple ``export NAME=value`` lines),
and both functions validate through :class:`~bai.client.settings.APIConfig`.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from bai.client.settings import ENV_VARS, APIConfig, ClientConfigError

__all__ = [
    "CLIENT_ENV_NAME",
    "LOGIN_ENV_VAR",
    "login_env_path",
    "read_client_env",
    "render_client_env",
    "write_client_env",
]

CLIENT_ENV_NAME: Final = "client.env"
#: Names the file ``bai login`` writes, instead of the default place.
LOGIN_ENV_VAR: Final = "BAI_CLIENT_ENV"
_EXPORTED: Final = ("endpoint", "endpoint_type", "access_key", "secret_key")


def render_client_env(endpoint: str, access_key: str, secret_key: str) -> str:
    """The text of a ``client.env`` for *endpoint* and the keypair.

    Raises :class:`~bai.client.settings.ClientConfigError` if the endpoint or
    keys are unusable.
    """
    config = APIConfig(endpoint=endpoint, access_key=access_key, secret_key=secret_key)
    if not config.has_credentials:
        raise ClientConfigError("both keys are required", value=access_key, field="access_key")
    lines = ["# Settings for bai and the official backend.ai client: source this file."]
    for name in _EXPORTED:
        lines.append(f"export {ENV_VARS[name]}={shlex.quote(str(getattr(config, name)))}")
    return "\n".join(lines) + "\n"


def write_client_env(
    data_dir: str | os.PathLike[str],
    endpoint: str,
    access_key: str,
    secret_key: str,
    *,
    name: str = CLIENT_ENV_NAME,
) -> Path:
    """Write ``DATA_DIR/client.env`` (or *name*; mode 0600, atomically) and return its path.

    Blocking file I/O: from Trio, call it through ``trio.to_thread.run_sync``.
    """
    text = render_client_env(endpoint, access_key, secret_key)
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def login_env_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``bai login`` keeps its keypair (see the module docs)."""
    env = os.environ if environ is None else environ
    explicit = env.get(LOGIN_ENV_VAR, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    config_home = env.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config_home) if config_home else Path("~/.config").expanduser()
    return base / "bai" / CLIENT_ENV_NAME


def read_client_env(path: str | os.PathLike[str]) -> APIConfig:
    """Parse a ``client.env`` into an :class:`~bai.client.settings.APIConfig`.

    Only ``[export] NAME=value`` lines (shell-quoted values), comments and
    blank lines are understood; anything else raises ClientConfigError
    naming the line.
    """
    env: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            words = shlex.split(stripped)
        except ValueError as exc:
            raise ClientConfigError(str(exc), value=line, field=f"{path}:{number}") from None
        if words and words[0] == "export":
            words = words[1:]
        if len(words) != 1 or "=" not in words[0]:
            raise ClientConfigError("is not NAME=value", value=line, field=f"{path}:{number}")
        name, _, value = words[0].partition("=")
        env[name] = value
    return APIConfig.from_env(env)
