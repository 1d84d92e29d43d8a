"""A kernel's SSH files: the session owner's keypair written into its scratch folder.

:func:`install_ssh_keys` writes, in the scratch folder the kernel sees as
``/home/work``:

* ``id_container``: the private key, mode 0600 -- what the official client's
  ``backend.ai ssh`` downloads (``session download``) to log in with;
* ``.ssh/authorized_keys``: the public key, mode 0600, in ``.ssh`` made (or
  set to) mode 0700 -- what the kernel's sshd reads.  Lines already in the
  file are kept; the key is added only when no line holds it already, so
  writing twice changes nothing;

each owned by the kernel's user.

Hostile folders: the scratch folder belongs to the kernel, which may have
planted a symbolic link, a FIFO or a folder where a file goes (a restart
reuses the folder).  Nothing is resolved by name: ``.ssh`` is opened
relative to the scratch folder's descriptor with ``O_NOFOLLOW |
O_DIRECTORY`` (:data:`bai.common.safe_fs.DIR_FLAGS`), an existing
``authorized_keys`` is read only when its opened descriptor is a regular
file, and each file is written to a new file (``O_CREAT | O_EXCL``) that
is then renamed over the name, which replaces whatever is there without
opening it.  A link, special file or folder where a file or ``.ssh`` goes is
refused with :class:`SSHKeysRefused` before anything is written; a kernel
that swaps one in afterwards gets, at worst, its own name replaced.

Mounted folders: a virtual folder mounted at ``/home/work/.ssh`` (or at
``/home/work/id_container``) is the user's own, persistent and possibly
read-only or shared: it is never written.  Its ``authorized_keys`` governs
who logs in (sshd reads ``/home/work/.ssh/authorized_keys``, which is then
the folder's), so the keypair's public key authorizes only if the user put
it there (``GET /auth/ssh-keypair`` shows it); ``id_container`` is written
all the same.  Writing into the scratch's ``.ssh`` would be pointless: the
mount hides it.

Blocking: call :func:`install_ssh_keys` through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from bai.agent.homefiles import NotAFolder, open_folder, replace_file
from bai.common.agent_api import SSHKeypair, paths_overlap
from bai.common.errors import BaiError
from bai.common.safe_fs import kind_of, lstat_at, open_plain
from bai.common.scratch_paths import KERNEL_HOME

__all__ = [
    "AUTHORIZED_KEYS",
    "MAX_AUTHORIZED_KEYS_SIZE",
    "PRIVATE_KEY_NAME",
    "SSH_DIR",
    "SSHKeysRefused",
    "install_ssh_keys",
]

#: The private key's name in ``/home/work`` (the name the official client downloads).
PRIVATE_KEY_NAME: Final = "id_container"
#: The folder of sshd's files in ``/home/work``.
SSH_DIR: Final = ".ssh"
#: The authorized keys file's name in :data:`SSH_DIR`.
AUTHORIZED_KEYS: Final = "authorized_keys"
#: The largest existing ``authorized_keys`` kept (bytes); a larger one is refused.
MAX_AUTHORIZED_KEYS_SIZE: Final = 1024 * 1024

_STAGING_PREFIX: Final = ".bai-ssh-"


class SSHKeysRefused(BaiError):
    """A link, special file or folder stands where a kernel's SSH file or ``.ssh`` goes."""


def _shown(*parts: str) -> str:
    return "/".join((KERNEL_HOME, *parts))


def _refused(shown: str, mode: int) -> SSHKeysRefused:
    return SSHKeysRefused(
        f"{shown} is {kind_of(mode)} in the kernel's work folder; its SSH keys are not written"
    )


