"""A kernel's dotfiles and the owner's bootstrap script, put in its scratch folder.

:func:`install_dotfiles` writes each :class:`~bai.common.agent_api.Dotfile`
of a ``create_kernels`` request into the scratch folder the kernel sees as
``/home/work``, before the kernel's first process starts: the file with the
dotfile's mode, owned by the kernel's user; folders on its way that do not
exist are made 0755, owned by the same user; folders that exist are left
as they are.  The manager already chose one dotfile per path (the owner's
over the project's over the domain's) and the request's parser checked each
path (:func:`~bai.common.agent_api.dotfile_parts`); the paths are checked
again here before anything is opened.

Hostile folders, as in :mod:`bai.agent.sshkeys`: nothing is resolved by
name.  Each folder is opened relative to its parent's descriptor without
following a link (:func:`bai.agent.homefiles.open_folder`), and each file
is written to a new file renamed over its name
(:func:`bai.agent.homefiles.replace_file`).  A link, special file or file
where a folder goes, or a link, special file or folder where a file goes,
raises :class:`DotfilesRefused`, which fails the kernel.

Mounted folders: a dotfile whose path a mounted virtual folder covers is
not written -- the mount would hide it, or it would land in the user's
persistent folder.

:func:`compose_bootstrap` joins the owner's stored bootstrap script and the
session's into the one ``bootstrap.sh`` the runner runs (pure).

Blocking: call :func:`install_dotfiles` through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from bai.agent.homefiles import NotAFolder, open_folder, replace_file
from bai.common.agent_api import Dotfile, dotfile_parts, paths_overlap
from bai.common.errors import BaiError
from bai.common.safe_fs import kind_of, lstat_at
from bai.common.scratch_paths import KERNEL_HOME

__all__ = ["DotfilesRefused", "compose_bootstrap", "install_dotfiles"]

log = logging.getLogger(__name__)

_STAGING_PREFIX: Final = ".bai-dotfile-"
#: The mode of the folders made on the way to a dotfile.
FOLDER_MODE: Final = 0o755


class DotfilesRefused(BaiError):
    """A link or special file (or the wrong kind of entry) stands where a dotfile goes."""


def _refused(parts: Sequence[str], mode: int) -> DotfilesRefused:
    shown = "/".join((KERNEL_HOME, *parts))
    return DotfilesRefused(
        f"{shown} is {kind_of(mode)} in the kernel's work folder; its dotfiles are not written"
    )


def install_dotfiles(
    scratch: Path,
    dotfiles: Iterable[Dotfile],
    owner: tuple[int, int],
    mount_paths: Iterable[str] = (),
) -> list[str]:
    """Write *dotfiles* into the kernel's *scratch* folder (module docs), owned by *owner*.

    Returns the paths left out because a mounted folder (*mount_paths*, kernel
    paths) covers them.  Raises :class:`DotfilesRefused` when something is in
    the way, :class:`~bai.common.scratch_paths.ScratchPathError` for a path
    that is not a dotfile path, and ``OSError`` when the file system fails.
    """
    mounts = list(mount_paths)
    skipped: list[str] = []
    root = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for dotfile in dotfiles:
            parts = dotfile_parts(dotfile.path)
            shown = "/".join((KERNEL_HOME, *parts))
            if any(paths_overlap(shown, path) for path in mounts):
                skipped.append(dotfile.path)
                continue
            _write(root, parts, dotfile, owner)
    finally:
        os.close(root)
    if skipped:
        log.info("dotfiles under mounted folders not written: %s", ", ".join(skipped))
    return skipped


def _write(root: int, parts: list[str], dotfile: Dotfile, owner: tuple[int, int]) -> None:
    folder = root
    try:
        for depth, name in enumerate(parts[:-1], start=1):
            folder_fd = _folder(folder, name, parts[:depth], owner)
            if folder != root:
                os.close(folder)
            folder = folder_fd
        st = lstat_at(parts[-1], folder)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise _refused(parts, st.st_mode)
        replace_file(
            folder,
            parts[-1],
            dotfile.data.encode(),
            owner,
            dotfile.mode,
            staging_prefix=_STAGING_PREFIX,
        )
    finally:
        if folder != root:
            os.close(folder)


def _folder(parent: int, name: str, shown: list[str], owner: tuple[int, int]) -> int:
    """A descriptor of folder *name* in *parent*, made (0755, *owner*'s) when missing."""
    try:
        fd = open_folder(parent, name)
        if fd is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, FOLDER_MODE, dir_fd=parent)
            fd = open_folder(parent, name)
            if fd is None:
                raise FileNotFoundError(f"{'/'.join(shown)} was removed while it was made")
            os.fchown(fd, *owner)
            os.fchmod(fd, FOLDER_MODE)
    except NotAFolder as exc:
        raise _refused(shown, exc.mode) from None
    return fd


def compose_bootstrap(user_script: str | None, session_script: str | None) -> str | None:
    """The ``bootstrap.sh`` of a kernel: the owner's stored script, then the session's.

    Either alone is used as it is.  With both, the owner's runs first in a
    shell of its own (its ``exit`` ends only itself) and a failure stops
    there with its exit code, so the session's script runs only after the
    owner's succeeded.  None when there is neither.
    """
    if not user_script:
        return session_script or None
    if not session_script:
        return user_script
    return (
        "# The owner's stored bootstrap script first, then the session's.\n"
        f'"${{BASH:-/bin/sh}}" -c {shlex.quote(user_script)} user-bootstrap || exit $?\n'
        f"{session_script}"
    )
