"""A volume's performance metric: capacity from ``statvfs``, I/O from ``/proc/diskstats``.

:func:`sample` reads both at one instant; :func:`metric` turns two samples
into the reply of ``/volume/performance-metric``: the file system's
capacity, free and used bytes, and the block device's read/write operations,
bytes and time per second between the samples (the names of Backend.AI's
``FSPerfMetric``: ``iops_read``, ``io_bytes_read``, ``io_usec_read``, ...),
plus the cumulative counters.  A volume on a file system without a block
device (tmpfs, overlay, NFS) reports zero rates and ``device: null``.

Blocking (reads ``/proc`` and ``/sys``): call through ``trio.to_thread``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["IoCounters", "Sample", "block_device", "metric", "sample"]

_SECTOR: Final = 512


@dataclass(frozen=True)
class IoCounters:
    """Cumulative counters of one block device (``/proc/diskstats`` fields)."""

    reads: int = 0
    read_bytes: int = 0
    read_ms: int = 0
    writes: int = 0
    write_bytes: int = 0
    write_ms: int = 0


@dataclass(frozen=True)
class Sample:
    """One reading of a volume."""

    at: float
    device: str | None
    capacity_bytes: int
    available_bytes: int
    free_bytes: int
    io: IoCounters


def block_device(path: Path) -> str | None:
    """The kernel name (``vda``, ``nvme0n1p2``) of the block device holding *path*, or None."""
    dev = os.stat(path).st_dev
    link = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    try:
        return link.resolve(strict=True).name
    except OSError:
        return None


def parse_diskstats(text: str, device: str) -> IoCounters | None:
    """The counters of *device* in the text of ``/proc/diskstats``, or None if it is not there."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 11 and fields[2] == device:
            reads, sectors_read, read_ms = int(fields[3]), int(fields[5]), int(fields[6])
            writes, sectors_written, write_ms = int(fields[7]), int(fields[9]), int(fields[10])
            return IoCounters(
                reads=reads,
                read_bytes=sectors_read * _SECTOR,
                read_ms=read_ms,
                writes=writes,
                write_bytes=sectors_written * _SECTOR,
                write_ms=write_ms,
            )
    return None


def sample(path: Path, device: str | None) -> Sample:
    """Read the capacity of the file system at *path* and the counters of *device* now."""
    vfs = os.statvfs(path)
    io = IoCounters()
    if device is not None:
        try:
            found = parse_diskstats(Path("/proc/diskstats").read_text(), device)
        except OSError:
            found = None
        io = found or io
    return Sample(
        at=time.monotonic(),
        device=device,
        capacity_bytes=vfs.f_blocks * vfs.f_frsize,
        available_bytes=vfs.f_bavail * vfs.f_frsize,
        free_bytes=vfs.f_bfree * vfs.f_frsize,
        io=io,
    )


def metric(before: Sample, after: Sample) -> dict[str, Any]:
    """The performance metric between two samples of one volume (rates per second)."""
    span = max(after.at - before.at, 1e-6)
    a, b = after.io, before.io

    def rate(now: int, then: int, scale: float = 1.0) -> float:
        return max(now - then, 0) * scale / span

    return {
        "device": after.device,
        "capacity_bytes": after.capacity_bytes,
        "available_bytes": after.available_bytes,
        "used_bytes": after.capacity_bytes - after.free_bytes,
        "iops_read": rate(a.reads, b.reads),
        "iops_write": rate(a.writes, b.writes),
        "io_bytes_read": rate(a.read_bytes, b.read_bytes),
        "io_bytes_write": rate(a.write_bytes, b.write_bytes),
        "io_usec_read": rate(a.read_ms, b.read_ms, 1000.0),
        "io_usec_write": rate(a.write_ms, b.write_ms, 1000.0),
        "total_read_ops": a.reads,
        "total_write_ops": a.writes,
        "total_read_bytes": a.read_bytes,
        "total_write_bytes": a.write_bytes,
        "interval_s": span,
    }
