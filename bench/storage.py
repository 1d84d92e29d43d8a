"""Upload and download throughput of a virtual folder, beside ``cp`` of the same file.

Runs ``bai manager`` (SQLite) and ``bai storage-proxy`` (one ``vfs`` volume
in a temporary folder) as separate processes, creates a folder through the
manager, then moves one file of ``--size`` MiB (default 1024) with the SDK
(:class:`bai.client.vfolder.VFolder`): the upload goes over tus
(``sendfile`` from the file in the SDK, ``splice`` into the staging file on
the proxy) and the download streams (``sendfile`` on the proxy, ``splice``
into the file in the SDK's bulk client), both straight to the proxy's
client-facing API.  In the same
run it times ``cp`` of the same file to and from the volume's disk.

Prints ONE JSON line:

* ``upload_mib_s`` / ``download_mib_s``: medians over ``--rounds`` rounds;
* ``cp_in_mib_s`` / ``cp_out_mib_s``: ``cp`` into the volume and out of it;
* ``upload_vs_cp`` / ``download_vs_cp``: the median of each round's ratio;
* ``manager_cpu_s`` / ``proxy_cpu_s``: CPU seconds the manager and the proxy
  processes used during the transfers (the manager only hands out tokens,
  so it should stay near zero);
* ``size_mib``, ``rounds``.

Goal: both ratios >= 0.5.  Usage: ``python bench/storage.py [--size MIB]
[--rounds N] [--settle S]``.  With ``--settle S`` each timed step (upload,
download, each ``cp``) starts only after S seconds of quiet: on a VM whose
disk is a file of its host, 1 GiB written right after another 1 GiB is
written at the host disk's sustained rate (a third of the first's on the
machine of ``bench/README.md``), so without a pause each step's figure
depends on how fast the step before it was.  Needs a few times ``--size``
of free disk in the temporary folder (``TMPDIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bai.client import APIClient, APIConfig
from bai.client.vfolder import VFolder
from bai.common.storage_api import proxy_config_items

BAI = Path(sys.executable).with_name("bai")
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _write_configs(root: Path) -> tuple[Path, Path, str, dict[str, str]]:
    manager_port, proxy_manager, proxy_client = _free_port(), _free_port(), _free_port()
    secret = os.urandom(16).hex()
    manager_toml = root / "manager.toml"
    manager_toml.write_text(
        f"""
[db]
type = "sqlite"
path = "{root}/manager.sqlite3"
[redis]
type = "inproc"
[manager]
service-addr = "127.0.0.1:{manager_port}"
[logging]
level = "WARNING"
drivers = ["console"]
"""
    )
    storage_toml = root / "storage-proxy.toml"
    (root / "vol").mkdir()
    storage_toml.write_text(
        f"""
