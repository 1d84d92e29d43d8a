"""The manager's REST API (quart-trio on hypercorn).

Modules: :mod:`~.app` (``create_app``, ``serve_api``, the request gate),
:mod:`~.errors` (RFC 7807 problems), :mod:`~.auth` (keypair authentication,
roles, ``owner_access_key``, ``/auth``), :mod:`~.ratelimit`,
:mod:`~.version` (``GET /``, version negotiation, path prefixes,
``X-Method-Override``), :mod:`~.helpers` (context, input parsing, JSON
answers), and one module per route family (:mod:`~.config`,
:mod:`~.resource`).

A route module needs only::

    from bai.manager.api.auth import auth_required, current_auth, resolve_owner
    from bai.manager.api.errors import Conflict, NotFound
    from bai.manager.api.helpers import current_ctx, json_response, read_json

and its blueprint in ``app.BLUEPRINTS``.
"""
