"""The app proxy's route table and access rules (:mod:`bai.appproxy.routes`), with plain clocks."""

from __future__ import annotations

import uuid

import pytest

from bai.appproxy.routes import (
    APP_TOKEN_TTL,
    MAX_APP_TOKENS,
    MAX_COOKIES,
    Deny,
    Forward,
    Redirect,
    Route,
    RouteError,
    RouteTable,
    app_url,
    cookie_values,
    label_of_host,
    set_cookie_header,
    split_token,
    strip_proxy_cookies,
)
from bai.common.appproxy_api import REGISTRATION_TTL, AppProxyErrorType, AppRegistration

SESSION = uuid.UUID("0123abcd-0000-4000-8000-000000000001")


def registration(**fields: object) -> AppRegistration:
    values: dict[str, object] = {
        "session_id": SESSION,
        "kernel_host": "10.0.0.2",
        "kernel_port": 30001,
        "app": "jupyter",
        "protocol": "http",
        "user_id": uuid.UUID(int=7),
        "access_key": "AKIA",
        "open_to_public": False,
    }
    values.update(fields)
    return AppRegistration(**values)  # type: ignore[arg-type]


def port_table(low: int = 10000, high: int = 10009) -> RouteTable:
    return RouteTable(mode="port", port_range=(low, high))


def route_on(table: RouteTable, port: int = 10000, **fields: object) -> Route:
    return table.add(registration(**fields), 0.0, port=port)


# ------------------------------------------------------------- registrations


def test_a_registration_token_is_claimed_once() -> None:
    table = port_table()
    token = table.register(registration(), now=0.0)
    assert table.claim(token, SESSION, "jupyter", now=1.0).kernel_port == 30001
    with pytest.raises(RouteError) as again:
        table.claim(token, SESSION, "jupyter", now=2.0)
    assert again.value.kind is AppProxyErrorType.INVALID_TOKEN and again.value.status == 401


def test_a_registration_token_expires() -> None:
    table = port_table()
    token = table.register(registration(), now=0.0)
    with pytest.raises(RouteError, match="expired"):
        table.claim(token, SESSION, "jupyter", now=REGISTRATION_TTL)


def test_a_registration_token_serves_its_own_session_and_app_only() -> None:
    table = port_table()
    for session_id, app in ((uuid.uuid4(), "jupyter"), (SESSION, "ttyd")):
        token = table.register(registration(), now=0.0)
        with pytest.raises(RouteError, match="was issued for app 'jupyter'"):
            table.claim(token, session_id, app, now=1.0)
        # Spent by the failed attempt.
        with pytest.raises(RouteError, match="unknown"):
            table.claim(token, SESSION, "jupyter", now=1.0)


def test_expired_registrations_are_pruned() -> None:
    table = port_table()
    table.register(registration(), now=0.0)
    live = table.register(registration(), now=200.0)
    table.prune(now=REGISTRATION_TTL + 1)
    assert len(table._pending) == 1
    assert table.claim(live, SESSION, "jupyter", now=REGISTRATION_TTL + 1)


def test_too_many_pending_registrations_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bai.appproxy.routes.MAX_PENDING", 3)
    table = port_table()
    for _ in range(3):
        table.register(registration(), now=0.0)
    with pytest.raises(RouteError) as full:
        table.register(registration(), now=1.0)
    assert full.value.kind is AppProxyErrorType.TOO_MANY_REGISTRATIONS
    # Expired ones make room.
    table.register(registration(), now=REGISTRATION_TTL + 1)


# ------------------------------------------------------------------- routes


def test_ports_rotate_through_the_range_skipping_taken_ones() -> None:
    table = port_table(10000, 10003)
    assert table.free_ports() == [10000, 10001, 10002, 10003]
    first = route_on(table, 10000, app="a")
    assert table.free_ports() == [10001, 10002, 10003]
    route_on(table, 10002, app="b")
    assert table.free_ports() == [10003, 10001]
    table.drop(first)
    assert table.free_ports() == [10003, 10000, 10001]
    assert table.by_port(10002) is not None and table.by_port(10000) is None


def test_one_route_per_session_and_app() -> None:
    table = port_table()
    route = route_on(table)
    assert table.get(SESSION, "jupyter") is route
    with pytest.raises(ValueError, match="has a route"):
        table.add(registration(), 0.0, port=10001)
    with pytest.raises(ValueError, match="taken"):
        table.add(registration(app="other"), 0.0, port=10000)


