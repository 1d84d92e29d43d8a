"""The official client's ``vfolder`` commands and ``run -m`` against ``bai up``, unchanged.

One embedded cluster per test, the client's CLI as a separate process
(:mod:`support.official`).  These are the commands issue #10 names: create,
list, list-hosts, info, upload, download, ls, mkdir, rename-file, mv, rm,
invite, invitations (accepting), share, unshare, clone, delete, ``admin
vfolder list`` and ``run -m``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bai.embedded import EmbeddedHandle, Keypair

from support.official import embedded_cluster, official, official_cli_path

HOST = "local:local"


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


def keypair_of(handle: EmbeddedHandle, email: str) -> Keypair:
    return next(k for k in handle.keypairs if k.email == email)


async def ok(cli: Path, handle: EmbeddedHandle, cwd: Path, *args: str, **kw: object) -> str:
    """Run a command that must succeed; its stdout and stderr together."""
    code, out, err = await official(cli, handle, cwd, *args, **kw)  # type: ignore[arg-type]
    assert code == 0, (args, out, err)
    assert "Traceback" not in err, (args, err)
    return out + err


async def run_with(
    cli: Path, handle: EmbeddedHandle, cwd: Path, folder: str, code: str, **kw: object
) -> str:
    """``backend.ai run --rm -m FOLDER -c CODE python``, which must succeed; its output."""
    return await ok(cli, handle, cwd, "run", "--rm", "-m", folder, "-c", code, "python", **kw)


async def test_folder_and_file_commands(official_cli: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    async with embedded_cluster(tmp_path / "data") as up:
        hosts = await ok(official_cli, up, work, "vfolder", "list-hosts")
        assert f"Default vfolder host: {HOST}" in hosts
        assert 'Virtual folder "data1" is created.' in await ok(
            official_cli, up, work, "vfolder", "create", "data1", HOST
        )
        assert "data1" in await ok(official_cli, up, work, "vfolder", "list")
        info = await ok(official_cli, up, work, "vfolder", "info", "data1")
        assert 'Virtual folder "data1"' in info and "- Number of files: 0" in info

        payload = os.urandom(3 * 1024 * 1024 + 17)
        (work / "blob.bin").write_bytes(payload)
        await ok(official_cli, up, work, "vfolder", "upload", "data1", "blob.bin")
        assert "blob.bin" in await ok(official_cli, up, work, "vfolder", "ls", "data1")
        await ok(official_cli, up, work, "vfolder", "mkdir", "data1", "sub")
        await ok(official_cli, up, work, "vfolder", "mv", "data1", "blob.bin", "sub/blob.bin")
        await ok(
            official_cli, up, work, "vfolder", "rename-file", "data1", "sub/blob.bin", "b2.bin"
        )
        listing = await ok(official_cli, up, work, "vfolder", "ls", "data1", "sub")
        assert "b2.bin" in listing and "blob.bin" not in listing

        down = tmp_path / "down"
        (down / "sub").mkdir(parents=True)
        await ok(official_cli, up, down, "vfolder", "download", "data1", "sub/b2.bin")
        assert (down / "sub" / "b2.bin").read_bytes() == payload

        await ok(official_cli, up, work, "vfolder", "rm", "data1", "sub/b2.bin", stdin=b"y\n")
        assert "b2.bin" not in await ok(official_cli, up, work, "vfolder", "ls", "data1", "sub")

        await ok(
            official_cli, up, work, "vfolder", "update-options", "data1", "--set-cloneable", "true"
        )
        assert "complete" in await ok(
            official_cli, up, work, "vfolder", "clone", "data1", "data2", HOST
        )
        assert "data2" in await ok(official_cli, up, work, "admin", "vfolder", "list")
        await ok(official_cli, up, work, "vfolder", "delete", "data2")
        assert "data2" not in await ok(official_cli, up, work, "vfolder", "list")


async def test_sharing_commands_and_a_read_only_mount_that_survives_a_restart(
    official_cli: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    data = tmp_path / "data"
    async with embedded_cluster(data) as up:
        user = keypair_of(up, "user@lablup.com")
        await ok(official_cli, up, work, "vfolder", "create", "shared1", HOST)
        written = await run_with(
            official_cli,
            up,
            work,
            "shared1",
            "open('/home/work/shared1/note.txt', 'w').write('from the owner'); print('written')",
        )
        assert "written" in written

        invited = await ok(
            official_cli, up, work, "vfolder", "invite", "shared1", "user@lablup.com", "-p", "ro"
        )
        assert "Invitation sent" in invited or "user@lablup.com" in invited
        listing = await ok(
            official_cli, up, work, "vfolder", "invitations", keypair=user, stdin=b"1\na\n"
        )
        assert "shared1" in listing

        probe = (
            "print(open('/home/work/shared1/note.txt').read())\n"
            "try:\n"
            "    open('/home/work/shared1/other.txt', 'w').write('x')\n"
            "except OSError as e:\n"
            "    print('refused', type(e).__name__)\n"
            "else:\n"
            "    print('WROTE')\n"
        )
        out = await run_with(official_cli, up, work, "shared1", probe, keypair=user)
        assert "from the owner" in out and "refused" in out and "WROTE" not in out

        # A project folder shared with a project member, then unshared.
        await ok(official_cli, up, work, "vfolder", "create", "proj1", HOST, "-g", "default")
        shared = await ok(
            official_cli, up, work, "vfolder", "share", "proj1", "user@lablup.com", "-p", "ro"
        )
        assert "user@lablup.com" in shared
        unshared = await ok(
            official_cli, up, work, "vfolder", "unshare", "proj1", "user@lablup.com"
        )
        assert "user@lablup.com" in unshared

    async with embedded_cluster(data) as up:
        down = tmp_path / "after-restart"
        down.mkdir()
        await ok(official_cli, up, down, "vfolder", "download", "shared1", "note.txt")
        assert (down / "note.txt").read_text() == "from the owner"
