"""The console server (webserver): Backend.AI's session mode, cookie logins relayed to the API.

Users log in with their email and password; the webserver trades them for
their keypair at the manager (``/auth/authorize``), keeps it in a login
session named by an ``HttpOnly`` cookie, and relays their requests under
``/func/`` to the manager API signed with that keypair.  The official client
speaks it with ``BACKEND_ENDPOINT_TYPE=session``; the Web UI will too.

It imports only :mod:`bai.common`: ``store.py`` (sessions and login
histories, in memory or in Redis), ``app.py`` (the routes and the relay),
``server.py`` (:class:`WebserverService`), ``daemon.py`` (``bai webserver``).
"""

from __future__ import annotations

from bai.webserver.server import WebserverService

__all__ = ["WebserverService"]
