"""Where the client connects and with which keypair.

:class:`APIConfig` holds everything a request needs besides its own content:
the manager's endpoint, the keypair that signs requests, the API version it
announces, and the defaults for session creation (domain, group).

:meth:`APIConfig.from_env` reads the same environment variables as the
official ``backend.ai-client``, so one ``source client.env`` (written by
``bai up``) configures both CLIs at once:

=============================== ===============================================
``BACKEND_ENDPOINT``            manager URL (default ``http://127.0.0.1:8081``)
``BACKEND_ENDPOINT_TYPE``       ``api`` (the only type bai speaks)
``BACKEND_ACCESS_KEY``          access key of the keypair
``BACKEND_SECRET_KEY``          secret key of the keypair
``BACKEND_DOMAIN``              domain for new sessions (default ``default``)
``BACKEND_GROUP``               group (project) for new sessions (``default``)
``BACKEND_VFOLDER_MOUNTS``      comma-separated vfolders mounted in every session
``BACKEND_SKIP_SSLCERT_VALIDATION`` ``yes``/``no`` (default ``no``)
``BACKEND_CONNECTION_TIMEOUT``  seconds to connect (default 10)
``BACKEND_READ_TIMEOUT``        seconds to wait for a response; 0 waits as long
                                as the server takes (the default)
=============================== ===============================================

Guarantees: every bad value raises :class:`ClientConfigError` (an
:class:`~bai.common.errors.InvalidValue`) naming the variable or field and the
value.  A missing keypair is not an error here, so ``bai config`` can show an
incomplete configuration; :attr:`APIConfig.has_credentials` tells whether
requests can be signed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final
from urllib.parse import urlsplit

from bai.common.auth import AuthError, body_is_signed, format_sign_method
from bai.common.errors import InvalidValue

__all__ = [
    "API_VERSION",
    "DEFAULT_ENDPOINT",
    "ENV_VARS",
    "APIConfig",
    "ClientConfigError",
]

#: The API version bai's client announces in ``X-BackendAI-Version`` (the spec's).
API_VERSION: Final = "v6.20220615"
DEFAULT_ENDPOINT: Final = "http://127.0.0.1:8081"

#: Field name -> environment variable, as the official client names them.
ENV_VARS: Final[Mapping[str, str]] = {
    "endpoint": "BACKEND_ENDPOINT",
    "endpoint_type": "BACKEND_ENDPOINT_TYPE",
    "access_key": "BACKEND_ACCESS_KEY",
    "secret_key": "BACKEND_SECRET_KEY",
    "domain": "BACKEND_DOMAIN",
    "group": "BACKEND_GROUP",
    "vfolder_mounts": "BACKEND_VFOLDER_MOUNTS",
    "skip_sslcert_validation": "BACKEND_SKIP_SSLCERT_VALIDATION",
    "connection_timeout": "BACKEND_CONNECTION_TIMEOUT",
    "read_timeout": "BACKEND_READ_TIMEOUT",
}

_TRUE: Final = frozenset({"y", "yes", "t", "true", "1", "on"})
_FALSE: Final = frozenset({"n", "no", "f", "false", "0", "off", ""})


class ClientConfigError(InvalidValue):
    """A client setting (argument or environment variable) was rejected."""


@dataclass(frozen=True, slots=True)
class APIConfig:
    """Connection settings of one API client; validated on construction.

    ``read_timeout`` of ``None`` waits for responses as long as the server
    takes: every server-side wait is bounded already (``maxWaitSeconds``, the
    execute long-poll), and SSE streams are open-ended by nature.
    """

    endpoint: str = DEFAULT_ENDPOINT
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    endpoint_type: str = "api"
    api_version: str = API_VERSION
    hash_type: str = "sha256"
    domain: str = "default"
    group: str = "default"
    vfolder_mounts: tuple[str, ...] = ()
    skip_sslcert_validation: bool = False
    connection_timeout: float = 10.0
    read_timeout: float | None = None
    user_agent: str = ""

    def __post_init__(self) -> None:
        endpoint = self.endpoint.strip().rstrip("/")
        if "," in endpoint:
            raise ClientConfigError(
                "must be one URL (bai does not rotate between several endpoints)",
                value=self.endpoint,
                field="endpoint",
            )
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientConfigError(
                "must be an absolute http:// or https:// URL",
                value=self.endpoint,
                field="endpoint",
            )
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ClientConfigError(
                "has an invalid port", value=self.endpoint, field="endpoint"
            ) from None
        if parts.query or parts.fragment:
            raise ClientConfigError(
                "must not carry a query or fragment", value=self.endpoint, field="endpoint"
            )
        object.__setattr__(self, "endpoint", endpoint)
        if self.endpoint_type != "api":
            raise ClientConfigError(
                'must be "api": bai signs requests with a keypair and has no console-server '
                "login mode",
                value=self.endpoint_type,
                field="endpoint_type",
            )
        try:
            body_is_signed(self.api_version)
        except AuthError:
            raise ClientConfigError(
                "must look like v6.20220615", value=self.api_version, field="api_version"
            ) from None
        try:
            format_sign_method(self.hash_type)
        except AuthError:
            raise ClientConfigError(
                "is not a supported hash (e.g. sha256)", value=self.hash_type, field="hash_type"
            ) from None
        for name in ("access_key", "secret_key"):
            value: str = getattr(self, name)
            if any(c.isspace() for c in value) or not value.isprintable():
                raise ClientConfigError(
                    "must be printable without spaces",
                    value=value if name == "access_key" else "<hidden>",
                    field=name,
                )
        if self.connection_timeout <= 0 or not math.isfinite(self.connection_timeout):
            raise ClientConfigError(
                "must be a positive number of seconds",
                value=self.connection_timeout,
                field="connection_timeout",
            )
        if self.read_timeout is not None and (
            self.read_timeout <= 0 or not math.isfinite(self.read_timeout)
        ):
            raise ClientConfigError(
                "must be a positive number of seconds, or None to wait as long as needed",
                value=self.read_timeout,
                field="read_timeout",
            )

    @property
    def has_credentials(self) -> bool:
        """Whether both keys are set, so requests can be signed."""
        return bool(self.access_key and self.secret_key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> APIConfig:
        """Build a config from ``BACKEND_*`` variables (default: ``os.environ``).

        Keyword *overrides* (field names) win over the environment.  Empty
        variables count as unset.  Raises :class:`ClientConfigError` naming the
        variable for a value that does not parse.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ClientConfigError("unknown setting", value=unknown[0], field=unknown[0])
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if raw:
                values[name] = _parse_env(name, var, raw)
        values.update(overrides)
        try:
            return cls(**values)
        except ClientConfigError as exc:
            source = ENV_VARS.get(exc.field or "")
            if source is not None and exc.field not in overrides and source in env:
                raise ClientConfigError(exc.problem, value=exc.value, field=source) from None
            raise

    def with_overrides(self, **changes: Any) -> APIConfig:
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _parse_env(name: str, var: str, raw: str) -> Any:
    if name == "vfolder_mounts":
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if name == "skip_sslcert_validation":
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ClientConfigError("must be yes or no", value=raw, field=var)
    if name in ("connection_timeout", "read_timeout"):
        try:
            seconds = float(raw)
        except ValueError:
            raise ClientConfigError("must be a number of seconds", value=raw, field=var) from None
        if name == "read_timeout" and seconds == 0:
            return None
        return seconds
    return raw
