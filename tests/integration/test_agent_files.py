"""Upload, download and list files of a kernel's /home/work, and nothing outside it."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
from pathlib import Path
from typing import Any

import pytest
import trio

from bai.agent import supervisor
from bai.common.events import AgentKernelTerminated
from bai.common.rpc import RemoteError

from support.agent import (
    HOSTILE_FILES,
    HOSTILE_KINDS,
    Harness,
    agent_config,
    entries,
    exists,
    read,
    running_agent,
)


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
    # A link inside a downloaded folder is a link in the archive, never its target's content.
    await harness.output(kid, "import os; os.mkdir('d'); os.symlink('/etc/passwd', 'd/pw')")
    data = await harness.client.call("download_file", {"kernel_id": kid, "path": "d"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("d/pw")
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


async def refused(harness: Harness, method: str, args: dict[str, Any]) -> RemoteError:
    """The error *method* answers, which must come at once."""
    with trio.fail_after(5), pytest.raises(RemoteError) as info:
        await harness.client.call(method, args)
    return info.value


async def test_special_files_are_refused_at_once_by_every_file_call(
    harness: Harness, tmp_path: Path
) -> None:
    kid = (await harness.create())["kernel_id"]
    outside = tmp_path / "outside"
    outside.mkdir()
    await harness.output(kid, HOSTILE_FILES.format(outside=str(outside)))
    for name, kind in HOSTILE_KINDS.items():
        for method, args in (
            ("upload_file", {"path": name, "data": b"x"}),
            ("upload_file", {"path": f"{name}/new", "data": b"x"}),
            ("upload_files", {"files": [{"path": name, "data": b"x"}]}),
            ("download_file", {"path": name}),
            ("download_file", {"path": f"{name}/passwd"}),
            ("list_files", {"path": name}),
        ):
            error = await refused(harness, method, {"kernel_id": kid, **args})
            assert error.remote_type == "ScratchPathError", (method, args, error)
            assert f"'{name}' is {kind}" in error.remote_message
            assert error.detail["field"] == "path"
    assert entries(outside) == []
    # The kernel's own view of its files is intact: nothing was replaced or followed.
    listing = json.loads((await harness.client.call("list_files", {"kernel_id": kid}))["files"])
    assert {e["filename"]: e["mode"][0] for e in listing} == {
        "fifo": "p",
        "sock": "s",
        "shadow": "l",
        "outside": "l",
    }


async def test_a_file_swapped_for_a_fifo_never_blocks_a_call(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    await harness.output(
        kid,
        "import os, threading\n"
        "os.mkdir('d')\n"
        "def swap():\n"
        "    while not os.path.exists('stop'):\n"
        "        open('d/f.tmp', 'w').write('data'); os.replace('d/f.tmp', 'd/f')\n"
        "        os.mkfifo('d/p'); os.replace('d/p', 'd/f')\n"
        "threading.Thread(target=swap, daemon=True).start()",
    )
    answered: set[str] = set()
    with trio.fail_after(20):
        for _ in range(100):
            for method, args in (
                ("upload_file", {"path": "d/f", "data": b"mine"}),
                ("download_file", {"path": "d/f"}),
                ("download_file", {"path": "d"}),
                ("list_files", {"path": "d"}),
            ):
                try:
                    await harness.client.call(method, {"kernel_id": kid, **args})
                except RemoteError as exc:
                    assert exc.remote_type in ("ScratchPathError", "KernelFileError"), exc
                    answered.add(exc.remote_type)
                else:
                    answered.add("ok")
    await harness.client.call("upload_file", {"kernel_id": kid, "path": "stop", "data": b""})
    assert {"ok", "ScratchPathError"} <= answered


async def test_a_refused_upload_of_several_files_writes_none(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    await harness.output(kid, "import os; os.mkfifo('fifo'); open('kept.txt', 'w').write('old')")
    for bad in ("fifo", "../bad", "x" * 256):
        error = await refused(
            harness,
            "upload_files",
            {
                "kernel_id": kid,
                "files": [
                    {"path": "new/good.txt", "data": b"good"},
                    {"path": "kept.txt", "data": b"new"},
                    {"path": bad, "data": b"bad"},
                ],
            },
        )
        assert error.remote_type == "ScratchPathError", error
        assert await harness.output(kid, "import os; print(sorted(os.listdir()))") == (
            "['fifo', 'kept.txt']\n"
        )
        assert await harness.output(kid, "print(open('kept.txt').read())") == "old\n"
    written = await harness.client.call(
        "upload_files",
        {
            "kernel_id": kid,
            "files": [
                {"path": "new/good.txt", "data": b"good"},
                {"path": "kept.txt", "data": b"new"},
            ],
        },
    )
    assert written == [
        {"path": "/home/work/new/good.txt", "size": 4},
        {"path": "/home/work/kept.txt", "size": 3},
    ]
    assert await harness.output(kid, "print(open('kept.txt').read())") == "new\n"


async def test_forty_hostile_uploads_leave_the_agent_usable(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path)) as harness:
        before = harness.agent.agent_info()["occupied_slots"]
        hostile = (await harness.create(resource_slots={"cpu": "1", "mem": "128m"}))["kernel_id"]
        other = (await harness.create(resource_slots={"cpu": "1", "mem": "128m"}))["kernel_id"]
        await harness.output(hostile, "import os; os.mkfifo('f')")
        refusals: list[str] = []

        async def upload() -> None:
            error = await refused(
                harness, "upload_file", {"kernel_id": hostile, "path": "f", "data": b"x"}
            )
            refusals.append(error.remote_type)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(upload)
                # Other kernels and other calls go on meanwhile.
                assert await harness.output(other, "print(6 * 7)") == "42\n"
                await harness.client.call(
                    "upload_file", {"kernel_id": other, "path": "a", "data": b"1"}
                )
                listing = await harness.client.call("list_files", {"kernel_id": other})
                assert [e["filename"] for e in json.loads(listing["files"])] == ["a"]
        assert refusals == ["ScratchPathError"] * 40
        assert await harness.output(hostile, "print('still here')") == "still here\n"
        for kid in (hostile, other):
            with trio.fail_after(10):
                await harness.client.call("destroy_kernel", {"kernel_id": kid})
        assert harness.agent.agent_info()["occupied_slots"] == before
        again = await harness.create(resource_slots={"cpu": "1", "mem": "128m"})
        assert again["status"] == "RUNNING"
        # A graceful stop ends within its bound, whatever the kernels did.
        await harness.output(again["kernel_id"], "import os; os.mkfifo('f')")
        stopping = trio.current_time()
    assert trio.current_time() - stopping < 10


async def test_a_kernel_whose_cleanup_runs_out_of_time_still_frees_its_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "CLEANUP_TIMEOUT", 1.0)
    config = agent_config(tmp_path)
    async with running_agent(config) as harness:
        before = harness.agent.agent_info()["occupied_slots"]
        kernel = await harness.create(resource_slots={"cpu": "1", "mem": "128m"})
        # Take every thread of the shared pool, as forty blocked uploads once did,
        # so that no step of the kernel's cleanup can run.
        pool = trio.to_thread.current_default_thread_limiter()
        held: list[object] = []
        while pool.available_tokens:
            held.append(object())
            pool.acquire_on_behalf_of_nowait(held[-1])
        try:
            os.killpg(kernel["pid"], signal.SIGKILL)
            with trio.fail_after(5):
                ended = await harness.events.wait_for(
                    lambda e: (
                        isinstance(e, AgentKernelTerminated)
                        and str(e.kernel_id) == kernel["kernel_id"]
                    )
                )
            assert harness.agent.agent_info()["occupied_slots"] == before
        finally:
            for token in held:
                pool.release_on_behalf_of(token)
        assert isinstance(ended, AgentKernelTerminated)
        assert (await harness.create(resource_slots={"cpu": "1"}))["status"] == "RUNNING"
        assert exists(kernel["scratch_dir"])
    # What the cut-off cleanup left behind goes at the agent's next start.
    async with running_agent(config):
        assert not exists(kernel["scratch_dir"])
