"""The app proxy: a session's web apps (and TCP services) put in front of browsers.

The contract (routes, bodies, the secret header and the shared-config key)
is :mod:`bai.common.appproxy_api`.  The package's modules:

* :mod:`bai.appproxy.routes` (pure): the route table, registration and app
  tokens, cookies and the access decision of each request;
* :mod:`bai.appproxy.proxy`: the relay of one connection (HTTP/1.1 with
  streaming bodies, keep-alive and WebSocket upgrades, or raw TCP);
* :mod:`bai.appproxy.api`: the HTTP API managers and users call;
* :mod:`bai.appproxy.server`: :class:`~bai.appproxy.server.AppProxyService`,
  the API, the app listeners and the reaper of idle routes;
* :mod:`bai.appproxy.daemon`: ``bai app-proxy --config app-proxy.toml``.

How a browser reaches an app::

    manager  POST /v2/conf  (X-BackendAI-AppProxy-Secret)  -> {"token": T}
    client   GET  /v2/proxy/T/SESSION/add?app=NAME          -> {"code": 200, "url": U}
    browser  GET  U  (?bai_app_token=X)  -> 302 to U without the token, Set-Cookie
    browser  GET  ... with the cookie     -> relayed to the app in the kernel

Deployment
==========

``bai up`` runs one app proxy in its process (port-mapping mode, ports
10205-10300 on the API's host, a secret new at each start) and announces
it: the resource group's ``wsproxy_addr`` column holds the proxy's API URL
and the shared-config key ``appproxy/secret`` its secret.

In the distributed mode run ``bai app-proxy --config app-proxy.toml`` (one
per resource group, or one for several) and announce it yourself, with
the same secret as ``[appproxy] secret`` of its config::

    bai manager --config manager.toml config put appproxy/secret 'THE-SECRET'
    UPDATE scaling_groups SET wsproxy_addr = 'http://proxy-host:10200'
        WHERE name = 'default';

Every app proxy of a cluster shares the one ``appproxy/secret``.  The API
(``service-addr``) must be reachable by managers and users' clients, the
app listeners (``bind-host`` with ``port-range``, or ``wildcard-port``) by
browsers, and the kernels' service ports by the proxy.  In wildcard mode
point ``*.<wildcard-domain>`` at the proxy in DNS.  ``tcp`` apps get a raw
TCP port that the proxy does not authenticate: the service itself must
(``sshd`` does).
"""
