"""The sshd intrinsic service's configuration, checked by the real sshd's test mode."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bai.kernel import sshd
from bai.kernel.service import (
    INTRINSIC_SERVICE_PORTS,
    ServiceError,
    ServicePort,
    parse_service_ports,
)

REQUIRED = os.environ.get("BAI_REQUIRE_SERVICES", "") not in ("", "0")


def _need_openssh() -> str:
    binary = sshd.find_program("sshd")
    if binary is None or sshd.find_program("ssh-keygen") is None:
        if REQUIRED:
            pytest.fail("OpenSSH's sshd and ssh-keygen are needed (apt-get install openssh-server)")
        pytest.skip("OpenSSH's sshd is not installed")
    return binary


def _config(**changes: object) -> str:
    values: dict[str, object] = {
        "ports": [2200],
        "host_key": "/tmp/k/key",
        "user": "work",
        "authorized_keys": ["/home/work/.ssh/authorized_keys"],
        "environ": {},
        "version": (9, 2),
    }
    values.update(changes)
    return sshd.config_text(**values)  # type: ignore[arg-type]


def _settings(text: str) -> dict[str, str]:
    return {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_the_intrinsic_services_are_sshd_and_ttyd_at_their_container_ports() -> None:
    assert [(s.name, s.protocol, s.ports) for s in INTRINSIC_SERVICE_PORTS] == [
        ("sshd", "tcp", (2200,)),
        ("ttyd", "http", (7681,)),
    ]


def test_a_label_may_declare_the_intrinsic_services_at_their_own_ports_only() -> None:
    assert parse_service_ports("sshd:tcp:2200,ttyd:http:7681,web:http:8080") == [
        *INTRINSIC_SERVICE_PORTS,
        ServicePort("web", "http", (8080,)),
    ]
    for label in ("sshd:tcp:7681", "ttyd:tcp:7681", "web:http:2200", "sshd:tcp:[2200,2000]"):
        with pytest.raises(ServiceError, match="reserved"):
            parse_service_ports(label)


def test_the_config_allows_keys_only_for_the_kernel_user() -> None:
    settings = _settings(_config(ports=[2200, 2201]))
    assert settings["AllowUsers"] == "work"
    assert settings["AuthorizedKeysFile"] == '"/home/work/.ssh/authorized_keys"'
    assert settings["PasswordAuthentication"] == "no"
    assert settings["ChallengeResponseAuthentication"] == "no"
    assert settings["UsePAM"] == "no"
    assert settings["StrictModes"] == "no"
    assert settings["Subsystem"] == "sftp internal-sftp"
    text = _config(ports=[2200, 2201])
    assert "ListenAddress 127.0.0.1:2200\nListenAddress 127.0.0.1:2201\n" in text


def test_per_source_penalties_are_off_where_openssh_has_them() -> None:
    assert "PerSourcePenalties" not in _config(version=(9, 7))
    assert "PerSourcePenalties" not in _config(version=None)
    assert _settings(_config(version=(9, 8)))["PerSourcePenalties"] == "no"
    assert _settings(_config(version=(10, 0)))["PerSourcePenalties"] == "no"


def test_a_percent_in_a_key_path_is_not_a_token() -> None:
    settings = _settings(_config(authorized_keys=["/w/100%/keys", ".ssh/authorized_keys"]))
    assert settings["AuthorizedKeysFile"] == '"/w/100%%/keys" ".ssh/authorized_keys"'


def test_sessions_get_the_kernels_environment_but_not_the_logins_own() -> None:
    environ = {
        "PATH": "/opt/py/bin:/usr/bin",
        "BACKENDAI_SESSION_ID": "s1",
        "WITH_SPACE": "a b",
        "HOME": "/elsewhere",
        "TERM": "dumb",
        "SSH_AUTH_SOCK": "/x",
        "BAI_KERNEL_INPUT": "ipc:///x",
        "QUOTED": 'say "hi"',
        "NEWLINE": "a\nb",
        "BACKSLASH": "a\\b",
        "bad-name": "x",
    }
    settings = _settings(_config(environ=environ))
    assert settings["SetEnv"] == (
        '"BACKENDAI_SESSION_ID=s1" "PATH=/opt/py/bin:/usr/bin" "WITH_SPACE=a b"'
    )
    assert "SetEnv" not in _settings(_config(environ={"HOME": "/x"}))


def test_the_generated_config_passes_sshds_own_check(tmp_path: Path) -> None:
    binary = _need_openssh()
    environ = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "X": "a b #c"}
    command = sshd.prepare(
        str(tmp_path), [2200, 2201], workdir="/home/work", environ=environ, timeout=10
    )
    assert command == [binary, "-D", "-e", "-f", str(tmp_path / sshd.CONFIG)]
    assert (tmp_path / sshd.HOST_KEY).stat().st_mode & 0o077 == 0
    done = subprocess.run([binary, "-t", "-f", command[-1]], capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr.decode()
    # -T prints the settings as sshd understood them.
    done = subprocess.run(
        [binary, "-T", "-f", command[-1]], capture_output=True, timeout=10, check=True
    )
    effective = done.stdout.decode()
    assert "listenaddress 127.0.0.1:2200" in effective
    assert "\nsetenv X=a b #c\n" in effective
    assert "\nsetenv PATH=/usr/bin:/bin\n" in effective
    assert f"\nallowusers {sshd.login_user().pw_name}\n" in effective
    assert "passwordauthentication no" in effective
    assert "subsystem sftp internal-sftp" in effective


def test_without_sshd_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sshd, "SBIN_DIRS", (str(tmp_path),))
    with pytest.raises(sshd.SshdError, match=r"no sshd binary in this kernel.*openssh-server"):
        sshd.prepare(str(tmp_path), [2200], workdir="/home/work", environ={}, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_the_login_user_is_the_runners() -> None:
    entry = sshd.login_user()
    assert entry.pw_uid == os.getuid()
