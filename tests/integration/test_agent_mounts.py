"""Virtual folders bound into real kernels of a real agent (bubblewrap, the kernel user).

A "volume" here is a folder of ``tmp_path`` holding one folder per vfid, as
the storage proxy's ``vfs`` backend lays it out; the agent gets each folder's
root as a mount's ``host_path``, as the manager passes what ``folder/mount``
answered.  The folders are chowned to the kernel user, as the proxy does
when its ``user``/``group`` are the agents' kernel uid/gid.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bai.common.rpc import RemoteError

from support.agent import AS_ROOT, agent_config, exists, is_root, running_agent

pytestmark = [
    pytest.mark.skipif(not is_root(), reason="the kernel user and bind mounts need root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed"),
]


@dataclass
class Volume:
    root: Path
    uid: int
    gid: int

    def folder(self, name: str) -> tuple[str, Path]:
        """A new folder (vfid, host path) owned by the kernel user, as the proxy makes it."""
        vfid = uuid.uuid4().hex
        path = self.root / vfid[:2] / vfid[2:4] / vfid
        path.mkdir(parents=True)
        os.chown(path, self.uid, self.gid)
        return vfid, path


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    kernel_user = pwd.getpwnam("bai-kernel")
    root = tmp_path / "volume"
    root.mkdir()
    yield Volume(root, kernel_user.pw_uid, kernel_user.pw_gid)


def mount(
    name: str, vfid: str, host_path: Path, mode: str = "rw", kernel_path: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "vfid": vfid,
        "host_path": str(host_path),
        "kernel_path": kernel_path or f"/home/work/{name}",
        "mode": mode,
    }


#: Kernel code printing, as JSON, what each of PATHS holds (text, or the errno of the failure).
_READ = r"""
import json, os
def attempt(path):
    try:
        if os.path.isdir(path):
            return sorted(os.listdir(path))
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return exc.errno
print(json.dumps({p: attempt(p) for p in PATHS}))
"""


def read_code(paths: list[str]) -> str:
    return f"PATHS = {paths!r}\n{_READ}"


#: Kernel code trying every way to change PATH's folder; prints the errno of each try.
_WRITE = r"""
import json, os
def attempt(action):
    try:
        action()
        return 0
    except OSError as exc:
        return exc.errno
