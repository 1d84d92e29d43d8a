"""The official client's ``admin manager status/freeze/unfreeze``, ``admin announcement
get/update/delete`` and ``server-logs list`` against ``bai up``, unchanged."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bai.common.auth import sign_request
from bai.embedded import EmbeddedHandle, Keypair

from support.official import embedded_cluster, official, official_cli_path


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


async def ok(cli: Path, handle: EmbeddedHandle, cwd: Path, *args: str, **kw: object) -> str:
    """Run a command that must succeed; its stdout and stderr together."""
    code, out, err = await official(cli, handle, cwd, *args, **kw)  # type: ignore[arg-type]
    assert code == 0, (args, out, err)
    assert "Traceback" not in err, (args, err)
    return out + err


def user_of(handle: EmbeddedHandle) -> Keypair:
    return next(k for k in handle.keypairs if k.email == "user@lablup.com")


async def test_manager_freeze_and_announcements(official_cli: Path, tmp_path: Path) -> None:
    async with embedded_cluster(tmp_path / "data") as up:
        status = await ok(official_cli, up, tmp_path, "admin", "manager", "status")
        assert "running" in status and "Active Sessions" in status
        frozen = await ok(official_cli, up, tmp_path, "admin", "manager", "freeze")
        assert "Manager is successfully frozen." in frozen
        assert "frozen" in await ok(official_cli, up, tmp_path, "admin", "manager", "status")
        code, out, err = await official(
            official_cli, up, tmp_path, "session", "create", "python", keypair=user_of(up)
        )
        assert code != 0 and "frozen" in out + err, (out, err)
        # Only a superadmin may freeze.
        code, out, err = await official(
            official_cli, up, tmp_path, "admin", "manager", "unfreeze", keypair=user_of(up)
        )
        assert code != 0 and "403" in out + err, (out, err)
        unfrozen = await ok(official_cli, up, tmp_path, "admin", "manager", "unfreeze")
        assert "Manager is successfully unfrozen." in unfrozen
        assert "running" in await ok(official_cli, up, tmp_path, "admin", "manager", "status")

        none = await ok(official_cli, up, tmp_path, "admin", "announcement", "get")
        assert "No announcements." in none
        posted = await ok(
            official_cli, up, tmp_path, "admin", "announcement", "update", "-m", "Upgrade at 10:00"
        )
        assert "Posted new announcement." in posted
        shown = await ok(official_cli, up, tmp_path, "admin", "announcement", "get")
        assert "Upgrade at 10:00" in shown
        deleted = await ok(
            official_cli, up, tmp_path, "admin", "announcement", "delete", stdin=b"y\n"
        )
        assert "Deleted announcement." in deleted
        none = await ok(official_cli, up, tmp_path, "admin", "announcement", "get")
        assert "No announcements." in none


async def test_server_logs_list(official_cli: Path, tmp_path: Path) -> None:
    async with embedded_cluster(tmp_path / "data") as up:
        empty = await ok(official_cli, up, tmp_path, "server-logs", "list")
        assert "Total log count: 0" in empty
        # File a report as a client would, then list it with the official CLI.
        body = (
            b'{"severity": "critical", "source": "webui", "message": "boom happened",'
            b' "context_lang": "js", "context_env": "{}", "request_url": "/x",'
            b' "request_status": 500, "traceback": "Trace: line 1"}'
        )
        key = user_of(up)
        headers = sign_request(
            method="POST",
            path="/logs/error",
            host=up.endpoint.removeprefix("http://"),
            api_version="v6.20220615",
            access_key=key.access_key,
            secret_key=key.secret_key,
        )
        async with httpx.AsyncClient() as http:
            filed = await http.post(up.endpoint + "/logs/error", content=body, headers=headers)
        assert filed.json() == {"success": True}, filed.text
        listed = await ok(official_cli, up, tmp_path, "server-logs", "list", keypair=key)
        assert "Total log count: 1" in listed
        assert "CRITICAL webui" in listed and "boom happened" in listed
        assert "500 /x" in listed and "Trace: line 1" in listed
        admin_view = await ok(official_cli, up, tmp_path, "server-logs", "list", "--mark-read")
        assert "boom happened" in admin_view
