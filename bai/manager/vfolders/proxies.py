"""The manager's client of the storage proxies (:mod:`bai.common.storage_api`).

Which proxies exist, where they answer and with which secret is the shared
configuration's business (:mod:`bai.manager.models.shared_config`)::

    volumes/proxies/NAME/manager_api   "http://10.0.0.5:6021"   (required)
    volumes/proxies/NAME/client_api    "http://10.0.0.5:6022"   (required)
    volumes/proxies/NAME/secret        "..."                    (required)
    volumes/proxies/NAME/ssl_verify    true                     (default true)
    volumes/default_host               "NAME:VOLUME"

A value may also sit higher up as a JSON object (``volumes/proxies/NAME`` =
``{"manager_api": ...}``); both spellings mean the same.
:class:`StorageProxies` reads these keys on every use (one small query), so a
proxy added, moved or removed applies to the next request without a restart.

Guarantees of :meth:`StorageProxies.call`:

* the request carries the proxy's secret in
  :data:`~bai.common.storage_api.AUTH_HEADER` and the body as
  ``msgspec.to_builtins`` of a contract struct;
* a 4xx of the proxy is raised as a :class:`StorageProxyError` with the same
  status, the same error name (the problem ``type`` ends with
  ``storage/NAME`` on both sides), its detail and its ``field`` (renamed to
  the caller's field name where the caller says so: ``relpaths[1]`` becomes
  ``files.1`` with ``fields={"relpaths": "files"}``), except the proxy's 401
  ``Unauthorized`` (the manager's secret is wrong: an operator's problem, not
  the user's), which is a 503;
* a proxy that is not configured is a 404 ``ProxyNotFound``; one that cannot
  be reached, does not answer in time or refuses the secret is a 503
  ``StorageProxyUnavailable``; one that answers a 5xx other than 501 or
  something that is not the contract's JSON is a 502 ``StorageProxyFailed``.
  So a route using it never answers a 500 for a proxy's failure.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import httpx
import msgspec
import trio

from bai.common.errors import BaiError, InvalidValue
from bai.common.storage_api import AUTH_HEADER, StorageErrorType, VolumeInfo
from bai.manager.db import Database
from bai.manager.models.shared_config import get_config_prefix

__all__ = [
    "CONFIG_PREFIX",
    "DEFAULT_TIMEOUT",
    "ProxyInfo",
    "StorageProxies",
    "StorageProxyError",
    "proxies_from_config",
    "split_host",
]

log = logging.getLogger(__name__)

#: The shared-configuration prefix every key this module reads lies under.
CONFIG_PREFIX: Final = "volumes"

#: The deadline of one call unless the caller gives another: a proxy answers its
#: manager-facing routes from local file-system metadata, so a minute is generous.
DEFAULT_TIMEOUT: Final = 60.0

#: How long connecting to a proxy may take before it counts as unreachable.
CONNECT_TIMEOUT: Final = 5.0

#: Proxy and volume names: what a shared-config key part and a volume name allow.
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: What a problem ``type`` of a relayed error starts with (then the error's name).
ERROR_TYPE_PREFIX: Final = "storage/"

_TITLES: Final = {
    502: "The storage proxy failed.",
    503: "The storage proxy is not available.",
}


def split_host(host: str, *, field: str = "host") -> tuple[str, str]:
    """``"PROXY:VOLUME"`` as ``(PROXY, VOLUME)``; raises :class:`InvalidValue` naming *field*.

    Both parts must be 1 to 64 characters of letters, digits, ``.``, ``_`` and
    ``-``, starting with a letter or a digit.
    """
    proxy, sep, volume = host.partition(":")
    if not sep:
        raise InvalidValue("a folder host is written PROXY:VOLUME", value=host, field=field)
    if not _NAME_RE.match(proxy) or not _NAME_RE.match(volume):
        raise InvalidValue(
            "a folder host's proxy and volume names are 1-64 letters, digits, '.', '_' or '-'",
            value=host,
            field=field,
        )
    return proxy, volume


class StorageProxyError(BaiError):
    """A storage proxy refused or failed a request; see the module docstring.

    The API answers it as an RFC 7807 problem with this instance's
    ``http_status``, ``error_type`` (``storage/NAME``), ``error_title``, the
    message as ``detail`` and ``field`` when the proxy named one; ``name`` is
    the bare error name (a :class:`StorageErrorType` value for a relayed
    error).  It is no ``ApiError``: this package sits below the API.
    """

    def __init__(
        self,
        status: int,
        name: str,
        detail: str,
        *,
        title: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.http_status = status
        self.error_type = ERROR_TYPE_PREFIX + name
        self.error_title = title or _TITLES.get(status, "Storage proxy error.")
        self.name = name
        self.detail = detail
        self.field = field

    @classmethod
    def unavailable(cls, detail: str) -> StorageProxyError:
        """503 ``StorageProxyUnavailable``."""
        return cls(503, "StorageProxyUnavailable", detail)

    @classmethod
    def failed(cls, detail: str) -> StorageProxyError:
        """502 ``StorageProxyFailed``: the proxy answered something outside the contract."""
        return cls(502, "StorageProxyFailed", detail)

    @classmethod
    def not_found(cls, proxy: str) -> StorageProxyError:
        """404 ``ProxyNotFound``: no proxy of that name is configured."""
        return cls(
            404,
            "ProxyNotFound",
            f"no storage proxy {proxy!r} is configured (volumes/proxies/{proxy})",
            title="No such storage proxy.",
        )


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """One configured proxy (its API addresses without a trailing ``/``)."""

    name: str
    manager_api: str
    client_api: str
    secret: str
    ssl_verify: bool


def _leaves(parts: tuple[str, ...], value: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, Mapping):
        for name, member in value.items():
            yield from _leaves((*parts, str(name)), member)
    else:
        yield parts, value


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    # etcd-era configurations store every value as a string.
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    return None


def _as_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return None
    return value.rstrip("/")


def proxies_from_config(
    items: Mapping[str, Any],
) -> tuple[dict[str, ProxyInfo], dict[str, str], str | None]:
    """The proxies the shared-config *items* (keys under ``volumes``) describe.

    Returns the usable proxies by name, the unusable ones by name with the
    reason (a missing or malformed key), and ``volumes/default_host`` when
    it is a non-empty string.  Pure: no I/O.
    """
    settings: dict[str, dict[str, Any]] = {}
    default_host: str | None = None
    for key, value in items.items():
        for parts, leaf in _leaves(tuple(key.split("/")), value):
            if parts == (CONFIG_PREFIX, "default_host"):
                default_host = leaf if isinstance(leaf, str) and leaf else None
            elif len(parts) == 4 and parts[:2] == (CONFIG_PREFIX, "proxies"):
                settings.setdefault(parts[2], {})[parts[3]] = leaf
    usable: dict[str, ProxyInfo] = {}
    broken: dict[str, str] = {}
    for name, keys in settings.items():
        where = f"{CONFIG_PREFIX}/proxies/{name}"
        manager_api = _as_url(keys.get("manager_api"))
        client_api = _as_url(keys.get("client_api"))
        secret = keys.get("secret")
        ssl_verify = _as_bool(keys.get("ssl_verify", True))
        if not _NAME_RE.match(name):
            broken[name] = f"{where}: not a valid proxy name"
        elif manager_api is None or client_api is None:
            broken[name] = f"{where}: manager_api and client_api must be http(s) URLs"
        elif not isinstance(secret, str) or not secret:
            broken[name] = f"{where}/secret must be a non-empty string"
        elif ssl_verify is None:
            broken[name] = f"{where}/ssl_verify must be true or false"
        else:
            usable[name] = ProxyInfo(name, manager_api, client_api, secret, ssl_verify)
    return usable, broken, default_host


_FIELD_HEAD_RE: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(.*)$", re.DOTALL)


def _renamed(raw: str, fields: Mapping[str, str]) -> str:
    """The proxy's field *raw* (``relpaths[1]``) as the caller names it (``files.1``).

    Only a field whose leading key *fields* renames is rewritten (its list
    indices then in the API's dotted notation); any other is kept as sent.
    """
    match = _FIELD_HEAD_RE.match(raw)
    if match is None or match.group(1) not in fields:
        return raw
    return fields[match.group(1)] + re.sub(r"\[(\d+)\]", r".\1", match.group(2))


def _relayed(proxy: str, response: httpx.Response, fields: Mapping[str, str]) -> StorageProxyError:
    """The error a 4xx or 5xx answer of *proxy* becomes (module docstring)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    problem_type = body.get("type")
    name = problem_type.rsplit("/", 1)[-1] if isinstance(problem_type, str) else ""
    detail = body.get("detail")
    detail = detail if isinstance(detail, str) and detail else f"HTTP {status}"
    if status == 401 and name != StorageErrorType.INVALID_TOKEN:
        log.error("storage proxy %s refused the manager's secret: %s", proxy, detail)
        return StorageProxyError.unavailable(
            f"the storage proxy {proxy!r} refused the manager's secret "
            f"(check {CONFIG_PREFIX}/proxies/{proxy}/secret)"
        )
    if 400 <= status < 500 or status == 501:
        if name not in StorageErrorType.__members__.values():
            # A 4xx without the contract's body (a front proxy, a wrong URL): keep the status.
            name = "StorageProxyRefused"
        raw_field = body.get("field")
        field = _renamed(raw_field, fields) if isinstance(raw_field, str) else None
        title = body.get("title")
        return StorageProxyError(
            status,
            name,
            detail,
            title=title if isinstance(title, str) and title else None,
            field=field,
        )
    log.warning("storage proxy %s answered %d: %s", proxy, status, detail)
    return StorageProxyError.failed(f"the storage proxy {proxy!r} answered {status}: {detail}")


class StorageProxies:
    """Calls the storage proxies of the shared configuration; see the module docstring.

    It holds one ``httpx.AsyncClient`` per TLS-verification setting (httpx
    fixes verification per client; at most two), created on first use, and
    :meth:`aclose` closes them.  It is safe to use from many tasks at once.
    """

    def __init__(self, db: Database, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._db = db
        self._transport = transport
        self._clients: dict[bool, httpx.AsyncClient] = {}
        self._closed = False

    async def _config(self) -> tuple[dict[str, ProxyInfo], dict[str, str], str | None]:
        async with self._db.begin_readonly() as conn:
            items = await get_config_prefix(conn, CONFIG_PREFIX)
        return proxies_from_config(items)

    async def proxy(self, name: str) -> ProxyInfo:
        """The configured proxy *name*; 404 when unknown, 503 when its keys are unusable."""
        usable, broken, _ = await self._config()
        info = usable.get(name)
        if info is not None:
            return info
        if name in broken:
            raise StorageProxyError.unavailable(
                f"the storage proxy {name!r} is misconfigured: {broken[name]}"
            )
        raise StorageProxyError.not_found(name)

    async def names(self) -> list[str]:
        """The names of the usable proxies, sorted."""
        usable, _, _ = await self._config()
        return sorted(usable)

    def _client(self, verify: bool) -> httpx.AsyncClient:
        if self._closed:
            raise StorageProxyError.unavailable("the manager is shutting down")
        client = self._clients.get(verify)
        if client is None:
            client = httpx.AsyncClient(
                verify=verify,
                transport=self._transport,
                timeout=httpx.Timeout(DEFAULT_TIMEOUT, connect=CONNECT_TIMEOUT),
                follow_redirects=False,
            )
            self._clients[verify] = client
        return client

    async def call(
        self,
        proxy: str,
        route: str,
        body: msgspec.Struct | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - a per-request HTTP deadline
        fields: Mapping[str, str] | None = None,
    ) -> Any:
        """Call manager-facing *route* (``/folder/create``...) of *proxy*; return its JSON reply.

        ``GET`` without *body*, ``POST`` with it.  A 204 answers ``None``.
        *fields* renames the proxy's body keys to the caller's (``{"relpath":
        "path"}``) in a relayed error's ``field``.  Raises
        :class:`StorageProxyError` (module docstring).
        """
        info = await self.proxy(proxy)
        url = info.manager_api + "/" + route.lstrip("/")
        headers = {AUTH_HEADER: info.secret}
        client = self._client(info.ssl_verify)
        request_timeout = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        try:
            if body is None:
                response = await client.get(url, headers=headers, timeout=request_timeout)
            else:
                response = await client.post(
                    url,
                    headers=headers,
                    content=msgspec.json.encode(msgspec.to_builtins(body)),
                    timeout=request_timeout,
                )
        except httpx.TimeoutException:
            raise StorageProxyError.unavailable(
                f"the storage proxy {proxy!r} did not answer {route} in time"
            ) from None
        except httpx.TransportError as exc:
            raise StorageProxyError.unavailable(
                f"the storage proxy {proxy!r} cannot be reached at {info.manager_api}: {exc}"
            ) from None
        if response.status_code >= 400:
            raise _relayed(proxy, response, fields or {})
        if response.status_code == 204 or not response.content:
            return None
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise StorageProxyError.failed(
                f"the storage proxy {proxy!r} answered {route} with something that is not JSON"
            ) from None

    async def volumes(self, proxy: str) -> list[VolumeInfo]:
        """The volumes *proxy* serves (its ``GET /volumes``)."""
        reply = await self.call(proxy, "/volumes")
        volumes = reply.get("volumes") if isinstance(reply, dict) else None
        if not isinstance(volumes, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in volumes
        ):
            raise StorageProxyError.failed(f"the storage proxy {proxy!r} listed its volumes badly")
        return cast(list[VolumeInfo], volumes)

    async def all_volumes(self) -> dict[str, list[VolumeInfo] | StorageProxyError]:
        """Every usable proxy's volumes, asked concurrently; a failed proxy maps to its error."""
        names = await self.names()
        out: dict[str, list[VolumeInfo] | StorageProxyError] = {}

        async def ask(name: str) -> None:
            try:
                out[name] = await self.volumes(name)
            except StorageProxyError as exc:
                out[name] = exc

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(ask, name)
        return {name: out[name] for name in names}

    async def hosts(self) -> list[str]:
        """``PROXY:VOLUME`` of every volume of every usable proxy, sorted.

        A proxy that cannot be asked right now is left out (and logged), so
        one proxy down does not hide the others' volumes.
        """
        hosts: list[str] = []
        for name, volumes in (await self.all_volumes()).items():
            if isinstance(volumes, StorageProxyError):
                log.warning("leaving out the volumes of storage proxy %s: %s", name, volumes)
                continue
            hosts.extend(f"{name}:{volume['name']}" for volume in volumes)
        return sorted(hosts)

    async def default_host(self) -> str | None:
        """``volumes/default_host``, or ``None`` when it is not set."""
        _, _, default = await self._config()
        return default

    async def client_url(self, proxy: str, path: str) -> str:
        """The URL of *path* (``/upload``, ``/download``) on *proxy*'s client-facing API."""
        info = await self.proxy(proxy)
        return info.client_api + "/" + path.lstrip("/")

    async def aclose(self) -> None:
        """Close the HTTP clients; a later call answers 503."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
