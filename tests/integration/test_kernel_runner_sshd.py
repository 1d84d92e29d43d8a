"""The ``sshd`` intrinsic service: OpenSSH's sshd started by the runner, used by ssh, scp, sftp."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bai.kernel import sshd
from bai.kernel.client import RunnerClient, RunnerProcess

from support.net import free_port

REQUIRED = os.environ.get("BAI_REQUIRE_SERVICES", "") not in ("", "0")
MISSING = [name for name in ("ssh", "scp", "sftp", "ssh-keygen") if shutil.which(name) is None] + (
    ["sshd"] if sshd.find_program("sshd") is None else []
)

if MISSING and not REQUIRED:
    pytest.skip(f"OpenSSH is not installed (no {', '.join(MISSING)})", allow_module_level=True)

USER = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(autouse=True)
def _openssh() -> None:
    if MISSING:
        pytest.fail(f"OpenSSH is needed: no {', '.join(MISSING)} (apt-get install openssh-server)")


def _keypair(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    key = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    return key


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return _keypair(tmp_path / "client")


@pytest.fixture
def workdir(tmp_path: Path, key: Path) -> Path:
    """The kernel's /home/work, with the key authorized as the agent writes it."""
    work = tmp_path / "work"
    (work / ".ssh").mkdir(parents=True, mode=0o700)
    authorized = work / ".ssh" / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    return work


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def runner(workdir: Path, port: int) -> Iterator[RunnerProcess]:
    env = {**os.environ, "BAI_SSH_PROBE": "from the kernel, with spaces"}
    with RunnerProcess(
        str(workdir), runtime="app", env=env, extra_args=["--service-ports", f"sshd:tcp:{port}"]
    ) as process:
        yield process
    assert process.session_pids() == []


def _start(kernel: RunnerClient, **payload: Any) -> dict[str, Any]:
    return kernel.request("start-service", "service-result", within=30, name="sshd", **payload)


@pytest.fixture
def sshd_port(kernel: RunnerClient, port: int) -> int:
    result = _start(kernel)
    assert (result["status"], result["error"], result["ports"]) == ("started", None, [port])
    return port


def _options(key: Path) -> list[str]:
    return [
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
    ]


def _ssh(key: Path, port: int, command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", *_options(key), "-p", str(port), f"{USER}@127.0.0.1", "--", command],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def _held_session(key: Path, port: int) -> subprocess.Popen[str]:
    """An ssh session whose remote command prints its pid, then sleeps."""
    remote = "echo $$; exec sleep 120"
    return subprocess.Popen(
        ["ssh", *_options(key), "-p", str(port), f"{USER}@127.0.0.1", "--", remote],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.05)


def test_ssh_runs_a_command_as_the_kernel_user_with_the_kernels_environment(
    kernel: RunnerClient, sshd_port: int, key: Path
) -> None:
    done = _ssh(key, sshd_port, 'echo ok; id -un; echo "$BAI_SSH_PROBE"')
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"ok\n{USER}\nfrom the kernel, with spaces\n",
        "",
    )
    apps = kernel.request("get-apps", "apps-result")["apps"]
    assert apps == [
        {
            "name": "sshd",
            "protocol": "tcp",
            "ports": [sshd_port],
            "url_template": None,
            "running": True,
        }
    ]
    assert _start(kernel)["status"] == "running"


def test_scp_and_sftp_copy_files_both_ways(sshd_port: int, key: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    source = tmp_path / "upload.bin"
    source.write_bytes(os.urandom(300_000))
    target = f"{USER}@127.0.0.1:{workdir}/uploaded.bin"
    scp = ["scp", *_options(key), "-P", str(sshd_port)]
    done = subprocess.run([*scp, str(source), target], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (workdir / "uploaded.bin").read_bytes() == source.read_bytes()
    done = subprocess.run(
        [*scp, target, str(tmp_path / "back.bin")], capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    # sftp itself, through the internal-sftp subsystem.
    batch = f"put {source} {workdir}/via-sftp.bin\nls {workdir}\n"
    done = subprocess.run(
        ["sftp", *_options(key), "-P", str(sshd_port), "-b", "-", f"{USER}@127.0.0.1"],
        input=batch.encode(),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert (workdir / "via-sftp.bin").read_bytes() == source.read_bytes()


def test_a_key_that_is_not_authorized_is_refused_and_others_still_get_in(
    sshd_port: int, key: Path, tmp_path: Path
) -> None:
    stranger = _keypair(tmp_path / "stranger")
    for _ in range(5):  # repeated failures lock no one out (per-source penalties are off)
        done = _ssh(stranger, sshd_port, "echo in")
        assert done.returncode == 255
        assert "Permission denied (publickey)" in done.stderr
    done = _ssh(key, sshd_port, "echo in")
    assert (done.returncode, done.stdout) == (0, "in\n")


def test_shutdown_ends_sshd_and_the_sessions_it_holds(
    kernel: RunnerClient, sshd_port: int, key: Path
) -> None:
    session = _held_session(key, sshd_port)
    try:
        assert session.stdout is not None
        remote = int(session.stdout.readline())
        assert _alive(remote)
        result = kernel.request("shutdown-service", "service-result", name="sshd", within=30)
        assert (result["status"], result["ports"]) == ("stopped", [sshd_port])
        _wait_gone(remote)
        assert session.wait(10) != 0
    finally:
        session.kill()
        session.wait()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sshd_port), timeout=2).close()
    assert kernel.request("status", "status")["services"] == []
    # It starts again on the same port, with a new host key.
    assert _start(kernel)["status"] == "started"
    assert _ssh(key, sshd_port, "echo again").stdout == "again\n"


def test_the_runner_stopping_ends_sshd_and_its_sessions(
    runner: RunnerProcess, sshd_port: int, key: Path
) -> None:
    session = _held_session(key, sshd_port)
    try:
        assert session.stdout is not None
        remote = int(session.stdout.readline())
        runner.stop()
        _wait_gone(remote)
        session.wait(10)
    finally:
        session.kill()
        session.wait()


def test_a_busy_port_fails_with_a_precise_error(kernel: RunnerClient) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = taken.getsockname()[1]
        result = _start(kernel, ports=[busy])
    assert result["status"] == "failed"
    assert result["error"] == (
        f"ports: port {busy} of 127.0.0.1 is taken already (Address already in use) (got [{busy}])"
    )
    assert kernel.request("status", "status")["services"] == []