def test_a_new_registration_updates_the_route() -> None:
    table = port_table()
    route = route_on(table)
    table.update(
        route, registration(kernel_host="[::1]", kernel_port=4000, open_to_public=True), 9.0
    )
    assert (route.target.host, route.target.port) == ("::1", 4000)
    assert route.open_to_public and route.last_used == 9.0
    with pytest.raises(RouteError) as changed:
        table.update(route, registration(protocol="tcp"), 10.0)
    assert changed.value.kind is AppProxyErrorType.UNSUPPORTED


def test_dropping_a_session_frees_its_routes_and_forgets_their_cookies() -> None:
    table = port_table()
    mine = [route_on(table, 10000, app="a"), route_on(table, 10001, app="b")]
    theirs = route_on(table, 10002, session_id=uuid.uuid4())
    token = table.issue_app_token(mine[0], 0.0)
    assert isinstance(
        table.authorize(mine[0], f"/?bai_app_token={token}", [], 1.0, secure=False), Redirect
    )
    assert set(table.drop_session(SESSION)) == set(mine)
    assert list(table) == [theirs]
    assert not mine[0].cookies and table.by_port(10000) is None


def test_idle_routes_are_those_without_connections_or_traffic() -> None:
    table = port_table()
    quiet = route_on(table, 10000, app="quiet")
    busy = route_on(table, 10001, app="busy")
    used = route_on(table, 10002, app="used")
    busy.active = 1
    used.touch(50.0)
    assert table.idle(now=99.0, idle_timeout=100.0) == []
    assert table.idle(now=100.0, idle_timeout=100.0) == [quiet]
    assert set(table.idle(now=150.0, idle_timeout=100.0)) == {quiet, used}


def test_wildcard_labels() -> None:
    table = RouteTable(mode="wildcard")
    label = table.label_for(SESSION, "Jupyter_Lab")
    assert label == "0123abcd-jupyter-lab"
    table.add(registration(app="Jupyter_Lab"), 0.0, label=label)
    # Its own label again; another app that sanitises the same way gets a longer one.
    assert table.label_for(SESSION, "Jupyter_Lab") == label
    other = table.label_for(SESSION, "jupyter-lab")
    assert other == f"{SESSION.hex}-jupyter-lab"
    table.add(registration(app="jupyter-lab"), 0.0, label=other)
    third = table.label_for(SESSION, "jupyter.lab")
    assert third.startswith(f"{SESSION.hex}-jupyter-lab-") and len(third) <= 63
    with pytest.raises(RouteError) as too_long:
        table.label_for(SESSION, "a" * 64)
    assert too_long.value.kind is AppProxyErrorType.UNSUPPORTED
    assert table.by_label("0123ABCD-Jupyter-Lab") is not None


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("abc-web.apps.example.com", "abc-web"),
        ("ABC-Web.Apps.Example.com:8080", "abc-web"),
        ("abc-web.apps.example.com.", "abc-web"),
        ("apps.example.com", None),
        ("a.b.apps.example.com", None),
        ("abc-web.example.com", None),
        ("abc-webapps.example.com", None),
        ("[::1]:80", None),
        ("", None),
    ],
)
def test_label_of_host(host: str, label: str | None) -> None:
    assert label_of_host(host, "apps.example.com") == label


# ----------------------------------------------------------- browser access


@pytest.mark.parametrize(
    ("target", "clean", "tokens"),
    [
        ("/", "/", []),
        ("/?bai_app_token=T", "/", ["T"]),
        ("/lab?a=1&bai_app_token=T&b=%2F", "/lab?a=1&b=%2F", ["T"]),
        ("/?bai_app_token=A&bai_app_token=B", "/", ["A", "B"]),
        ("?bai_app_token=T", "/", ["T"]),
        ("/x?bai%5Fapp%5Ftoken=T%2B", "/x", ["T+"]),
        ("/x?other=bai_app_token", "/x?other=bai_app_token", []),
        # Never a redirect off the origin.
        ("//evil.example/?bai_app_token=T", "/evil.example/", ["T"]),
        ("/\\evil.example?bai_app_token=T", "/evil.example", ["T"]),
        ("http://evil.example/p?bai_app_token=T", "/p", ["T"]),
        ("HTTPS://evil.example?bai_app_token=T", "/", ["T"]),
        ("*", "/*", []),
    ],
)
def test_split_token(target: str, clean: str, tokens: list[str]) -> None:
    assert split_token(target) == (clean, tokens)


def test_cookies_of_the_proxy_never_reach_an_app() -> None:
    header = 'a=1; bai_app_10000=secret; b="2"; bai_app=other;bai_app_x=3'
    assert strip_proxy_cookies(header) == 'a=1; b="2"'
    assert strip_proxy_cookies("bai_app=1") is None
    assert cookie_values([header, "bai_app=again"], "bai_app") == ["other", "again"]
    assert cookie_values(['q="quoted"'], "q") == ["quoted"]


