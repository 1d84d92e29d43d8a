"""Service ports: start-service, shutdown-service and get-apps against real processes."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bai.kernel.client import RunnerClient, RunnerProcess

from support.net import free_port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


HTTP = ["{runtime_path}", "-m", "http.server", "{ports[0]}", "--bind", "127.0.0.1"]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def defs(tmp_path: Path) -> Path:
    path = tmp_path / "service-defs"
    path.mkdir()
    return path


@pytest.fixture
def runner(tmp_path: Path, defs: Path, port: int) -> Iterator[RunnerProcess]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with RunnerProcess(
        str(workdir),
        extra_args=["--service-ports", f"web:http:{port}", "--service-defs", str(defs)],
    ) as process:
        yield process
    assert process.session_pids() == []


def _start(kernel: RunnerClient, name: str, **payload: Any) -> dict[str, Any]:
    return kernel.request("start-service", "service-result", within=30, name=name, **payload)


def test_a_defined_service_starts_and_serves(
    kernel: RunnerClient, defs: Path, tmp_path: Path, port: int
) -> None:
    (tmp_path / "work" / "index.html").write_text("served by the kernel")
    definition = {
        "prestart": [
            {
                "action": "write_tempfile",
                "args": {"body": ["port={ports[0]}\n"], "mode": "600"},
                "ref": "cfg",
            },
            {"action": "run_command", "args": {"command": ["cat", "{cfg}"]}, "ref": "shown"},
            {"action": "mkdir", "args": {"path": "logs/web"}},
            {
                "action": "write_file",
                "args": {"filename": "logs/web/cfg.txt", "body": ["{shown[out]}"]},
            },
            {"action": "log", "args": {"body": "config in {cfg}"}},
        ],
        "command": HTTP,
        "url_template": "http://{host}:{port}/",
    }
    (defs / "web.json").write_text(json.dumps(definition))
    result = _start(kernel, "web")
    assert result | {"request_id": None} == {
        "request_id": None,
        "name": "web",
        "status": "started",
        "error": None,
        "ports": [port],
    }
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as response:
        assert response.read() == b"served by the kernel"
    assert (tmp_path / "work" / "logs" / "web" / "cfg.txt").read_text() == f"port={port}\n"
    log = kernel.wait_for("log", timeout=5)
    assert (log["level"], log["logger"]) == ("info", "service.web")
    assert log["message"].startswith("config in /")
    assert oct(os.stat(log["message"].split()[-1]).st_mode & 0o777) == "0o600"

    assert _start(kernel, "web")["status"] == "running"
    apps = kernel.request("get-apps", "apps-result")["apps"]
    assert apps == [
        {
            "name": "web",
            "protocol": "http",
            "ports": [port],
            "url_template": "http://{host}:{port}/",
            "running": True,
        }
    ]
    assert kernel.request("status", "status")["services"] == ["web"]

    stopped = kernel.request("shutdown-service", "service-result", name="web")
    assert (stopped["status"], stopped["ports"]) == ("stopped", [port])
    assert not _accepts(port)
    assert (
        kernel.request("shutdown-service", "service-result", name="web")["status"] == "not-running"
    )
    assert kernel.request("get-apps", "apps-result")["apps"][0]["running"] is False


def test_a_broken_template_fails_before_any_prestart_action(
    kernel: RunnerClient, tmp_path: Path
) -> None:
    marker = tmp_path / "work" / "written.txt"
    definition = {
        "prestart": [{"action": "write_file", "args": {"filename": str(marker), "body": ["x"]}}],
        "command": ["{runtime_path}", "--port", "{ports[1]}"],
    }
    result = _start(kernel, "broken", definition=definition, ports=[free_port()])
    assert result["status"] == "failed"
    assert "command[2]: cannot fill in the template" in result["error"]
    assert "{ports[1]}" in result["error"]
    assert not marker.exists()
    assert kernel.request("get-apps", "apps-result")["apps"][0]["running"] is False


def test_a_service_that_exits_reports_its_code_and_output(kernel: RunnerClient) -> None:
    definition = {"command": ["sh", "-c", "echo cannot bind >&2; exit 3"]}
    result = _start(kernel, "dies", definition=definition, ports=[free_port()])
    assert result["status"] == "failed"
    assert "exited with code 3" in result["error"]
    assert result["error"].endswith("cannot bind")


def test_a_service_that_never_listens_is_stopped_at_the_deadline(
    kernel: RunnerClient, runner: RunnerProcess
) -> None:
    definition = {"command": ["sleep", "60"]}
    result = _start(kernel, "mute", definition=definition, ports=[free_port()], timeout=1)
    assert result["status"] == "failed"
    assert "did not accept connections" in result["error"]
    assert not any("sleep" in _cmdline(pid) for pid in runner.session_pids())


def test_requests_envs_reach_the_service(kernel: RunnerClient, tmp_path: Path) -> None:
    port = free_port()
    definition = {
        "command": [
            "sh",
            "-c",
            f"echo $GREETING > greeting.txt; exec {sys.executable} -m http.server {{ports[0]}}",
        ],
        "env": {"GREETING": "from-definition"},
    }
    result = _start(
        kernel, "env", definition=definition, ports=[port], envs={"GREETING": "from-request"}
    )
    assert result["status"] == "started"
    assert (tmp_path / "work" / "greeting.txt").read_text() == "from-request\n"


def test_a_service_dying_later_is_logged(kernel: RunnerClient) -> None:
    port = free_port()
    script = (
        f"import socket, time; s = socket.create_server(('127.0.0.1', {port})); time.sleep(0.5)"
    )
    result = _start(
        kernel, "brief", definition={"command": [sys.executable, "-c", script]}, ports=[port]
    )
    assert result["status"] == "started"
    log = kernel.wait_for("log", timeout=10, logger="service.brief")
    assert (log["level"], log["message"]) == ("warning", "the service exited with code 0")
    assert kernel.request("status", "status")["services"] == []


def test_unknown_services_fail_with_a_reason(kernel: RunnerClient) -> None:
    result = _start(kernel, "ghost")
    assert result["status"] == "failed"
    assert "no such service in the service-ports label" in result["error"]
    result = _start(kernel, "web")  # declared, but its definition file is missing
    assert result["status"] == "failed"
    assert "no service definition file" in result["error"]


def test_tempfiles_of_services_go_away_with_the_runner(
    kernel: RunnerClient, runner: RunnerProcess
) -> None:
    definition = {
        "prestart": [
            {"action": "write_tempfile", "args": {"body": ["x"]}, "ref": "cfg"},
            {"action": "log", "args": {"body": "{cfg}"}},
        ],
        "command": HTTP,
    }
    assert _start(kernel, "temp", definition=definition, ports=[free_port()])["status"] == "started"
    path = Path(kernel.wait_for("log", timeout=5, logger="service.temp")["message"])
    assert path.read_text() == "x"
    runner.stop()
    assert not path.exists()
