"""Virtual folders in a kernel's launch: the contract's checks, the plan, the bwrap argv.

No bwrap and no agent: the argv is only built, and the host-path checks run
on folders and links made in ``tmp_path``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from bai.agent.backends import local, sandbox
from bai.agent.backends.base import BackendError, KernelLaunch
from bai.agent.cgroups import CgroupLimits
from bai.agent.images import Image
from bai.agent.kernel_store import KernelRecord, KernelStore
from bai.agent.launch import plan_launch, plan_record
from bai.common.agent_api import (
    MAX_MOUNTS,
    ClusterInfo,
    CreateKernels,
    InvalidRequest,
    KernelConfig,
    VFolderMount,
    mount_overlap,
    parse,
)
from bai.common.slots import ResourceSlot

SESSION = "00000000-0000-0000-0000-0000000000aa"
KID = uuid.UUID("3f2c1b9e-5a8d-4c1e-9f00-1234567890ab")
VFID = "0123456789abcdef0123456789abcdef"
IMAGE = Image(
    name="python:3.11",
    aliases=("python",),
    architecture="x86_64",
    labels={},
    runtime_type="python",
    runtime_path="/opt/py/bin/python3",
)


def _mount(name: str = "data", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "vfid": VFID,
        "host_path": f"/vol/local/{name.lstrip('.')}",
        "kernel_path": f"/home/work/{name}",
        "mode": "rw",
        **fields,
    }


def _config(mounts: list[dict[str, Any]]) -> KernelConfig:
    return parse(
        {
            "session_id": SESSION,
            "kernels": [{"kernel_id": str(KID), "image": "python", "mounts": mounts}],
        },
        CreateKernels,
    ).kernels[0]


def _refusal(mounts: list[dict[str, Any]]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        _config(mounts)
    return caught.value


# ------------------------------------------------------------------ the contract


def test_a_kernel_has_no_mounts_unless_asked() -> None:
    assert parse({"kernel_id": str(KID), "image": "python"}, KernelConfig).mounts == []


def test_mounts_parse_into_checked_structs() -> None:
    config = _config([_mount("data", mode="ro"), _mount(".local"), _mount("m", kernel_path="/mnt")])
    assert [(m.name, m.kernel_path, m.mode) for m in config.mounts] == [
        ("data", "/home/work/data", "ro"),
        (".local", "/home/work/.local", "rw"),
        ("m", "/mnt", "rw"),
    ]
    assert config.mounts[0] == VFolderMount(
        name="data",
        vfid=VFID,
        host_path="/vol/local/data",
        kernel_path="/home/work/data",
        mode="ro",
    )


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"host_path": "vol/data"}, "host_path"),
        ({"host_path": "/vol/../etc"}, "host_path"),
        ({"host_path": "/vol/./data"}, "host_path"),
        ({"host_path": "/vol//data"}, "host_path"),
        ({"host_path": "//vol/data"}, "host_path"),
        ({"host_path": "/vol/data/"}, "host_path"),
        ({"host_path": "/vol/da\x00ta"}, "host_path"),
        ({"host_path": "/"}, "host_path"),
        ({"host_path": "/" + "x" * 4096}, "host_path"),
        ({"kernel_path": "data"}, "kernel_path"),
        ({"kernel_path": "/home/work"}, "kernel_path"),
        ({"kernel_path": "/home/work/"}, "kernel_path"),
        ({"kernel_path": "/home/work/a/../b"}, "kernel_path"),
        ({"kernel_path": "/home/work//data"}, "kernel_path"),
        ({"kernel_path": "/etc/cron.d"}, "kernel_path"),
        ({"kernel_path": "/usr/lib"}, "kernel_path"),
        ({"kernel_path": "/home/other"}, "kernel_path"),
        ({"kernel_path": "/datax"}, "kernel_path"),
        ({"mode": "wd"}, "mode"),
        ({"vfid": "not-a-vfid"}, "vfid"),
        ({"vfid": VFID.upper()}, "vfid"),
        ({"name": ""}, "name"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_mount_is_refused_naming_the_field(changes: dict[str, Any], where: str) -> None:
    error = _refusal([_mount(), {**_mount("b"), **changes}])
    assert "mounts[1]" in str(error) and where in str(error)


def test_overlapping_kernel_paths_are_refused() -> None:
    same = _refusal([_mount("a"), _mount("b", kernel_path="/home/work/a")])
    assert "mounts[1].kernel_path" in str(same)
    inside = _refusal([_mount("a", kernel_path="/data"), _mount("b", kernel_path="/data/b")])
    assert "overlaps" in str(inside)
    around = _refusal([_mount("a", kernel_path="/mnt/x/y"), _mount("b", kernel_path="/mnt/x")])
    assert "overlaps" in str(around)
    # Sharing a prefix of characters is not overlapping.
    assert len(_config([_mount("a"), _mount("ab")]).mounts) == 2
    assert mount_overlap(["/data/a", "/data/ab", "/mnt"]) is None
    assert mount_overlap(["/mnt", "/data/a", "/data/a/b"]) == (1, 2)


def test_the_number_of_mounts_is_bounded() -> None:
    mounts = [_mount(f"f{i}") for i in range(MAX_MOUNTS)]
    assert len(_config(mounts).mounts) == MAX_MOUNTS
    assert "mounts" in str(_refusal([*mounts, _mount("one-more")]))


# ------------------------------------------------------------------ the plan


def _launch(config: KernelConfig) -> KernelLaunch:
    return plan_launch(
        session_id=SESSION,
        config=config,
        cluster=ClusterInfo(size=1, hosts=["main1"], replicas={"main": 1}),
        image=IMAGE,
        allocation={},
        occupied=ResourceSlot(),
        port_map={2200: 30001, 7681: 30002},
        plugins={},
        pids_max=512,
        peers=(),
        bootstrap_timeout=10.0,
        host_cpus=4,
    )


def test_the_launch_and_the_record_carry_the_mounts(tmp_path: Path) -> None:
    config = _config([_mount("data", mode="ro"), _mount("out", kernel_path="/data/out")])
    launch = _launch(config)
    assert launch.mounts == tuple(config.mounts)
    record = plan_record(
        session_id=SESSION,
        config=config,
        image=IMAGE,
        launch=launch,
        allocation={},
        occupied=ResourceSlot(),
        port_map={2200: 30001, 7681: 30002},
        created_at=0.0,
    )
    assert record.mounts == list(config.mounts)
    # The record keeps them across an agent restart, for the checks before a restart.
    store = KernelStore(tmp_path / "kernels")
    store.prepare()
    store.save(record)
    (loaded,) = store.load()
    assert loaded.mounts == list(config.mounts)


# ------------------------------------------------------------------ the argv


def _spec(mounts: list[dict[str, Any]], **changes: Any) -> sandbox.Sandbox:
    fields: dict[str, Any] = {
        "bwrap": "/usr/bin/bwrap",
        "etc_base": Path("/tmp/ipc/etc/_common"),
        "etc_dir": Path("/tmp/ipc/etc/k1"),
        "scratch_dir": Path("/srv/scratch/k1"),
        "sock_dir": Path("/tmp/ipc/k1"),
        "runtime_paths": [Path("/srv/app/.venv")],
        "mounts": _config(mounts).mounts,
        **changes,
    }
    return sandbox.Sandbox(**fields)


def _binds(argv: list[str]) -> list[tuple[str, str, str]]:
    options = {"--ro-bind", "--ro-bind-try", "--bind", "--dev-bind-try", "--symlink"}
    return [(a, argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in options]


def test_each_folder_root_is_bound_at_its_path_read_only_or_read_write() -> None:
    argv = sandbox.command(
        _spec(
            [
                _mount("data", mode="ro"),
                _mount(".local"),
                _mount("out", kernel_path="/data/out"),
                _mount("ref", kernel_path="/mnt/ref/v1", mode="ro"),
            ]
        ),
        ["python"],
    )
    binds = _binds(argv)
    assert ("--ro-bind", "/vol/local/data", "/home/work/data") in binds
    assert ("--bind", "/vol/local/local", "/home/work/.local") in binds
    assert ("--bind", "/vol/local/out", "/data/out") in binds
    assert ("--ro-bind", "/vol/local/ref", "/mnt/ref/v1") in binds
    # Only the folders' roots: never the volume or anything above it.
    sources = {source for _, source, _ in binds}
    assert not sources & {"/vol", "/vol/local", "/"}
    # Read-write: the scratch, the socket folder and the rw folders, nothing else.
    assert {dest for kind, _, dest in binds if kind == "--bind"} == {
        "/home/work",
        "/home/work/.local",
        "/data/out",
        "/tmp/ipc/k1",
    }
    assert argv[-1] == "python"


def test_folders_below_home_work_are_bound_after_the_scratch_folder() -> None:
    argv = sandbox.command(_spec([_mount("data"), _mount("x", kernel_path="/home/work/a/b")]), [])
    scratch = argv.index("/srv/scratch/k1")
    assert argv[scratch - 1 : scratch + 2] == ["--bind", "/srv/scratch/k1", "/home/work"]
    assert argv.index("/vol/local/data") > scratch
    assert argv.index("/vol/local/x") > scratch
    # The folder between the scratch folder and a deeper mount point is made
    # traversable, after the scratch bind (it lives in the scratch folder).
    made = [argv[i + 3] for i, a in enumerate(argv) if a == "--perms" and argv[i + 1] == "0755"]
    assert "/home/work/a" in made
    assert argv.index("/home/work/a") > scratch
    # Fresh parents outside the scratch folder come from the sandbox's own root.
    argv = sandbox.command(_spec([_mount("out", kernel_path="/data/out")]), [])
    assert argv.index("/data") < argv.index("/vol/local/out")


def test_the_argv_without_mounts_is_unchanged() -> None:
    base = _spec([])
    assert sandbox.command(base, ["x"]) == sandbox.command(
        sandbox.Sandbox(
            bwrap=base.bwrap,
            etc_base=base.etc_base,
            etc_dir=base.etc_dir,
            scratch_dir=base.scratch_dir,
            sock_dir=base.sock_dir,
            runtime_paths=base.runtime_paths,
        ),
        ["x"],
    )


@pytest.mark.parametrize(
    ("kernel_path", "changes"),
    [
        # Over or inside the runtime, the socket folder or a device.
        ("/data", {"runtime_paths": [Path("/data/venv")]}),
        ("/data/venv/lib", {"runtime_paths": [Path("/data/venv")]}),
        ("/mnt", {"sock_dir": Path("/mnt/ipc/k1")}),
        ("/mnt/ipc/k1", {"sock_dir": Path("/mnt/ipc/k1")}),
        ("/mnt/gpu", {"devices": ["/mnt/gpu/dev0"]}),
    ],
)
def test_a_folder_cannot_cover_what_the_sandbox_binds(
    kernel_path: str, changes: dict[str, Any]
) -> None:
    spec = _spec([_mount("data", kernel_path=kernel_path)], **changes)
    with pytest.raises(sandbox.MountRefused, match="'data' cannot be mounted"):
        sandbox.command(spec, [])


# ------------------------------------------------------------------ the host checks


def test_a_host_path_must_be_a_folder_and_not_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "vol" / "f1"
    folder.mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(folder)
    assert local._source_problem(str(folder)) is None
    assert "symbolic link" in str(local._source_problem(str(tmp_path / "link")))
    assert "not a folder" in str(local._source_problem(str(tmp_path / "file")))
    assert "does not exist" in str(local._source_problem(str(tmp_path / "missing")))


def test_a_mount_point_in_the_scratch_folder_must_not_be_a_link_or_file(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # Missing (bwrap makes it) or a folder: fine; outside /home/work: not the scratch's business.
    assert local._mount_point_problem(scratch, "/home/work/data") is None
    (scratch / "a").mkdir()
    assert local._mount_point_problem(scratch, "/home/work/a/b") is None
    assert local._mount_point_problem(scratch, "/data/x") is None
    # A link left by the kernel, anywhere on the way.
    (scratch / "data").symlink_to("/etc")
    (scratch / "a" / "b").symlink_to("/etc")
    (scratch / "c").symlink_to(scratch / "a")
    assert "/home/work/data is a symbolic link" in str(
        local._mount_point_problem(scratch, "/home/work/data")
    )
    assert "/home/work/a/b is a symbolic link" in str(
        local._mount_point_problem(scratch, "/home/work/a/b")
    )
    assert "/home/work/c is a symbolic link" in str(
        local._mount_point_problem(scratch, "/home/work/c/d")
    )
    (scratch / "bootstrap.sh").write_text("true")
    assert "is a file" in str(local._mount_point_problem(scratch, "/home/work/bootstrap.sh"))


def _backend(tmp_path: Path) -> local.LocalBackend:
    return local.LocalBackend(
        agent_id="i-test",
        scratch_root=tmp_path / "scratch",
        ipc_base=tmp_path / "ipc",
        log_dir=tmp_path / "logs",
        use_bwrap=False,
    )


def _record(tmp_path: Path, mounts: list[VFolderMount], argv: list[str]) -> KernelRecord:
    return KernelRecord(
        kernel_id=str(KID),
        session_id=SESSION,
        status="PREPARING",
        created_at=0.0,
        image=IMAGE.name,
        architecture=IMAGE.architecture,
        runtime_type=IMAGE.runtime_type,
        scratch_dir=str(tmp_path / "scratch" / str(KID)),
        argv=argv,
        mounts=mounts,
    )


def test_a_host_without_a_sandbox_refuses_mounts(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    mounts = _config([_mount("data", mode="ro")]).mounts
    launch = KernelLaunch(
        image=IMAGE, environ={}, limits=CgroupLimits(pids=64), mounts=tuple(mounts)
    )
    record = _record(tmp_path, mounts, [])
    with pytest.raises(BackendError, match="no sandbox") as caught:
        backend._prepare(record, launch)
    assert "read-only" in str(caught.value)
    # Nothing was made for the kernel.
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())
    # Nor does a restart start it (a record from an agent that had one).
    with pytest.raises(BackendError, match="no sandbox"):
        trio.run(backend.spawn, _record(tmp_path, mounts, ["/usr/bin/bwrap", "python"]))


def test_a_start_checks_every_folder_again(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    backend.bwrap = "/usr/bin/bwrap"
    (tmp_path / "scratch" / str(KID)).mkdir(parents=True)
    target = tmp_path / "vol" / "data"
    target.mkdir(parents=True)
    (tmp_path / "vol" / "link").symlink_to(target)
    good = VFolderMount(
        name="data", vfid=VFID, host_path=str(target), kernel_path="/home/work/data", mode="rw"
    )
    backend._check_mounts(_record(tmp_path, [good], ["/usr/bin/bwrap"]))
    linked = VFolderMount(
        name="link",
        vfid=VFID,
        host_path=str(tmp_path / "vol" / "link"),
        kernel_path="/home/work/link",
        mode="ro",
    )
    with pytest.raises(BackendError, match=r"folder 'link' cannot be mounted: .* symbolic link"):
        backend._check_mounts(_record(tmp_path, [good, linked], ["/usr/bin/bwrap"]))