found = {
    'create': attempt(lambda: open(os.path.join(PATH, 'new.txt'), 'w').close()),
    'append': attempt(lambda: open(os.path.join(PATH, 'shared.txt'), 'a').close()),
    'unlink': attempt(lambda: os.unlink(os.path.join(PATH, 'shared.txt'))),
    'mkdir': attempt(lambda: os.mkdir(os.path.join(PATH, 'sub'))),
    'chmod': attempt(lambda: os.chmod(PATH, 0o777)),
    'uid': os.getuid(),
}
print(json.dumps(found))
"""


async def test_a_read_write_folder_keeps_what_the_kernel_writes(
    tmp_path: Path, volume: Volume
) -> None:
    vfid, host = volume.folder("data")
    async with running_agent(agent_config(tmp_path)) as harness:
        kernel = await harness.create(mounts=[mount("data", vfid, host)])
        kid = kernel["kernel_id"]
        code = (
            "import os\n"
            "os.makedirs('/home/work/data/results', exist_ok=True)\n"
            "open('/home/work/data/results/out.txt', 'w').write('from the kernel')\n"
            "print(sorted(os.listdir('/home/work')))\n"
        )
        listing = await harness.output(kid, code)
        # The folder lies on top of the scratch folder, beside the kernel's own files.
        assert "'data'" in listing
        written = host / "results" / "out.txt"
        assert written.read_text() == "from the kernel"
        assert (written.stat().st_uid, written.stat().st_gid) == (volume.uid, volume.gid)
        # The scratch folder holds only the mount point, never the folder's files.
        scratch = Path(kernel["scratch_dir"])
        assert not (scratch / "data" / "results").exists()
        # A restart binds the same folder again.
        await harness.client.call("restart_kernel", {"kernel_id": kid}, timeout=60)
        out = await harness.output(kid, "print(open('/home/work/data/results/out.txt').read())")
        assert out == "from the kernel\n"
        await harness.client.call("destroy_kernel", {"kernel_id": kid}, timeout=60)
    # Destroying the kernel leaves the folder's data alone.
    assert written.read_text() == "from the kernel"


async def test_a_read_only_folder_refuses_every_write_even_to_root(
    tmp_path: Path, volume: Volume
) -> None:
    vfid, host = volume.folder("shared")
    (host / "shared.txt").write_text("written by the owner")
    # Wide open on the host: only the read-only mount stands in the way.
    host.chmod(0o777)
    (host / "shared.txt").chmod(0o666)
    async with running_agent(agent_config(tmp_path, container=AS_ROOT)) as harness:
        kernel = await harness.create(mounts=[mount("shared", vfid, host, mode="ro")])
        kid = kernel["kernel_id"]
        out = await harness.output(kid, read_code(["/home/work/shared/shared.txt"]))
        assert json.loads(out) == {"/home/work/shared/shared.txt": "written by the owner"}
        found = json.loads(await harness.output(kid, f"PATH = '/home/work/shared'\n{_WRITE}"))
        assert found.pop("uid") == 0
        erofs = 30
        assert found == dict.fromkeys(("create", "append", "unlink", "mkdir", "chmod"), erofs)
        # Nor can root in the kernel make it writable again.
        remount = await harness.output(
            kid,
            "import subprocess\n"
            "r = subprocess.run(['mount', '-o', 'remount,bind,rw', '/home/work/shared'],"
            " capture_output=True)\n"
            "print(r.returncode)\n",
        )
        assert remount.strip() != "0"
        found = json.loads(await harness.output(kid, f"PATH = '/home/work/shared'\n{_WRITE}"))
        assert found["create"] == erofs
    assert sorted(p.name for p in host.iterdir()) == ["shared.txt"]
    assert (host / "shared.txt").read_text() == "written by the owner"


async def test_links_in_a_folder_lead_nowhere_outside_it(tmp_path: Path, volume: Volume) -> None:
    vfid, host = volume.folder("data")
    other_vfid, other = volume.folder("other")
    (other / "private.txt").write_text("another user's data")
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    # Links the folder's owner (or a kernel earlier) planted, pointing out of the folder.
    links = {
        "shadow": "/etc/shadow",
        "secret": str(secret),
        "other": str(other / "private.txt"),
        "sibling": f"../../{other_vfid[2:4]}/{other_vfid}/private.txt",
        "volume": "../../..",
        "up": "..",
    }
    for name, target in links.items():
        (host / name).symlink_to(target)
    async with running_agent(agent_config(tmp_path)) as harness:
        kernel = await harness.create(mounts=[mount("data", vfid, host, mode="ro")])
        kid = kernel["kernel_id"]
        paths = [f"/home/work/data/{name}" for name in links]
        found = json.loads(await harness.output(kid, read_code(paths)))
        enoent = 2
        for name in ("shadow", "secret", "other", "sibling"):
            assert found[f"/home/work/data/{name}"] == enoent, found
        # ".." of the folder is the kernel's own /home/work, not the volume.
        assert found["/home/work/data/up"] == sorted(os.listdir(kernel["scratch_dir"]))
        assert other_vfid not in json.dumps(found) and "another user" not in json.dumps(found)
        assert "host secret" not in json.dumps(found)


async def test_a_kernel_sees_none_of_the_volume_but_its_folders(
    tmp_path: Path, volume: Volume
) -> None:
    vfid, host = volume.folder("mine")
    _, other = volume.folder("theirs")
    (other / "private.txt").write_text("another user's data")
    (host / "mine.txt").write_text("mine")
    async with running_agent(agent_config(tmp_path)) as harness:
        kernel = await harness.create(mounts=[mount("mine", vfid, host, kernel_path="/data/mine")])
        kid = kernel["kernel_id"]
        paths = [
            "/data",
            "/data/mine",
            str(volume.root),
            str(host),
            str(other),
            str(other / "private.txt"),
            "/mnt",
            "/home/work",
        ]
        found = json.loads(await harness.output(kid, read_code(paths)))
        enoent = 2
        assert found["/data"] == ["mine"]
        assert found["/data/mine"] == ["mine.txt"]
        for path in (str(volume.root), str(host), str(other), str(other / "private.txt"), "/mnt"):
            assert found[path] == enoent, (path, found)
        assert "another user" not in json.dumps(found)


async def test_a_folder_that_cannot_be_bound_fails_the_kernel_with_the_reason(
    tmp_path: Path, volume: Volume
) -> None:
    vfid, host = volume.folder("data")
    link = volume.root / "link"
    link.symlink_to(host)
    cases = {
        str(link): "is a symbolic link",
        str(volume.root / "missing"): "does not exist",
    }
    async with running_agent(agent_config(tmp_path)) as harness:
        for host_path, problem in cases.items():
            with pytest.raises(RemoteError) as info:
                await harness.create(mounts=[mount("data", vfid, Path(host_path))])
            error = info.value
            assert error.remote_type == "KernelCreationFailed"
            ((kid, message),) = error.detail["kernels"].items()
            assert error.detail["reasons"][kid] == "failed-to-start"
            assert f"folder 'data' cannot be mounted: {host_path} {problem}" in message
        # A kernel path over the runtime or elsewhere out of bounds never reaches bwrap.
        with pytest.raises(RemoteError) as info:
            await harness.create(mounts=[mount("data", vfid, host, kernel_path="/etc/x")])
        assert info.value.remote_type == "InvalidRequest"
        assert harness.agent.kernels == {}


async def test_a_link_planted_at_a_mount_point_stops_the_restart(
    tmp_path: Path, volume: Volume, caplog: pytest.LogCaptureFixture
) -> None:
    vfid, host = volume.folder("data")
    async with running_agent(agent_config(tmp_path)) as harness:
        kernel = await harness.create(
            mounts=[mount("data", vfid, host, kernel_path="/home/work/project/data")]
        )
        kid = kernel["kernel_id"]
        # The folder above the mount point lives in the kernel's scratch folder: the
        # kernel moves it away and leaves a link there for the next start to follow.
        code = (
            "import os\n"
            "try:\n"
            "    os.rename('/home/work/project', '/home/work/moved')\n"
            "    os.symlink('/etc', '/home/work/project')\n"
            "    print('planted')\n"
            "except OSError as exc:\n"
            "    print(exc.errno)\n"
        )
        planted = (await harness.output(kid, code)).strip()
        if planted != "planted":
            pytest.skip(f"this kernel cannot move a folder holding a mount point ({planted})")
        with pytest.raises(RemoteError) as info:
            await harness.client.call("restart_kernel", {"kernel_id": kid}, timeout=60)
        assert "restart-failed" in info.value.remote_message
        assert kid not in harness.agent.kernels
    assert "folder 'data' cannot be mounted: /home/work/project is a symbolic link" in caplog.text
    assert not exists("/etc/data")