def test_set_cookie_header() -> None:
    assert set_cookie_header("bai_app_1", "v", secure=False) == (
        "bai_app_1=v; Path=/; HttpOnly; SameSite=Lax"
    )
    assert set_cookie_header("bai_app", "v", secure=True).endswith("; Secure")


def test_the_token_is_exchanged_once_for_a_cookie() -> None:
    table = port_table()
    route = route_on(table)
    token = table.issue_app_token(route, now=0.0)
    first = table.authorize(route, f"/lab?x=1&bai_app_token={token}", [], 1.0, secure=False)
    assert isinstance(first, Redirect) and first.location == "/lab?x=1"
    assert first.set_cookie is not None and first.set_cookie.startswith("bai_app_10000=")
    cookie = first.set_cookie.split(";")[0]
    # With the cookie: forwarded; a reload of the first URL redirects without a new cookie.
    assert isinstance(table.authorize(route, "/lab", [cookie], 2.0, secure=False), Forward)
    reload = table.authorize(route, f"/?bai_app_token={token}", [cookie], 3.0, secure=False)
    assert reload == Redirect("/", None)
    # Without it: the token is spent, nothing opens.
    replay = table.authorize(route, f"/?bai_app_token={token}", [], 3.0, secure=False)
    assert isinstance(replay, Deny) and "already used" in replay.detail
    assert isinstance(table.authorize(route, "/lab", [], 3.0, secure=False), Deny)
    assert isinstance(
        table.authorize(route, "/lab", ["bai_app_10000=forged"], 3.0, secure=False), Deny
    )


def test_a_cookie_opens_its_own_route_only() -> None:
    table = port_table()
    one, two = route_on(table, 10000, app="one"), route_on(table, 10001, app="two")
    redirect = table.authorize(
        one, f"/?bai_app_token={table.issue_app_token(one, 0.0)}", [], 0.0, secure=False
    )
    assert isinstance(redirect, Redirect) and redirect.set_cookie is not None
    value = redirect.set_cookie.split(";")[0].split("=", 1)[1]
    stolen = f"{two.cookie_name}={value}"
    assert isinstance(table.authorize(two, "/", [stolen], 1.0, secure=False), Deny)


def test_app_tokens_expire_and_are_bounded() -> None:
    table = port_table()
    route = route_on(table)
    late = table.issue_app_token(route, now=0.0)
    assert isinstance(
        table.authorize(route, f"/?bai_app_token={late}", [], APP_TOKEN_TTL, secure=False), Deny
    )
    tokens = [table.issue_app_token(route, now=1.0) for _ in range(MAX_APP_TOKENS + 1)]
    assert len(route.app_tokens) == MAX_APP_TOKENS and tokens[0] not in route.app_tokens
    assert isinstance(
        table.authorize(route, f"/?bai_app_token={tokens[-1]}", [], 2.0, secure=True), Redirect
    )


def test_cookies_per_route_are_bounded() -> None:
    table = port_table()
    route = route_on(table)
    for _ in range(MAX_COOKIES + 5):
        token = table.issue_app_token(route, 0.0)
        table.authorize(route, f"/?bai_app_token={token}", [], 0.0, secure=False)
    assert len(route.cookies) == MAX_COOKIES


def test_a_public_route_needs_no_cookie_but_still_drops_tokens_from_urls() -> None:
    table = port_table()
    route = route_on(table, open_to_public=True)
    assert isinstance(table.authorize(route, "/predict", [], 0.0, secure=False), Forward)
    assert table.authorize(route, "/?bai_app_token=junk", [], 0.0, secure=False) == Redirect(
        "/", None
    )


def test_app_urls() -> None:
    table = port_table()
    route = route_on(table)
    assert (
        app_url(route, scheme="http", host="proxy.example", port=10000, token="a/b")
        == "http://proxy.example:10000/?bai_app_token=a%2Fb"
    )
    assert app_url(route, scheme="https", host="::1", port=10000, token="t") == (
        "https://[::1]:10000/?bai_app_token=t"
    )
    tcp = route_on(table, 10001, app="sshd", protocol="tcp")
    assert app_url(tcp, scheme="http", host="h", port=10001, token=None) == "tcp://h:10001"
    wild = RouteTable(mode="wildcard")
    labelled = wild.add(registration(), 0.0, label="0123abcd-jupyter")
    assert (
        app_url(labelled, scheme="http", host="apps.example.com", port=80, token="t")
        == "http://0123abcd-jupyter.apps.example.com:80/?bai_app_token=t"
    )