[storage-proxy]
node-id = "bench"
[api.client]
service-addr = "127.0.0.1:{proxy_client}"
[api.manager]
service-addr = "127.0.0.1:{proxy_manager}"
secret = "{secret}"
[volume.bench]
backend = "vfs"
path = "{root}/vol"
[logging]
level = "WARNING"
drivers = ["console"]
"""
    )
    items = proxy_config_items(
        "bench",
        manager_api=f"http://127.0.0.1:{proxy_manager}",
        client_api=f"http://127.0.0.1:{proxy_client}",
        secret=secret,
        ssl_verify=False,
        default_host="bench:bench",
    )
    return manager_toml, storage_toml, f"http://127.0.0.1:{manager_port}", items


def _populate(manager_toml: Path) -> tuple[str, str]:
    """Seed the database; the superadmin's access and secret key."""
    done = subprocess.run(
        [str(BAI), "manager", "--config", str(manager_toml), "fixture", "populate", "default"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(
        r"admin@lablup.com \(admin\): access key (\S+)\s+secret key (\S+)", done.stdout
    )
    if found is None:
        raise SystemExit(f"no superadmin keypair in: {done.stdout}")
    return found.group(1), found.group(2)


async def _wait_serving(url: str) -> None:
    async with httpx.AsyncClient(timeout=2.0) as http:
        with trio.fail_after(60):
            while True:
                try:
                    await http.get(url)
                    return
                except httpx.TransportError:
                    await trio.sleep(0.1)


def _timed_cp(src: Path, dst: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    os.sync()
    elapsed = time.perf_counter() - started
    dst.unlink()
    return elapsed


def _prepare(root: Path, size_mib: int) -> tuple[Path, Path, str, dict[str, str], APIConfig]:
    """Configs, a seeded database that knows the proxy, and the file to move."""
    manager_toml, storage_toml, endpoint, items = _write_configs(root)
    access, secret = _populate(manager_toml)
    for key, value in items.items():
        subprocess.run(
            [str(BAI), "manager", "--config", str(manager_toml), "config", "put", key, value],
            check=True,
            capture_output=True,
        )
    with (root / "source.bin").open("wb") as out:
        block = os.urandom(MIB)
        for _ in range(size_mib):
            out.write(block)
    config = APIConfig(endpoint=endpoint, access_key=access, secret_key=secret)
    return manager_toml, storage_toml, endpoint, items, config


async def _bench(root: Path, size_mib: int, rounds: int, settle: float) -> dict[str, object]:
    manager_toml, storage_toml, endpoint, items, config = await trio.to_thread.run_sync(
        _prepare, root, size_mib
    )
    source = root / "source.bin"
    size = size_mib * MIB
    manager = await trio.lowlevel.open_process([str(BAI), "manager", "--config", str(manager_toml)])
    proxy = await trio.lowlevel.open_process(
        [str(BAI), "storage-proxy", "--config", str(storage_toml)]
    )
    try:
        await _wait_serving(endpoint)
        await _wait_serving(items["volumes/proxies/bench/client_api"])
        up, down, cp_in, cp_out, up_ratio, down_ratio = [], [], [], [], [], []
        manager_cpu = proxy_cpu = 0.0
        async with APIClient(config) as api:
            await VFolder.create(api, "bench", "bench:bench")
            folder = VFolder(api, "bench")
            for n in range(rounds):
                target = root / f"down{n}"
                target.mkdir()
                await trio.sleep(settle)
                cpu_before = _cpu_seconds(manager.pid), _cpu_seconds(proxy.pid)
                started = time.perf_counter()
                await folder.upload([source.name], basedir=root)
                await trio.to_thread.run_sync(os.sync)
                up_s = time.perf_counter() - started
                manager_cpu += _cpu_seconds(manager.pid) - cpu_before[0]
                proxy_cpu += _cpu_seconds(proxy.pid) - cpu_before[1]
                await trio.sleep(settle)
                cpu_before = _cpu_seconds(manager.pid), _cpu_seconds(proxy.pid)
                started = time.perf_counter()
                await folder.download([source.name], basedir=target)
                await trio.to_thread.run_sync(os.sync)
                down_s = time.perf_counter() - started
                manager_cpu += _cpu_seconds(manager.pid) - cpu_before[0]
                proxy_cpu += _cpu_seconds(proxy.pid) - cpu_before[1]
                if (target / source.name).stat().st_size != size:
                    raise SystemExit("the downloaded file has the wrong size")
                await trio.sleep(settle)
                in_s = await trio.to_thread.run_sync(
                    _timed_cp, source, root / "vol" / "cp-copy.bin"
                )
                await trio.sleep(settle)
                out_s = await trio.to_thread.run_sync(
                    _timed_cp, target / source.name, root / "cp-out.bin"
                )
                await trio.to_thread.run_sync(shutil.rmtree, target)
                up.append(size_mib / up_s)
                down.append(size_mib / down_s)
                cp_in.append(size_mib / in_s)
                cp_out.append(size_mib / out_s)
                up_ratio.append(in_s / up_s)
                down_ratio.append(out_s / down_s)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            for process in (manager, proxy):
                process.terminate()
                await process.wait()
    return {
        "size_mib": size_mib,
        "rounds": rounds,
        "upload_mib_s": round(statistics.median(up), 1),
        "download_mib_s": round(statistics.median(down), 1),
        "cp_in_mib_s": round(statistics.median(cp_in), 1),
        "cp_out_mib_s": round(statistics.median(cp_out), 1),
        "upload_vs_cp": round(statistics.median(up_ratio), 2),
        "download_vs_cp": round(statistics.median(down_ratio), 2),
        "manager_cpu_s": round(manager_cpu, 3),
        "proxy_cpu_s": round(proxy_cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds of quiet before each timed step"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bai-bench-storage-") as tmp:
        result = trio.run(_bench, Path(tmp), args.size, args.rounds, args.settle)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
