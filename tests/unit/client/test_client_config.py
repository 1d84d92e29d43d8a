"""Client configuration from BACKEND_* variables, and the client.env file of `bai up`."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bai.client.envfile import read_client_env, render_client_env, write_client_env
from bai.client.settings import API_VERSION, APIConfig, ClientConfigError


def test_defaults_point_at_a_local_manager_without_keypair() -> None:
    config = APIConfig.from_env({})
    assert config.endpoint == "http://127.0.0.1:8081"
    assert config.api_version == API_VERSION == "v6.20220615"
    assert config.domain == config.group == "default"
    assert config.read_timeout is None
    assert not config.has_credentials


def test_official_client_variables_are_read() -> None:
    config = APIConfig.from_env(
        {
            "BACKEND_ENDPOINT": "https://cluster.example:8443/",
            "BACKEND_ENDPOINT_TYPE": "api",
            "BACKEND_ACCESS_KEY": "AKIAXYZ",
            "BACKEND_SECRET_KEY": "s3cret",
            "BACKEND_DOMAIN": "research",
            "BACKEND_GROUP": "vision",
            "BACKEND_VFOLDER_MOUNTS": "data, models,,",
            "BACKEND_SKIP_SSLCERT_VALIDATION": "yes",
            "BACKEND_CONNECTION_TIMEOUT": "2.5",
            "BACKEND_READ_TIMEOUT": "0",
        }
    )
    assert config.endpoint == "https://cluster.example:8443"
    assert (config.access_key, config.secret_key) == ("AKIAXYZ", "s3cret")
    assert (config.domain, config.group) == ("research", "vision")
    assert config.vfolder_mounts == ("data", "models")
    assert config.skip_sslcert_validation is True
    assert config.connection_timeout == 2.5
    assert config.read_timeout is None
    assert config.has_credentials


def test_keyword_overrides_win_over_the_environment() -> None:
    config = APIConfig.from_env({"BACKEND_ACCESS_KEY": "FROMENV"}, access_key="ARG")
    assert config.access_key == "ARG"


def test_secret_key_never_shows_in_repr() -> None:
    config = APIConfig(access_key="AK", secret_key="very-secret-value")
    assert "very-secret-value" not in repr(config)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("BACKEND_ENDPOINT", "ftp://host", "http"),
        ("BACKEND_ENDPOINT", "localhost:8081", "http"),
        ("BACKEND_ENDPOINT", "http://a:1,http://b:2", "one URL"),
        ("BACKEND_ENDPOINT", "http://host:99999", "port"),
        ("BACKEND_ENDPOINT_TYPE", "session", "console-server"),
        ("BACKEND_SKIP_SSLCERT_VALIDATION", "perhaps", "yes or no"),
        ("BACKEND_CONNECTION_TIMEOUT", "soon", "seconds"),
        ("BACKEND_CONNECTION_TIMEOUT", "-1", "positive"),
        ("BACKEND_ACCESS_KEY", "has space", "without spaces"),
    ],
)
def test_bad_variable_is_named_in_the_error(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ClientConfigError) as caught:
        APIConfig.from_env({variable: value})
    assert caught.value.field == variable
    assert problem in str(caught.value)


def test_bad_secret_key_is_not_echoed() -> None:
    with pytest.raises(ClientConfigError) as caught:
        APIConfig.from_env({"BACKEND_SECRET_KEY": "top secret"})
    assert "top secret" not in str(caught.value)


def test_bad_api_version_and_hash_are_rejected() -> None:
    with pytest.raises(ClientConfigError, match="api_version"):
        APIConfig(api_version="6")
    with pytest.raises(ClientConfigError, match="hash_type"):
        APIConfig(hash_type="crc32")


def test_client_env_round_trips_and_is_private(tmp_path: Path) -> None:
    path = write_client_env(tmp_path / "data", "http://127.0.0.1:8081", "AKIA1", "sec'ret$x")
    assert path == tmp_path / "data" / "client.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = read_client_env(path)
    assert config.endpoint == "http://127.0.0.1:8081"
    assert (config.access_key, config.secret_key) == ("AKIA1", "sec'ret$x")


def test_client_env_exports_the_official_names_for_a_real_shell(tmp_path: Path) -> None:
    path = write_client_env(tmp_path, "http://127.0.0.1:9", "AKIA1", "se'c\"r$e`t;x")
    shown = subprocess.run(
        ["bash", "-c", f'source "{path}" && env'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout.splitlines()
    assert "BACKEND_ENDPOINT=http://127.0.0.1:9" in shown
    assert "BACKEND_ENDPOINT_TYPE=api" in shown
    assert "BACKEND_ACCESS_KEY=AKIA1" in shown
    assert "BACKEND_SECRET_KEY=se'c\"r$e`t;x" in shown


def test_client_env_refuses_missing_keys_and_bad_endpoints() -> None:
    with pytest.raises(ClientConfigError):
        render_client_env("http://127.0.0.1:8081", "", "")
    with pytest.raises(ClientConfigError, match="endpoint"):
        render_client_env("not a url", "AK", "SK")


def test_malformed_client_env_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "client.env"
    path.write_text("export BACKEND_ENDPOINT=http://x:1\nrm -rf /\n")
    with pytest.raises(ClientConfigError, match=r"client.env:2"):
        read_client_env(path)
