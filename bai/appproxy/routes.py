"""The app proxy's route table and its access rules: pure, no I/O and no clock.

Every method that needs the time takes ``now``, seconds on a monotonic clock
(the server passes :func:`trio.current_time`), so the rules are tested with
plain numbers.

The words:

* A **registration** is what a manager posts (:class:`AppRegistration`).
  :meth:`RouteTable.register` answers a **registration token**: random,
  good for exactly one :meth:`RouteTable.claim` within
  :data:`~bai.common.appproxy_api.REGISTRATION_TTL` seconds, and only for the
  session and app it was registered for.  At most :data:`MAX_PENDING`
  tokens wait at once.
* A **route** (:class:`Route`) is one app of one session made reachable: a
  port of the range (port-mapping mode) or a host name under the wildcard
  domain (wildcard mode).  There is at most one route per (session, app);
  claiming again for the same pair gives the same route, its target and
  ``open_to_public`` taken from the newest registration.
* An **app token** (:meth:`RouteTable.issue_app_token`) rides in the browser
  URL (``?bai_app_token=``).  It is good for one exchange, for its route
  only, within :data:`APP_TOKEN_TTL` seconds; the exchange answers a redirect
  to the same URL without the token, setting a **cookie**: a random value
  the route remembers (at most :data:`MAX_COOKIES` per route, the oldest
  forgotten first), ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, ``Secure``
  behind https.  Cookies live as long as their route: dropping the route
  (idle, or its session's routes deleted) forgets them.
* :meth:`RouteTable.authorize` decides one request: forward it, redirect it
  (the token exchange), or deny it (401).  A route that is
  ``open_to_public`` forwards without a cookie.

In port-mapping mode browsers send a host's cookies to every port of it, so
each route's cookie has its own name (``bai_app_<port>``) and the proxy
removes every cookie of its own (:func:`strip_proxy_cookies`) before a
request reaches an app: no app, whoever runs it, sees a cookie that opens
another app.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import quote, unquote

from bai.common.appproxy_api import (
    ERROR_STATUS,
    REGISTRATION_TTL,
    TOKEN_QUERY,
    AppProtocol,
    AppProxyErrorType,
    AppRegistration,
)
from bai.common.errors import BaiError

__all__ = [
    "APP_TOKEN_TTL",
    "COOKIE_PREFIX",
    "MAX_APP_TOKENS",
    "MAX_COOKIES",
    "MAX_PENDING",
    "Decision",
    "Deny",
    "Forward",
    "Redirect",
    "Route",
    "RouteError",
    "RouteTable",
    "Target",
    "app_url",
    "cookie_values",
    "label_of_host",
    "set_cookie_header",
    "split_token",
    "strip_proxy_cookies",
]

#: Seconds an app token stays good for its one exchange.
APP_TOKEN_TTL: Final = 300.0
#: Most registration tokens waiting for their ``add`` at once.
MAX_PENDING: Final = 10_000
#: Most unexchanged app tokens one route keeps (the oldest is forgotten first).
MAX_APP_TOKENS: Final = 64
#: Most cookies one route remembers (the oldest is forgotten first).
MAX_COOKIES: Final = 1024
#: Every cookie the proxy sets starts with this.
COOKIE_PREFIX: Final = "bai_app"
#: Longest DNS label.
_MAX_LABEL: Final = 63

Mode = Literal["port", "wildcard"]


class RouteError(BaiError):
    """A refusal of the route table: one of the contract's error types and a message."""

    def __init__(self, kind: AppProxyErrorType, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail

    @property
    def status(self) -> int:
        """The HTTP status of this error's type."""
        return ERROR_STATUS[self.kind]


@dataclass(frozen=True, slots=True)
class Target:
    """Where an app answers, as the proxy reaches it."""

    host: str
    port: int


@dataclass(eq=False, slots=True)
class Route:
    """One app of one session, reachable through the proxy (module docstring).

    ``port`` is set in port-mapping mode, ``label`` (the first label of the
    host name) in wildcard mode.  ``active`` counts the connections the
    server relays for it; ``last_used`` is when it last saw traffic.
    """

    route_id: str
    session_id: uuid.UUID
    app: str
    protocol: AppProtocol
    target: Target
    open_to_public: bool
    user_id: uuid.UUID
    access_key: str
    port: int | None
    label: str | None
    cookie_name: str
    last_used: float
    active: int = 0
    app_tokens: dict[str, float] = field(default_factory=dict)
    cookies: dict[str, None] = field(default_factory=dict)

    @property
    def key(self) -> tuple[uuid.UUID, str]:
        return self.session_id, self.app

    def touch(self, now: float) -> None:
        """Record traffic at *now* (the route is not idle)."""
        self.last_used = now

    def has_cookie(self, values: list[str]) -> bool:
        """Whether any of *values* is a cookie this route set."""
        return any(value in self.cookies for value in values)


@dataclass(frozen=True, slots=True)
class Forward:
    """Relay the request to the app."""


@dataclass(frozen=True, slots=True)
class Redirect:
    """Answer a redirect to *location* (same origin), setting *set_cookie* when given."""

    location: str
    set_cookie: str | None


@dataclass(frozen=True, slots=True)
class Deny:
    """Answer 401 with *detail*."""

    detail: str


Decision = Forward | Redirect | Deny


@dataclass(frozen=True, slots=True)
class _Pending:
    registration: AppRegistration
    expires: float


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def split_token(target: str) -> tuple[str, list[str]]:
    """*target* (``/path?query``) without its ``bai_app_token`` parameters, and their values.

    The other parameters keep their order and their exact spelling; a target
    left with an empty query loses its ``?``.  The result is always a path on
    the same origin, safe as a redirect's ``Location``: an absolute-form
    target loses its scheme and host, and leading slashes and backslashes
    collapse to one ``/`` (``//evil.example/`` would leave the origin).
    """
    path, sep, query = target.partition("?")
    scheme, found, rest = path.partition("://")
    if found and scheme.lower() in ("http", "https"):
        path = rest.partition("/")[2]
    path = "/" + path.lstrip("/\\")
    if not sep:
        return path, []
    kept: list[str] = []
    tokens: list[str] = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if unquote(name.replace("+", " ")) == TOKEN_QUERY:
            tokens.append(unquote(value.replace("+", " ")))
        else:
            kept.append(part)
    rest = "&".join(kept)
    return (f"{path}?{rest}" if rest else path), tokens


def _cookie_pairs(header: str) -> Iterator[tuple[str, str, str]]:
    """``(name, value, raw piece)`` of each cookie in a ``Cookie`` header."""
    for piece in header.split(";"):
        raw = piece.strip()
        if not raw:
            continue
        name, _, value = raw.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        yield name.strip(), value, raw


def cookie_values(headers: list[str], name: str) -> list[str]:
    """The values of every cookie called *name* in the ``Cookie`` *headers*."""
    return [value for header in headers for n, value, _ in _cookie_pairs(header) if n == name]


def strip_proxy_cookies(header: str) -> str | None:
    """A ``Cookie`` header without the proxy's own cookies; ``None`` if nothing is left."""
    kept = [raw for name, _, raw in _cookie_pairs(header) if not name.startswith(COOKIE_PREFIX)]
    return "; ".join(kept) if kept else None


def set_cookie_header(name: str, value: str, *, secure: bool) -> str:
    """The ``Set-Cookie`` value of a route's cookie (module docstring)."""
    cookie = f"{name}={value}; Path=/; HttpOnly; SameSite=Lax"
    return cookie + "; Secure" if secure else cookie


def label_of_host(host: str, domain: str) -> str | None:
    """The first label of *host* (a ``Host`` header) when it is one label under *domain*.

    Case and a trailing dot do not matter, nor does a port; anything else
    (another domain, the domain itself, two labels) is ``None``.
    """
    name = host.strip().lower()
    if name.startswith("["):
        return None
    name = name.rpartition(":")[0] if ":" in name else name
    name = name.rstrip(".")
    suffix = "." + domain.lower().rstrip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if label and "." not in label else None


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def app_url(
    route: Route,
    *,
    scheme: str,
    host: str,
    port: int,
    token: str | None,
) -> str:
    """The URL a browser (or a TCP client) opens *route* at.

    *host* is the advertised host (port-mapping mode) or the wildcard domain
    (wildcard mode, the route's label goes in front); *token* is the app
    token to exchange, ``None`` for a ``tcp`` route.
    """
    if route.protocol == "tcp":
        return f"tcp://{_host_for_url(host)}:{port}"
    name = f"{route.label}.{host}" if route.label is not None else _host_for_url(host)
    query = f"?{TOKEN_QUERY}={quote(token, safe='')}" if token is not None else ""
    return f"{scheme}://{name}:{port}/{query}"


def _dns_label(app: str) -> str:
    out = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in app.lower())
    return out.strip("-") or "app"