def install_ssh_keys(
    scratch: Path,
    keypair: SSHKeypair,
    owner: tuple[int, int],
    mount_paths: Iterable[str] = (),
) -> None:
    """Write *keypair* into the kernel's *scratch* folder (module docs), owned by *owner*.

    *mount_paths* are the kernel paths of the kernel's mounted folders: a
    file or folder one of them covers is not written.  Raises
    :class:`SSHKeysRefused` (and writes nothing) when a link, special file
    or folder is in the way, and ``OSError`` when the file system fails.
    """
    mounts = list(mount_paths)

    def free(*parts: str) -> bool:
        return not any(paths_overlap(_shown(*parts), path) for path in mounts)

    write_private = free(PRIVATE_KEY_NAME)
    # A folder mounted inside .ssh (.ssh/x) leaves .ssh to write in; one at .ssh does not.
    write_public = _shown(SSH_DIR) not in mounts and free(SSH_DIR, AUTHORIZED_KEYS)
    root = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ssh_dir = _open_ssh_dir(root) if write_public else None
        try:
            # Everything is checked before the first write, so a refusal changes nothing.
            if write_private:
                _check_file(root, PRIVATE_KEY_NAME)
            authorized: bytes | None = None
            if write_public:
                line = _text(keypair.public_key)
                authorized = line if ssh_dir is None else _authorized_keys(ssh_dir, line)
            if write_private:
                _put(root, PRIVATE_KEY_NAME, _text(keypair.private_key), owner)
            if write_public:
                if ssh_dir is None:
                    ssh_dir = _make_ssh_dir(root)
                os.fchown(ssh_dir, *owner)
                os.fchmod(ssh_dir, 0o700)
                if authorized is not None:
                    _put(ssh_dir, AUTHORIZED_KEYS, authorized, owner)
        finally:
            if ssh_dir is not None:
                os.close(ssh_dir)
    finally:
        os.close(root)


def _text(value: str) -> bytes:
    return value.encode() if value.endswith("\n") else (value + "\n").encode()


def _check_file(dir_fd: int, name: str) -> None:
    """Refuse anything but a regular file (or nothing) at *name* of the scratch folder."""
    st = lstat_at(name, dir_fd)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _refused(_shown(name), st.st_mode)


def _open_ssh_dir(root: int) -> int | None:
    """A descriptor of the existing ``.ssh`` folder, None when there is none.

    Raises :class:`SSHKeysRefused` when ``.ssh`` is a link or anything but a folder.
    """
    try:
        return open_folder(root, SSH_DIR)
    except NotAFolder as exc:
        raise _refused(_shown(SSH_DIR), exc.mode) from None


def _make_ssh_dir(root: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(SSH_DIR, 0o700, dir_fd=root)
    fd = _open_ssh_dir(root)
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, "removed while it was made", _shown(SSH_DIR))
    return fd


def _authorized_keys(ssh_dir: int, line: bytes) -> bytes | None:
    """The new ``authorized_keys``: its lines now, plus *line* unless a line holds its key
    already (None: one does, nothing to write)."""
    shown = _shown(SSH_DIR, AUTHORIZED_KEYS)
    try:
        opened = open_plain(AUTHORIZED_KEYS, ssh_dir)
    except FileNotFoundError:
        return line
    if opened is None:
        st = lstat_at(AUTHORIZED_KEYS, ssh_dir)
        raise _refused(shown, st.st_mode if st is not None else stat.S_IFLNK)
    fd, st = opened
    try:
        if not stat.S_ISREG(st.st_mode):
            raise _refused(shown, st.st_mode)
        if st.st_size > MAX_AUTHORIZED_KEYS_SIZE:
            raise SSHKeysRefused(
                f"{shown} has {st.st_size} bytes, more than the {MAX_AUTHORIZED_KEYS_SIZE} "
                "kept; its SSH keys are not written"
            )
        existing = _read_all(fd, MAX_AUTHORIZED_KEYS_SIZE)
    finally:
        os.close(fd)
    # The same key is there when a line holds its data, whatever its comment or options.
    data = line.split()[1]
    if any(data in old.split() for old in existing.splitlines()):
        return None
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    return existing + line


def _read_all(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise SSHKeysRefused(
            f"{_shown(SSH_DIR, AUTHORIZED_KEYS)} grew past {limit} bytes while it was read"
        )
    return b"".join(chunks)


def _put(dir_fd: int, name: str, data: bytes, owner: tuple[int, int]) -> None:
    """Replace *name* in *dir_fd* with a new 0600 file holding *data*, owned by *owner*
    (:func:`bai.agent.homefiles.replace_file`: a link there is replaced, not followed)."""
    replace_file(dir_fd, name, data, owner, 0o600, staging_prefix=_STAGING_PREFIX)
