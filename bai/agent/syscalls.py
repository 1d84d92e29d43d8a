"""The few Linux system calls the agent makes that Python's ``os`` module lacks (3.11).

Each wrapper raises :class:`OSError` with the call's errno on failure.  They
need root; callers probe before relying on them.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Final

CLONE_NEWNET: Final = 0x40000000
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_BIND: Final = 0x1000
_MNT_DETACH: Final = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    """Move the calling thread into new namespaces of the kinds in *flags*."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace *fd* refers to."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str, target: Path, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2): *source* on *target* (a bind when *flags* has :data:`MS_BIND`)."""
    kind = fstype.encode() if fstype is not None else None
    options = data.encode() if data else None
    _check(
        _libc.mount(source.encode(), bytes(target), kind, flags, options),
        f"mounting {source} on {target}",
    )


def unmount(target: Path) -> bool:
    """Lazily unmount *target*; False when nothing was mounted there."""
    if _libc.umount2(bytes(target), _MNT_DETACH) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, f"unmounting {target}: {os.strerror(code)}")
