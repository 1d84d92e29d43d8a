"""Upload, download and list files of a kernel's /home/work, and nothing outside it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from test_agent_support import Harness, agent_config, read, running_agent

from bai.common.rpc import RemoteError


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_agent(agent_config(tmp_path), max_upload_size=1024 * 1024) as h:
        yield h


async def test_upload_list_download_round_trip(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    call = harness.client.call
    done = await call(
        "upload_file", {"kernel_id": kid, "path": "src/app/main.py", "data": b"x=1\n"}
    )
    assert done == {"path": "/home/work/src/app/main.py", "size": 4}
    await call("upload_file", {"kernel_id": kid, "path": "/home/work/notes.txt", "data": b"hi"})
    # The kernel sees what was uploaded, and the agent sees what the kernel writes.
    assert await harness.output(kid, "print(open('src/app/main.py').read(), end='')") == "x=1\n"
    await harness.output(kid, "open('src/out.bin', 'wb').write(bytes(range(256)))")

    listing = await call("list_files", {"kernel_id": kid, "path": "src"})
    assert listing["abspath"] == "/home/work/src"
    assert listing["errors"] == ""
    entries = {e["filename"]: e for e in json.loads(listing["files"])}
    assert set(entries) == {"app", "out.bin"}
    assert entries["app"]["mode"].startswith("d")
    assert entries["out.bin"]["size"] == 256
    root = json.loads((await call("list_files", {"kernel_id": kid}))["files"])
    assert {e["filename"] for e in root} == {"src", "notes.txt"}

    data = await call("download_file", {"kernel_id": kid, "path": "src"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["src", "src/app", "src/app/main.py", "src/out.bin"]
        member = tar.extractfile("src/out.bin")
        assert member is not None and member.read() == bytes(range(256))


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "/etc/passwd", "src/../../x", "/home/workx/a", "a\x00b"]
)
async def test_paths_outside_home_work_are_refused(harness: Harness, path: str) -> None:
    kid = (await harness.create())["kernel_id"]
    for method, args in (
        ("upload_file", {"path": path, "data": b"evil"}),
        ("download_file", {"path": path}),
        ("list_files", {"path": path}),
    ):
        with pytest.raises(RemoteError) as info:
            await harness.client.call(method, {"kernel_id": kid, **args})
        assert info.value.remote_type == "ScratchPathError", method


async def test_symlinks_made_inside_the_kernel_lead_nowhere(
    harness: Harness, tmp_path: Path
) -> None:
    kid = (await harness.create())["kernel_id"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    await harness.output(
        kid, f"import os; os.symlink({str(outside)!r}, 'link'); os.symlink('/etc/passwd', 'pw')"
    )
    for method, args in (
        ("upload_file", {"path": "link/secret", "data": b"overwritten"}),
        ("upload_file", {"path": "pw", "data": b"overwritten"}),
        ("download_file", {"path": "link/secret"}),
        ("list_files", {"path": "link"}),
    ):
        with pytest.raises(RemoteError) as info:
            await harness.client.call(method, {"kernel_id": kid, **args})
        assert info.value.remote_type == "ScratchPathError", (method, args)
    assert read(outside / "secret") == "host secret"
    assert "overwritten" not in read("/etc/passwd")
    # A link downloaded is a link in the archive, never its target's content.
    data = await harness.client.call("download_file", {"kernel_id": kid, "path": "pw"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("pw")
        assert member.issym() and member.linkname == "/etc/passwd"


async def test_missing_files_and_size_limits(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    call = harness.client.call
    with pytest.raises(RemoteError) as info:
        await call("download_file", {"kernel_id": kid, "path": "nope.txt"})
    assert info.value.remote_type == "KernelFileError"
    with pytest.raises(RemoteError) as info:
        await call("list_files", {"kernel_id": kid, "path": "nope"})
    assert info.value.remote_type == "KernelFileError"
    with pytest.raises(RemoteError) as info:
        await call(
            "upload_file", {"kernel_id": kid, "path": "big", "data": b"x" * (1024 * 1024 + 1)}
        )
    assert info.value.remote_type == "FileTooLarge"
    assert json.loads((await call("list_files", {"kernel_id": kid}))["files"]) == []
