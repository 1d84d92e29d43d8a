"""Hostile code in a local kernel: what it can see, who it is, what it can reach.

Each test runs code a stranger could send and asserts what the sandbox
refuses.  They need root (cgroups, the kernel user, network namespaces) and
bubblewrap, as ``.ci/run`` has.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from support.agent import Harness, agent_config, is_root, running_agent
from support.hostile import assert_contained, parse, probe_code

pytestmark = [
    pytest.mark.skipif(not is_root(), reason="the kernel user and namespaces need root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed"),
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_agent(agent_config(tmp_path)) as h:
        yield h


@pytest.fixture
def host_secrets(tmp_path: Path) -> Iterator[list[Path]]:
    """Secret files a host keeps: a data directory beside the repository, one in /tmp."""
    folders = [REPO / f"bai-data-probe-{uuid.uuid4().hex[:6]}", Path("/tmp") / uuid.uuid4().hex]
    for folder in folders:
        folder.mkdir()
        (folder / "secret.txt").write_text("host secret")
    yield [folder / "secret.txt" for folder in folders]
    for folder in folders:
        shutil.rmtree(folder)


async def test_hostile_code_sees_and_reaches_nothing_of_the_host(
    harness: Harness, tmp_path: Path, host_secrets: list[Path]
) -> None:
    # Besides the host's own: the agent's state.
    secrets = [*host_secrets, tmp_path / "var" / "secret.txt"]
    await trio.Path(secrets[-1]).write_text("agent secret")
    other = await harness.create()
    kernel = await harness.create()
    kid = kernel["kernel_id"]
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    host_port = listener.socket.getsockname()[1]
    paths = ["/etc/passwd", *map(str, secrets), str(Path(other["scratch_dir"]))]
    ipc_base = str(harness.agent.config.agent.ipc_base_path)
    listed = ["/", "/root", "/home", "/tmp", str(REPO), ipc_base, "/etc", "/home/work"]
    async with listener:
        out = await harness.output(kid, probe_code(paths, listed, [host_port]))
    found = parse(out)
    # Only the generated account list is there; nothing else of the host.
    assert_contained(found, readable=["/etc/passwd"])
    kernel_user = pwd.getpwnam("bai-kernel")
    assert found["uid"] == kernel_user.pw_uid
    assert found["gid"] == kernel_user.pw_gid and found["groups"] in ([], [kernel_user.pw_gid])
    assert found["user"] == "work"
    assert found["cwd"] == "/home/work"
    listings = found["listings"]
    assert listings["/home"] == ["work"]
    # The sandbox's folders hold only what leads to the runtime and the sockets.
    bound = [Path(ipc_base), REPO, Path(sys.prefix), Path(sys.base_prefix)]
    assert set(listings["/tmp"]) == _names_below(Path("/tmp"), bound)
    assert listings[ipc_base] == [kid]
    assert set(listings[str(REPO)]) <= {"bai", ".venv", "configs"}
    assert "shadow" not in listings["/etc"] and "postgresql" not in listings["/etc"]
    assert set(listings["/"]) <= {
        "bin", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "proc",
        "run", "sbin", "sys", "tmp", "usr", "var",
    } | _names_below(Path("/"), bound)  # fmt: skip
    assert found["pids"][0] == 1 and max(found["pids"]) < 100
    assert found["hostname"] == "main1"


def _names_below(folder: Path, paths: list[Path]) -> set[str]:
    """The names directly in *folder* on the way to each of *paths* below it."""
    return {p.relative_to(folder).parts[0] for p in paths if folder in p.parents}


async def test_kernels_of_one_session_share_a_private_network(harness: Harness) -> None:
    session = str(uuid.uuid4())
    kernels = [
        {
            "kernel_id": str(uuid.uuid4()),
            "image": "python",
            "cluster_role": role,
            "cluster_idx": 1,
            "local_rank": rank,
        }
        for rank, role in enumerate(["main", "sub"])
    ]
    main, sub = await harness.client.call(
        "create_kernels", {"session_id": session, "kernels": kernels}, timeout=60
    )
    serve = (
        "import socket, threading\n"
        "srv = socket.create_server(('0.0.0.0', 40123))\n"
        "def answer():\n"
        "    conn, _ = srv.accept()\n"
        "    conn.sendall(b'hello from main')\n"
        "    conn.close()\n"
        "threading.Thread(target=answer, daemon=True).start()\n"
        "print('listening')\n"
    )
    assert await harness.output(main["kernel_id"], serve) == "listening\n"
    dial = (
        "import socket\n"
        "with socket.create_connection(('main1', 40123), timeout=5) as s:\n"
        "    print(s.recv(100).decode())\n"
    )
    assert await harness.output(sub["kernel_id"], dial) == "hello from main\n"
    # Another session's kernel cannot reach it.
    stranger = await harness.create()
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 40123), timeout=2)\n"
        "    print('reached')\n"
        "except OSError:\n"
        "    print('refused')\n"
    )
    assert await harness.output(stranger["kernel_id"], probe) == "refused\n"


async def test_the_agent_forwards_service_ports_into_the_kernel(harness: Harness) -> None:
    kernel = await harness.create()
    kid = kernel["kernel_id"]
    service = next(s for s in kernel["service_ports"] if s["name"] == "http")
    port = service["host_ports"][0]
    await harness.client.call(
        "upload_file", {"kernel_id": kid, "path": "public/big.bin", "data": os.urandom(1 << 20)}
    )
    started = await harness.client.call(
        "start_service", {"kernel_id": kid, "service": "http"}, timeout=60
    )
    assert started["status"] == "started"
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /big.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        with trio.fail_after(20):
            while chunk := await stream.receive_some(65536):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and len(body) == 1 << 20


_FILL = (
    "import errno\n"
    "written = 0\n"
    "try:\n"
    "    with open('fill.bin', 'wb') as f:\n"
    "        for _ in range(400):\n"
    "            f.write(b'x' * (1 << 20))\n"
    "            f.flush()\n"
    "            written += 1 << 20\n"
    "except OSError as exc:\n"
    "    print(errno.errorcode[exc.errno], written >> 20)\n"
    "else:\n"
    "    print('no limit', written >> 20)\n"
)


@pytest.mark.parametrize("kind", ["hostdir", "memory"])
async def test_a_scratch_disk_bomb_stops_at_its_quota(tmp_path: Path, kind: str) -> None:
    config = agent_config(tmp_path, container=f'scratch-type = "{kind}"\nscratch-size = "64m"')
    async with running_agent(config) as h:
        kernel = await h.create(resource_slots={"mem": "512m"})
        kid = kernel["kernel_id"]
        code, megabytes = (await h.output(kid, _FILL)).split()
        assert code in ("ENOSPC", "EDQUOT") and 40 <= int(megabytes) <= 64
        scratch = Path(kernel["scratch_dir"])
        # The host's disk holds at most the quota, and the kernel is still usable.
        assert os.statvfs(scratch).f_blocks * os.statvfs(scratch).f_frsize <= 64 << 20
        assert await h.output(kid, "import os; os.remove('fill.bin'); print('ok')") == "ok\n"
        await h.client.call("destroy_kernel", {"kernel_id": kid}, timeout=60)
        assert not await trio.Path(scratch).exists()
        assert not await trio.Path(f"{scratch}.img").exists()


@pytest.mark.skipif(shutil.which("slirp4netns") is None, reason="slirp4netns is not installed")
async def test_an_outbound_network_still_keeps_the_hosts_loopback_out(tmp_path: Path) -> None:
    config = agent_config(tmp_path, container='kernel-network = "outbound"')
    async with running_agent(config) as h:
        kernel = await h.create()
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        async with listener:
            port = listener.socket.getsockname()[1]
            # 10.0.2.2 is where slirp4netns would forward to the host's loopback.
            code = (
                "import socket\n"
                "print(sorted(n for _, n in socket.if_nameindex()))\n"
                "print(open('/etc/resolv.conf').read().strip())\n"
                f"for host in ('10.0.2.2', '127.0.0.1'):\n"
                "    try:\n"
                f"        socket.create_connection((host, {port}), timeout=3).close()\n"
                "        print('reached', host)\n"
                "    except OSError:\n"
                "        print('refused', host)\n"
            )
            out = await h.output(kernel["kernel_id"], code)
        assert out.splitlines() == [
            "['lo', 'tap0']",
            "nameserver 10.0.2.3",
            "refused 10.0.2.2",
            "refused 127.0.0.1",
        ]
        pinned = str(h.agent.backend.ipc_base / "netns" / kernel["session_id"])  # type: ignore[attr-defined]
        assert _slirp_for(pinned)
        await h.client.call("destroy_kernel", {"kernel_id": kernel["kernel_id"]}, timeout=60)
        assert not _slirp_for(pinned)


def _slirp_for(pinned: str) -> list[int]:
    """Pids of live slirp4netns processes serving the namespace pinned at *pinned*."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"slirp4netns") and pinned.encode() in argv:
                found.append(int(entry.name))
    return found
