"""The manager's HTTP API: the app factory, the request gate, and the server task.

:func:`create_app` builds the QuartTrio app for a
:class:`~bai.manager.context.ManagerContext` (handlers reach it with
:func:`~bai.manager.api.helpers.current_ctx`); :func:`serve_api` serves it
with hypercorn's Trio worker as a service of the manager's nursery.

Every request passes the gate before its handler runs, in this order:

1. ``X-Method-Override`` and ``X-BackendAI-Version`` are checked (400);
2. the caller is authenticated when the route is not :func:`public`, or
   whenever it sends ``Authorization`` (400/401) -- unknown routes skip this
   and end as 404/405; keypair look-ups are reused for ``auth_cache_ttl``
   seconds (:class:`~bai.manager.api.auth.KeypairCache`);
3. the request is counted against its rate limit: the access key's
   ``rate_limit`` for authenticated callers, :data:`PUBLIC_RATE_LIMIT` per
   client IP for everyone else, including requests refused in steps 1-2
   (429 with ``Retry-After`` once exceeded);
4. the caller's role is checked against the route's level (403), and an
   ``owner_access_key`` query parameter is resolved (403/400);
5. while the manager is frozen, the routes it refuses then answer 503
   (:mod:`bai.manager.api.manager_status`).

Every answer of a counted request carries ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Window``; every failure is an
RFC 7807 problem (:mod:`bai.manager.api.errors`).  If the rate limiter's
store (Redis) fails, requests are served without limits and a warning is
logged: an outage of the limiter must not take the API down.

Adding routes: write a module with a ``quart.Blueprint``, mark each handler
with a level from :mod:`bai.manager.api.auth` (unmarked handlers need an
authenticated user), and add the blueprint to :data:`BLUEPRINTS`.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Final

import trio
from hypercorn.trio import serve
from quart import Blueprint, Response, current_app, g
from quart.globals import request_ctx
from quart_trio import QuartTrio

from bai.common.errors import BaiError
from bai.common.hypercorn_setup import hypercorn_config
from bai.manager.api import (
    accounts,
    acl,
    auth,
    dotfiles,
    errorlogs,
    events,
    manager_status,
    metrics,
    resource,
    scaling_groups,
    scheduler,
    session,
    shared_config,
    stream,
    template,
    version,
    vfolder,
    watcher,
)
from bai.manager.api.errors import RateLimitExceeded, register_error_handlers
from bai.manager.api.gql import blueprint as gql_blueprint
from bai.manager.api.helpers import current_ctx
from bai.manager.api.loginblock import LoginBlocker, MemoryLoginBlocker, open_login_blocker
from bai.manager.api.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RateLimiterUnavailable,
    open_rate_limiter,
)
from bai.manager.context import ManagerContext

__all__ = [
    "BLUEPRINTS",
    "MAX_CONTENT_LENGTH",
    "PUBLIC_RATE_LIMIT",
    "create_app",
    "serve_api",
]

log = logging.getLogger(__name__)

#: Requests per rate-limit window and client IP address for calls without credentials.
PUBLIC_RATE_LIMIT: Final = 3000
#: The largest request body the server reads (uploads: 20 files of 1 MiB plus framing).
MAX_CONTENT_LENGTH: Final = 24 * 1024 * 1024

#: Every route module's blueprint, registered by :func:`create_app`.
BLUEPRINTS: Final[tuple[Blueprint, ...]] = (
    version.blueprint,
    auth.blueprint,
    accounts.blueprint,
    acl.blueprint,
    manager_status.blueprint,
    errorlogs.blueprint,
    scaling_groups.blueprint,
    dotfiles.blueprint,
    shared_config.blueprint,
    resource.blueprint,
    session.blueprint,
    template.blueprint,
    events.blueprint,
    stream.blueprint,
    scheduler.blueprint,
    vfolder.blueprint,
    metrics.blueprint,
    watcher.blueprint,
    gql_blueprint,
)


class _Gate:
    def __init__(self, limiter: RateLimiter, public_limit: int, auth_cache_ttl: float) -> None:
        self.limiter = limiter
        self.public_limit = public_limit
        self.keypairs = auth.KeypairCache(auth_cache_ttl)
        self.status = manager_status.StatusCache()

    async def count(self, key: str, limit: int) -> None:
        try:
            decision = await self.limiter.hit(key, limit)
        except RateLimiterUnavailable as exc:
            log.warning("serving without rate limits: %s", exc)
            return
        g.bai_ratelimit = decision
        if not decision.allowed:
            raise RateLimitExceeded(
                f"at most {decision.limit} requests per {int(decision.window)} s",
                headers=decision.headers(),
            )

    async def before(self) -> None:
        # The request itself, not the context-local proxy: this runs on every request.
        req = request_ctx.request
        client = req.scope.get("client")
        ip_key = f"ip:{client[0] if client else 'unknown'}"
        authenticated: auth.AuthContext | None = None
        level = auth.Access.PUBLIC
        try:
            version.check_method_override()
            version.negotiate_version()
            if req.routing_exception is None:
                level = auth.access_of(current_app.view_functions.get(req.endpoint or ""))
                headers = req.headers
                if level > auth.Access.PUBLIC or "Authorization" in headers:
                    authenticated = await auth.authenticate(
                        current_ctx().db,
                        self.keypairs,
                        method=req.method,
                        raw_target=version.raw_target(),
                        headers=headers,
                    )
        except BaiError:
            await self.count(ip_key, self.public_limit)
            raise
        if authenticated is None:
            await self.count(ip_key, self.public_limit)
            return
        await self.count(f"ak:{authenticated.access_key}", authenticated.rate_limit)
        g.bai_auth = authenticated
        auth.require_access(authenticated, level)
        if req.query_string:
            owner = req.args.get("owner_access_key")
            if owner is not None:
                g.bai_auth = await auth.resolve_owner(authenticated, owner)
        if req.url_rule is not None:
            await self.status.refuse_if_frozen(current_ctx().db, req.method, req.url_rule.rule)

    async def after(self, response: Response) -> Response:
        decision = g.get("bai_ratelimit")
        if decision is not None:
            for name, value in decision.headers().items():
                response.headers[name] = value
        return response


def create_app(
    ctx: ManagerContext,
    *,
    rate_limiter: RateLimiter | None = None,
    public_rate_limit: int = PUBLIC_RATE_LIMIT,
    auth_cache_ttl: float = auth.AUTH_CACHE_TTL,
    login_blocker: LoginBlocker | None = None,
) -> QuartTrio:
    """The API app of *ctx*, limiting rates with *rate_limiter* (default: in memory),
    reusing keypair look-ups for *auth_cache_ttl* seconds, and blocking password
    logins with *login_blocker* (default: in memory, by ``[manager]``'s settings)."""
    app = QuartTrio(__name__, static_folder=None)
    app.bai = ctx  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.url_map.strict_slashes = False
    # A redirect to the merged path is an HTML answer a signed request cannot follow
    # (the signature covers the path): ``/session//files`` is an unknown route instead.
    app.url_map.merge_slashes = False
    gate = _Gate(rate_limiter or MemoryRateLimiter(), public_rate_limit, auth_cache_ttl)
    if login_blocker is None:
        login_blocker = MemoryLoginBlocker(
            block_time=float(ctx.config.manager.login_block_time),
            allowed=ctx.config.manager.login_allowed_fail_count,
        )
    app.extensions["bai_login_blocker"] = login_blocker
    app.extensions["bai_manager_status"] = gate.status
    app.before_request(gate.before)
    app.after_request(gate.after)
    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.asgi_app = version.FrontDoor(app.asgi_app)  # type: ignore[method-assign]
    return app


async def serve_api(
    ctx: ManagerContext,
    *,
    rate_limiter: RateLimiter | None = None,
    public_rate_limit: int = PUBLIC_RATE_LIMIT,
    auth_cache_ttl: float = auth.AUTH_CACHE_TTL,
    shutdown: trio.Event | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on ``ctx.config.manager.service_addr`` until cancelled or *shutdown*.

    Reports the bound base URLs (``["http://127.0.0.1:41234"]``; port 0 binds
    a free port) with ``task_status.started``.  *public_rate_limit* and
    *auth_cache_ttl* are as for :func:`create_app`.  Without *rate_limiter*, rate
    limits and login blocks live in Redis when ``[redis] type = "redis"``
    (startup fails if it does not answer), else in memory.  After *shutdown* is set the server
    stops accepting, lets running requests finish for up to
    *graceful_timeout* seconds, and returns; cancellation stops it at once.
    """
    manager = ctx.config.manager
    hyper = hypercorn_config(
        manager.service_addr,
        ssl_enabled=manager.ssl_enabled,
        certfile=manager.ssl_cert,
        keyfile=manager.ssl_privkey,
        logger="bai.manager.api.server",
        graceful_timeout=graceful_timeout,
    )
    async with AsyncExitStack() as stack:
        if rate_limiter is None:
            rate_limiter = await stack.enter_async_context(open_rate_limiter(ctx.config.redis))
        login_blocker = await stack.enter_async_context(
            open_login_blocker(
                ctx.config.redis,
                block_time=float(manager.login_block_time),
                allowed=manager.login_allowed_fail_count,
            )
        )
        app = create_app(
            ctx,
            rate_limiter=rate_limiter,
            public_rate_limit=public_rate_limit,
            auth_cache_ttl=auth_cache_ttl,
            login_blocker=login_blocker,
        )
        await serve(
            app,
            hyper,
            shutdown_trigger=shutdown.wait if shutdown is not None else None,
            task_status=task_status,
        )
