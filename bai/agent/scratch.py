"""Kernel scratch folders, with the size limit of ``[container] scratch-type``/``scratch-size``.

* ``hostdir`` without a size: a plain folder on the agent's disk (no limit);
* ``hostdir`` with a size: an ext4 image of that size (sparse, beside the
  folder as ``<folder>.img``) loop-mounted on the folder, so a kernel that
  fills it gets ``ENOSPC`` and the host's disk is untouched;
* ``memory``: a tmpfs of that size (or of *fallback*, the kernel's memory
  limit, when no size is set); its pages count against the kernel's memory.

Both limited kinds need root.  The functions block: call them through
``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final, Literal

from bai.agent.syscalls import MS_NODEV, MS_NOSUID, mount, unmount

ScratchType = Literal["hostdir", "memory"]

_MKFS_TIMEOUT: Final = 60.0


class ScratchError(OSError):
    """The scratch folder could not be made with its limit."""


def image_of(folder: Path) -> Path:
    """Where a size-limited ``hostdir`` scratch keeps its filesystem image."""
    return folder.with_name(f"{folder.name}.img")


def limit_of(kind: ScratchType, size: int, fallback: int | None) -> int | None:
    """The byte limit a scratch folder gets (None: unlimited)."""
    if size > 0:
        return size
    if kind == "memory":
        return fallback
    return None


def make(folder: Path, kind: ScratchType, limit: int | None, owner: tuple[int, int]) -> None:
    """Create *folder*, mounted with its *limit* where one applies, owned by *owner*."""
    folder.mkdir(exist_ok=True)
    if limit is None and kind == "hostdir":
        os.chown(folder, *owner)
        return
    uid, gid = owner
    if kind == "memory":
        options = f"mode=0755,uid={uid},gid={gid}"
        if limit is not None:
            options += f",size={limit}"
        mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, options)
        return
    assert limit is not None
    image = image_of(folder)
    try:
        with open(image, "wb") as f:
            f.truncate(limit)
        # No journal (scratch dies with its kernel) and no blocks kept for online
        # resizing: a 4 GiB image formats in about 4 ms instead of 16.
        _run(
            "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal,^resize_inode",
            "-E", f"lazy_itable_init=1,root_owner={uid}:{gid}", str(image),
        )  # fmt: skip
        _run("mount", "-o", "loop,nosuid,nodev", str(image), str(folder))
        with contextlib.suppress(OSError):
            (folder / "lost+found").rmdir()
    except BaseException:
        release(folder)
        raise


def _run(*argv: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_MKFS_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScratchError(f"{argv[0]} failed: {exc}") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()
        raise ScratchError(f"{argv[0]} failed: {detail}")


def release(folder: Path) -> None:
    """Unmount *folder* (if mounted), then remove it and its image.  Idempotent."""
    with contextlib.suppress(OSError):
        while unmount(folder):
            pass
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        image_of(folder).unlink()