class RouteTable:
    """Every registration token and route of one proxy; see the module docstring.

    *mode* fixes whether routes take ports of *port_range* or labels.
    """

    def __init__(self, *, mode: Mode, port_range: tuple[int, int] = (1, 0)) -> None:
        self.mode: Mode = mode
        self.port_range = port_range
        self._pending: dict[str, _Pending] = {}
        self._routes: dict[tuple[uuid.UUID, str], Route] = {}
        self._by_port: dict[int, Route] = {}
        self._by_label: dict[str, Route] = {}
        self._next_port = port_range[0]

    # ------------------------------------------------------------ registrations

    def register(self, registration: AppRegistration, now: float) -> str:
        """A new registration token for *registration* (module docstring).

        Raises :class:`RouteError` ``TooManyRegistrations`` when
        :data:`MAX_PENDING` unexpired tokens wait already.
        """
        self.prune(now)
        if len(self._pending) >= MAX_PENDING:
            raise RouteError(
                AppProxyErrorType.TOO_MANY_REGISTRATIONS,
                f"{MAX_PENDING} registrations wait for their add; try again in a few minutes",
            )
        token = _new_token()
        self._pending[token] = _Pending(registration, now + REGISTRATION_TTL)
        return token

    def claim(self, token: str, session_id: uuid.UUID, app: str, now: float) -> AppRegistration:
        """Spend registration *token* for *session_id*'s *app*; its registration.

        The token is gone afterwards, whatever the outcome.  Raises
        :class:`RouteError` ``InvalidToken`` for an unknown, spent or
        expired token, or one registered for another session or app.
        """
        pending = self._pending.pop(token, None)
        if pending is None:
            raise RouteError(
                AppProxyErrorType.INVALID_TOKEN,
                "unknown, already used or expired app-proxy token (each serves one add within "
                f"{REGISTRATION_TTL:.0f} s): ask the manager for a new one (start-service)",
            )
        if pending.expires <= now:
            raise RouteError(
                AppProxyErrorType.INVALID_TOKEN,
                f"the app-proxy token expired ({REGISTRATION_TTL:.0f} s after start-service): "
                "ask the manager for a new one",
            )
        registration = pending.registration
        if registration.session_id != session_id or registration.app != app:
            raise RouteError(
                AppProxyErrorType.INVALID_TOKEN,
                f"the app-proxy token was issued for app {registration.app!r} of session "
                f"{registration.session_id}, not for app {app!r} of session {session_id}",
            )
        return registration

    # ------------------------------------------------------------------ routes

    def get(self, session_id: uuid.UUID, app: str) -> Route | None:
        """The route of *session_id*'s *app*, if there is one."""
        return self._routes.get((session_id, app))

    def by_port(self, port: int) -> Route | None:
        """The route on *port* (port-mapping mode)."""
        return self._by_port.get(port)

    def by_label(self, label: str) -> Route | None:
        """The route whose host name starts with *label* (wildcard mode)."""
        return self._by_label.get(label.lower())

    def __iter__(self) -> Iterator[Route]:
        return iter(list(self._routes.values()))

    def __len__(self) -> int:
        return len(self._routes)

    def free_ports(self) -> list[int]:
        """The ports of the range no route holds, the one after the last taken first.

        Rotating keeps a port just released from being handed out again at
        once (a browser may still hold the old route's page).
        """
        low, high = self.port_range
        if low > high:
            return []
        start = self._next_port if low <= self._next_port <= high else low
        ordered = list(range(start, high + 1)) + list(range(low, start))
        return [port for port in ordered if port not in self._by_port]

    def label_for(self, session_id: uuid.UUID, app: str) -> str:
        """A free host label for *session_id*'s *app*: ``<first 8 hex>-<app>``.

        The app name is lowercased, every character other than a letter or a
        digit becomes ``-``.  When that label is taken by another route, the
        whole session id is used, then a hash of the app name is appended.
        Raises :class:`RouteError` ``Unsupported`` when no candidate fits a
        DNS label (63 characters).
        """
        short, whole = session_id.hex[:8], session_id.hex
        name = _dns_label(app)
        digest = hashlib.sha256(app.encode()).hexdigest()[:8]
        for candidate in (f"{short}-{name}", f"{whole}-{name}", f"{whole}-{name}-{digest}"):
            if len(candidate) > _MAX_LABEL:
                continue
            taken = self._by_label.get(candidate)
            if taken is None or taken.key == (session_id, app):
                return candidate
        raise RouteError(
            AppProxyErrorType.UNSUPPORTED,
            f"the app name {app!r} is too long for a host name under the wildcard domain",
        )

    def add(
        self,
        registration: AppRegistration,
        now: float,
        *,
        port: int | None = None,
        label: str | None = None,
    ) -> Route:
        """A new route for *registration* on *port* (port mode) or *label* (wildcard mode).

        The caller found *port* in :meth:`free_ports` (and bound it) or
        *label* with :meth:`label_for`.  Raises :class:`ValueError` when the
        pair has a route, or the port or label is taken: a caller's bug.
        """
        key = (registration.session_id, registration.app)
        if key in self._routes:
            raise ValueError(f"{key} has a route already")
        if (port is None) == (label is None):
            raise ValueError("a route takes a port or a label")
        if port is not None and port in self._by_port:
            raise ValueError(f"port {port} is taken")
        if label is not None and label in self._by_label:
            raise ValueError(f"label {label} is taken")
        route = Route(
            route_id=secrets.token_hex(8),
            session_id=registration.session_id,
            app=registration.app,
            protocol=registration.protocol,
            target=Target(registration.kernel_host.strip("[]"), registration.kernel_port),
            open_to_public=registration.open_to_public,
            user_id=registration.user_id,
            access_key=registration.access_key,
            port=port,
            label=label,
            cookie_name=f"{COOKIE_PREFIX}_{port}" if port is not None else COOKIE_PREFIX,
            last_used=now,
        )
        self._routes[key] = route
        if port is not None:
            self._by_port[port] = route
            low, high = self.port_range
            self._next_port = port + 1 if port < high else low
        if label is not None:
            self._by_label[label] = route
        return route

    def update(self, route: Route, registration: AppRegistration, now: float) -> None:
        """Point *route* at *registration*'s target, with its ``open_to_public``.

        A kernel may come back on another host port; the newest registration
        of a (session, app) pair is the one that holds.  The protocol of a
        route does not change (its listener serves one protocol).
        """
        if registration.protocol != route.protocol:
            raise RouteError(
                AppProxyErrorType.UNSUPPORTED,
                f"app {route.app!r} of session {route.session_id} is served as "
                f"{route.protocol}, not {registration.protocol}",
            )
        route.target = Target(registration.kernel_host.strip("[]"), registration.kernel_port)
        route.open_to_public = registration.open_to_public
        route.user_id = registration.user_id
        route.access_key = registration.access_key
        route.touch(now)

    def drop(self, route: Route) -> None:
        """Forget *route*, its tokens and its cookies; its port or label is free again."""
        if self._routes.get(route.key) is not route:
            return
        del self._routes[route.key]
        if route.port is not None:
            self._by_port.pop(route.port, None)
        if route.label is not None:
            self._by_label.pop(route.label, None)
        route.app_tokens.clear()
        route.cookies.clear()

    def drop_session(self, session_id: uuid.UUID) -> list[Route]:
        """Drop every route of *session_id*; the routes dropped."""
        dropped = [route for route in self._routes.values() if route.session_id == session_id]
        for route in dropped:
            self.drop(route)
        return dropped

    def idle(self, now: float, idle_timeout: float) -> list[Route]:
        """The routes with no connection and no traffic for *idle_timeout* seconds."""
        return [
            route
            for route in self._routes.values()
            if route.active == 0 and now - route.last_used >= idle_timeout
        ]

    def prune(self, now: float) -> None:
        """Forget expired registration tokens and app tokens."""
        for token in [t for t, p in self._pending.items() if p.expires <= now]:
            del self._pending[token]
        for route in self._routes.values():
            for token in [t for t, expires in route.app_tokens.items() if expires <= now]:
                del route.app_tokens[token]

    # ----------------------------------------------------------- browser access

    def issue_app_token(self, route: Route, now: float) -> str:
        """A new app token for *route* (module docstring)."""
        while len(route.app_tokens) >= MAX_APP_TOKENS:
            del route.app_tokens[next(iter(route.app_tokens))]
        token = _new_token()
        route.app_tokens[token] = now + APP_TOKEN_TTL
        return token

    def _exchange(self, route: Route, tokens: list[str], now: float) -> str | None:
        """Spend the first good app token of *tokens* for a new cookie value."""
        for token in tokens:
            expires = route.app_tokens.pop(token, None)
            if expires is not None and expires > now:
                while len(route.cookies) >= MAX_COOKIES:
                    del route.cookies[next(iter(route.cookies))]
                value = _new_token()
                route.cookies[value] = None
                return value
        return None

    def authorize(
        self,
        route: Route,
        target: str,
        cookie_headers: list[str],
        now: float,
        *,
        secure: bool,
    ) -> Decision:
        """What to do with a request for *target* on *route* (module docstring).

        * ``bai_app_token`` in the query: a good token is spent and answered
          with a redirect to the target without it, setting a new cookie; a
          bad one still redirects when the browser holds a good cookie (a
          reload of the first URL) or the route is public; else 401.
        * no token: forward when the route is public or a cookie is good;
          else 401.
        """
        clean, tokens = split_token(target)
        holds_cookie = route.has_cookie(cookie_values(cookie_headers, route.cookie_name))
        if tokens:
            value = self._exchange(route, tokens, now)
            if value is not None:
                cookie = set_cookie_header(route.cookie_name, value, secure=secure)
                return Redirect(clean, cookie)
            if holds_cookie or route.open_to_public:
                return Redirect(clean, None)
            return Deny(
                "the app token in this URL is unknown, already used or expired: "
                "open the app again to get a new URL"
            )
        if route.open_to_public or holds_cookie:
            return Forward()
        return Deny(
            "this app needs a login cookie: open it through the URL the app proxy "
            "gave (start-service), which sets one"
        )
