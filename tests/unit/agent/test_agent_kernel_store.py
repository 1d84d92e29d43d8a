"""The agent's kernel store on disk survives crashes and bad files."""

from __future__ import annotations

import stat
from pathlib import Path

from bai.agent.kernel_store import KernelRecord, KernelStore

KID = "3f2c1b9e-5a8d-4c1e-9f00-1234567890ab"


def _record(**changes: object) -> KernelRecord:
    record = KernelRecord(
        kernel_id=KID,
        session_id="00000000-0000-0000-0000-000000000001",
        status="RUNNING",
        created_at=1.5,
        image="python:3.11",
        architecture="x86_64",
        runtime_type="python",
        occupied_slots={"cpu": "1"},
        allocations={"cpu": {"cpu": {"0": "1"}}},
        cgroup={"memory": "/sys/fs/cgroup/memory/bai/x"},
        pid=1234,
        pid_start=99,
        service_ports=[{"name": "http", "protocol": "http", "host_ports": [30000]}],
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def test_round_trip_and_replace(tmp_path: Path) -> None:
    store = KernelStore(tmp_path / "kernels")
    store.prepare()
    store.save(_record(status="CREATING"))
    store.save(_record())
    (loaded,) = store.load()
    assert loaded == _record()
    store.remove(KID)
    store.remove(KID)  # already gone: no error
    assert store.load() == []


def test_torn_and_corrupt_files_do_not_stop_the_agent(tmp_path: Path) -> None:
    store = KernelStore(tmp_path)
    store.save(_record())
    # A write interrupted before its rename leaves a .tmp next to the good file.
    (tmp_path / f"{KID}.tmp").write_bytes(b'{"kernel_id": "half')
    other = "11111111-2222-3333-4444-555555555555"
    (tmp_path / f"{other}.json").write_bytes(b"\x00garbage")
    mislabelled = "99999999-2222-3333-4444-555555555555"
    (tmp_path / f"{mislabelled}.json").write_bytes(KernelStore.encode(_record()))
    assert [r.kernel_id for r in store.load()] == [KID]
    assert not (tmp_path / f"{KID}.tmp").exists()
    assert (tmp_path / f"{other}.corrupt").exists()
    assert (tmp_path / f"{mislabelled}.corrupt").exists()


def test_a_missing_folder_holds_no_kernels(tmp_path: Path) -> None:
    assert KernelStore(tmp_path / "never-made").load() == []


def test_records_are_the_agent_users_only(tmp_path: Path) -> None:
    # A record holds the runner's environment: the session's variables.
    folder = tmp_path / "kernels"
    folder.mkdir(mode=0o755)
    earlier = folder / f"{KID}.json"
    earlier.write_bytes(KernelStore.encode(_record(environ={"TOKEN": "s3cret"})))
    earlier.chmod(0o644)
    store = KernelStore(folder)
    store.prepare()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(earlier.stat().st_mode) == 0o600
    other = "11111111-2222-3333-4444-555555555555"
    store.save(_record(kernel_id=other))
    assert stat.S_IMODE((folder / f"{other}.json").stat().st_mode) == 0o600
