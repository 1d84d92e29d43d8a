"""The official client's session lifecycle commands against ``bai up``, unchanged."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio

from bai.common.config import HostPort
from bai.watcher import WatcherService
from bai.watcher.control import ProcessControl

from support.official import embedded_cluster, official, official_cli_path


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


async def test_show_graph_draws_the_dependencies(official_cli: Path, tmp_path: Path) -> None:
    async with embedded_cluster(tmp_path / "data") as handle:

        async def ok(*args: str) -> str:
            code, out, err = await official(official_cli, handle, tmp_path, *args)
            assert code == 0 and "Traceback" not in err, (args, out, err)
            return out + err

        batch = ["--type", "batch", "-c", "sleep 600", "--enqueue-only"]
        await ok("session", "create", "-t", "graph-base-1", *batch, "python")
        await ok(
            "session", "create", "-t", "graph-top-1", *batch, "--depends", "graph-base-1", "python"
        )
        tree = await ok("session", "show-graph", "graph-top-1")
        # The client names each node by the second-to-last part of the session name.
        assert "top" in tree and "base" in tree
        table = await ok("session", "show-graph", "graph-top-1", "--table")
        assert "graph-base-1" in table and "graph-top-1" in table
        assert table.index("graph-base-1") < table.index("graph-top-1")


async def test_admin_watcher_status_reaches_the_agents_watcher(
    official_cli: Path, tmp_path: Path
) -> None:
    async with embedded_cluster(tmp_path / "data") as handle, trio.open_nursery() as nursery:
        config = handle.agent.config
        watcher = msgspec.structs.replace(
            config.watcher, service_addr=HostPort("127.0.0.1", 0), token="official-token"
        )
        service = WatcherService(
            msgspec.structs.replace(config, watcher=watcher),
            None,
            control=ProcessControl(None, command=["sleep", "600"]),
        )
        url = await nursery.start(service.serve)
        agent = handle.agent.agent_id

        async def ok(*args: str) -> str:
            code, out, err = await official(official_cli, handle, tmp_path, *args)
            assert code == 0 and "Traceback" not in err, (args, out, err)
            return out + err

        await ok("admin", "etcd", "set", "config/watcher/token", "official-token")
        await ok(
            "admin", "etcd", "set", f"nodes/agents/{agent}/watcher_port", url.rsplit(":", 1)[1]
        )
        status = await ok("admin", "watcher", "status", agent)
        assert "('agent-status', 'active')" in status
        assert "('watcher-status', 'active')" in status
        nursery.cancel_scope.cancel()
