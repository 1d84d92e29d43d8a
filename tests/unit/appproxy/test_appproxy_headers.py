"""What the app proxy forwards of each request and answer, and its config's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bai.appproxy.proxy import forward_request_headers, forward_response_headers
from bai.common.config import AppProxyConfig, ConfigError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_hop_by_hop_headers_and_proxy_cookies_stay_behind() -> None:
    headers = [
        (b"host", b"127.0.0.1:10205"),
        (b"connection", b"keep-alive, x-private"),
        (b"keep-alive", b"timeout=5"),
        (b"x-private", b"1"),
        (b"te", b"trailers"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"cookie", b"bai_app_10205=secret; theme=dark"),
        (b"cookie", b"bai_app=other"),
        (b"x-forwarded-for", b"10.1.1.1"),
        (b"x-forwarded-proto", b"gopher"),
        (b"content-length", b"3"),
        (b"accept", b"*/*"),
    ]
    out = forward_request_headers(headers, client_ip="10.2.2.2", scheme="https", upgrade=None)
    assert out == [
        (b"host", b"127.0.0.1:10205"),
        (b"cookie", b"theme=dark"),
        (b"content-length", b"3"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"10.1.1.1, 10.2.2.2"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"127.0.0.1:10205"),
    ]


def test_an_upgrade_is_forwarded_as_one() -> None:
    headers = [
        (b"host", b"h"),
        (b"connection", b"Upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"k"),
    ]
    out = forward_request_headers(headers, client_ip=None, scheme="http", upgrade=b"websocket")
    assert (b"sec-websocket-key", b"k") in out
    assert out[-2:] == [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    assert not any(name == b"x-forwarded-for" for name, _ in out)


def test_answers_lose_hop_by_hop_headers_except_a_101s_upgrade() -> None:
    headers = [
        (b"connection", b"close, x-hop"),
        (b"x-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"a=1"),
    ]
    assert forward_response_headers(headers, switching=False) == [
        (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"a=1"),
    ]
    switching = [
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-accept", b"x"),
    ]
    assert forward_response_headers(switching, switching=True) == [
        (b"sec-websocket-accept", b"x"),
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
    ]


def test_the_sample_config_loads() -> None:
    config = load_config(AppProxyConfig, CONFIGS / "app-proxy.toml", env={}).config
    section = config.appproxy
    assert section.service_addr.port == 10200
    assert section.mode == "port" and section.port_range == (10205, 10300)
    assert section.idle_timeout == 3600.0
    assert section.secret.startswith("change-me")
    assert config.logging.file.filename == "app-proxy.log"


def test_defaults_serve_loopback_ports() -> None:
    section = parse_config(AppProxyConfig, b"").appproxy
    assert (section.mode, section.bind_host, section.advertised_host) == ("port", "127.0.0.1", None)
    assert section.max_connections_per_route == 256
    # A new secret at each start unless one is set.
    assert parse_config(AppProxyConfig, b"").appproxy.secret != section.secret


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[appproxy]\nmode = "wildcard"\n', "appproxy.wildcard-domain"),
        (
            '[appproxy]\nmode = "wildcard"\nwildcard-domain = "Apps.Example"\n',
            "appproxy.wildcard-domain",
        ),
        ('[appproxy]\nmode = "wildcard"\nwildcard-domain = "a..b"\n', "appproxy.wildcard-domain"),
        ('[appproxy]\nbind-host = "0.0.0.0"\n', "appproxy.advertised-host"),
        ("[appproxy]\nport-range = [10300, 10200]\n", "appproxy.port-range"),
        ('[appproxy]\nidle-timeout = "0s"\n', "appproxy.idle-timeout"),
        ("[appproxy]\nmax-connections-per-route = 0\n", "appproxy.max-connections-per-route"),
        ('[appproxy]\nmode = "ports"\n', "appproxy.mode"),
        ("[appproxy]\nssl-enabled = true\n", "appproxy.ssl-cert"),
    ],
)
def test_bad_settings_name_their_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(AppProxyConfig, text, source="app-proxy.toml", env={})
    assert key in str(error.value)


def test_wildcard_and_public_bind_settings_load() -> None:
    config = parse_config(
        AppProxyConfig,
        '[appproxy]\nmode = "wildcard"\nwildcard-domain = "apps.example.com"\n'
        'bind-host = "0.0.0.0"\nadvertised-port = 443\nadvertised-scheme = "https"\n',
        env={},
    )
    assert config.appproxy.wildcard_domain == "apps.example.com"
    public = parse_config(
        AppProxyConfig,
        '[appproxy]\nbind-host = "0.0.0.0"\nadvertised-host = "proxy.example.com"\n',
        env={"BAI_APPPROXY__SECRET": "from-env"},
    )
    assert public.appproxy.secret == "from-env"
