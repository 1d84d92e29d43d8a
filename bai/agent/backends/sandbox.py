"""What a local kernel's sandbox holds: the bubblewrap command line, built from an allow-list.

The sandbox's root starts empty and gets only what is named here:

* the host's system folders (``/usr`` and the ``/bin``, ``/lib*``, ``/sbin``
  links or folders beside it), read-only;
* an ``/etc`` of the agent's making, read-only: copies of the few host
  entries programs need to run (:data:`ETC_ALLOWED`: the loader cache, time
  zone, TLS roots, fonts) beside a ``passwd`` and ``group`` that list only
  the kernel user (:func:`account_files`), so the host's accounts are not
  there; ``/etc/hosts`` and ``/etc/hostname`` are the kernel's own
  (:func:`host_files`), so the session's cluster host names resolve;
* the runtime the kernel runs on (the interpreters' prefixes, the bai
  package, the image's service definitions), read-only at their host paths;
* private ``/proc``, ``/dev``, ``/dev/shm`` (of ``shmem`` bytes when the session asked),
  ``/tmp``, ``/var/tmp`` and ``/run``;
* its scratch folder read-write at ``/home/work`` and its socket folder at
  its host path (the agent dials the runner there);
* its virtual folders (:class:`~bai.common.agent_api.VFolderMount`): each
  folder's root, and nothing else of its volume, at its kernel path,
  read-write (``--bind``) or read-only (``--ro-bind``: a read-only mount,
  which even root in the kernel cannot write or remount).  They come after
  the scratch bind, so a folder at ``/home/work/NAME`` lies on top of the
  scratch folder, not under it.  A symbolic link inside a folder resolves
  inside the sandbox, so it reaches nothing the sandbox does not hold.
  :func:`check_mounts` refuses a kernel path that would cover, or lie
  inside, anything else the sandbox binds.

The manager's data directory, the agent's state and logs, other kernels'
files, the host's ``/root``, ``/home`` and every daemon's configuration are
simply absent.  Everything here is pure: the caller probes the host and
passes what it found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bai.common.agent_api import VFolderMount, paths_overlap
from bai.common.scratch_paths import KERNEL_HOME

#: The kernel user's name inside the sandbox (the spec's ``work`` user).
KERNEL_USER: Final = "work"
#: Host folders a program needs to run, bound read-only (or re-made as the links they are).
SYSTEM_PATHS: Final = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: ``/etc`` entries copied into the kernels' ``/etc`` when the host has them; nothing
#: in them is a secret.
ETC_ALLOWED: Final = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "fonts",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "magic",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "profile",
    "protocols",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "terminfo",
    "timezone",
)
#: Read-only kernel interfaces some numeric libraries read (core counts, caches).
SYS_ALLOWED: Final = ("/sys/devices/system/cpu",)
_PRIVATE_TMPFS: Final = ("/tmp", "/var/tmp", "/run", "/dev/shm")


@dataclass(frozen=True)
class Sandbox:
    """One kernel's sandbox, as the backend decided it."""

    bwrap: str
    #: Host folder bound at ``/etc``: the agent's copies and :func:`account_files`.
    etc_base: Path
    #: Host folder holding this kernel's :func:`host_files`.
    etc_dir: Path
    scratch_dir: Path
    sock_dir: Path
    #: Host folders the kernel's runtime lives in, bound read-only at the same paths.
    runtime_paths: Sequence[Path]
    hostname: str = ""
    #: Device nodes bound into ``/dev`` (the kernel's GPUs).
    devices: Sequence[str] = ()
    #: ``(setpriv, uid, gid)``: bwrap runs as root and the kernel switches to *uid* inside.
    switch_user: tuple[str, int, int] | None = None
    #: ``(nsenter, pinned namespace)``: the kernel joins that network namespace.
    netns: tuple[str, Path] | None = None
    #: Which of :data:`SYSTEM_PATHS` are links on this host, and to what.
    system_links: dict[str, str] = field(default_factory=dict)
    #: Virtual folders bound at their kernel paths (see :func:`check_mounts`).
    mounts: Sequence[VFolderMount] = ()
    #: Bytes of the private ``/dev/shm``; None leaves it unbounded (bound by memory only).
    shmem: int | None = None


class MountRefused(ValueError):
    """A virtual folder's kernel path that would cover or lie inside another bound path."""


def check_mounts(sandbox: Sandbox) -> None:
    """Raise :class:`MountRefused` for a mount that clashes with what the sandbox binds itself.

    A folder may lie below ``/home/work`` (on top of the scratch bind) but
    not cover ``/home/work`` itself, and it may neither cover nor lie inside
    the system folders, ``/etc``, the private file systems, the runtime,
    the socket folder or a device: covering one would take it from the
    kernel, lying inside one would need a mount point in a read-only tree.
    Mounts that overlap one another are refused by ``KernelConfig`` already.
    """
    fixed = [
        *SYSTEM_PATHS,
        "/etc",
        "/proc",
        "/dev",
        *_PRIVATE_TMPFS,
        *SYS_ALLOWED,
        *(str(p) for p in sandbox.runtime_paths),
        *sandbox.devices,
        str(sandbox.sock_dir),
    ]
    for mount in sandbox.mounts:
        target = mount.kernel_path
        if target == KERNEL_HOME or not target.startswith("/") or target == "/":
            raise MountRefused(f"folder {mount.name!r} cannot be mounted at {target!r}")
        for path in fixed:
            if paths_overlap(target, path):
                raise MountRefused(
                    f"folder {mount.name!r} cannot be mounted at {target!r}: "
                    f"the sandbox binds {path} there"
                )


def system_links(paths: Iterable[str] = SYSTEM_PATHS) -> dict[str, str]:
    """The symlink targets of those of *paths* that are links on this host (merged ``/usr``)."""
    links: dict[str, str] = {}
    for path in paths:
        if os.path.islink(path):
            links[path] = os.readlink(path)
    return links


def runtime_paths(interpreters: Iterable[str], extra: Iterable[Path]) -> list[Path]:
    """The host folders a kernel's runtime needs, outside the system folders, deduplicated.

    Each interpreter contributes its prefix (the parent of its ``bin``, as
    given and with links resolved, which covers a virtual environment and the
    Python it was made from); *extra* folders are taken as they are.
    """
    wanted: list[Path] = []
    for interpreter in interpreters:
        for path in (Path(interpreter), Path(os.path.realpath(interpreter))):
            folder = path.parent
            wanted.append(folder.parent if folder.name == "bin" else folder)
    wanted += [Path(os.path.realpath(p)) for p in extra]
    system = tuple(Path(p) for p in SYSTEM_PATHS)
    kept: list[Path] = []
    for path in sorted(set(wanted), key=lambda p: (len(p.parts), str(p))):
        if path == Path("/") or any(path == s or s in path.parents for s in system):
            continue
        if not any(k == path or k in path.parents for k in kept):
            kept.append(path)
    return kept


def account_files(
    uid: int, gid: int, nameserver: str | None = None, shell: str = "/bin/sh"
) -> dict[str, str]:
    """``/etc`` files common to an agent's kernels: the kernel user, its group, DNS.

    With a *nameserver* (a network with a way out) there is a ``resolv.conf``.
    *shell* is the kernel user's login shell (what ``ssh`` into a kernel runs).
    """
    passwd = "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    group = "root:x:0:\n"
    if uid != 0:
        passwd += f"{KERNEL_USER}:x:{uid}:{gid}:{KERNEL_USER}:{KERNEL_HOME}:{shell}\n"
    if gid != 0:
        group += f"{KERNEL_USER}:x:{gid}:\n"
    passwd += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    group += "nogroup:x:65534:\n"
    files = {"passwd": passwd, "group": group}
    if nameserver is not None:
        files["resolv.conf"] = f"nameserver {nameserver}\n"
    return files


#: The files :func:`host_files` writes for each kernel.
HOST_FILES: Final = ("hosts", "hostname")


def host_files(hostname: str, peers: Iterable[str]) -> dict[str, str]:
    """One kernel's ``/etc/hosts`` and ``/etc/hostname``.

    *peers* are the host names of the session's kernels that share this
    kernel's network namespace; they all answer on loopback.
    """
    names = " ".join(dict.fromkeys(n for n in (hostname, *peers) if n))
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    if names:
        hosts += f"127.0.1.1\t{names}\n"
    return {"hosts": hosts, "hostname": f"{hostname or 'localhost'}\n"}


class _Builder:
    """A bwrap command line whose mount points' parent folders are made world-readable.

    bwrap makes a missing parent of a mount point ``0700`` and root's, which
    would lock the kernel user out of everything below it.
    """

    def __init__(self) -> None:
        self.argv: list[str] = []
        self._folders: set[str] = {"/"}

    def _parents(self, dest: str) -> None:
        for parent in reversed(Path(dest).parents):
            if str(parent) not in self._folders:
                self._folders.add(str(parent))
                self.argv += ["--perms", "0755", "--dir", str(parent)]

    def mount(self, option: str, source: str, dest: str) -> None:
        self._parents(dest)
        self._folders.add(dest)
        self.argv += [option, source, dest]

    def fresh(self, option: str, dest: str, *, size: int | None = None) -> None:
        self._parents(dest)
        self._folders.add(dest)
        # bwrap's --size applies to the --tmpfs right after it.
        self.argv += ([] if size is None else ["--size", str(size)]) + [option, dest]


def command(sandbox: Sandbox, runner: Sequence[str]) -> list[str]:
    """The command line that runs *runner* inside *sandbox*.

    Raises :class:`MountRefused` (:func:`check_mounts`) for a mount that clashes.
    """
    check_mounts(sandbox)
    prefix: list[str] = []
    if sandbox.netns is not None:
        nsenter, pinned = sandbox.netns
        prefix += [nsenter, f"--net={pinned}", "--"]
    root = _Builder()
    for path in SYSTEM_PATHS:
        target = sandbox.system_links.get(path)
        if target is not None:
            root.mount("--symlink", target, path)
        else:
            root.mount("--ro-bind-try", path, path)
    root.mount("--ro-bind", str(sandbox.etc_base), "/etc")
    for name in HOST_FILES:
        root.mount("--ro-bind", str(sandbox.etc_dir / name), f"/etc/{name}")
    root.fresh("--proc", "/proc")
    root.fresh("--dev", "/dev")
    for path in _PRIVATE_TMPFS:
        root.fresh("--tmpfs", path, size=sandbox.shmem if path == "/dev/shm" else None)
    for path in SYS_ALLOWED:
        root.mount("--ro-bind-try", path, path)
    for folder in sandbox.runtime_paths:
        root.mount("--ro-bind", str(folder), str(folder))
    for node in sandbox.devices:
        root.mount("--dev-bind-try", node, node)
    root.mount("--bind", str(sandbox.scratch_dir), KERNEL_HOME)
    # After the scratch bind: a folder below /home/work goes on top of it.
    for mount in sorted(sandbox.mounts, key=lambda m: m.kernel_path):
        option = "--ro-bind" if mount.mode == "ro" else "--bind"
        root.mount(option, mount.host_path, mount.kernel_path)
    root.mount("--bind", str(sandbox.sock_dir), str(sandbox.sock_dir))
    argv = [*prefix, sandbox.bwrap, *root.argv]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if sandbox.hostname:
        argv += ["--hostname", sandbox.hostname]
    argv += ["--cap-drop", "ALL"]
    if sandbox.switch_user is not None:
        # setpriv needs these three to become the kernel user and empty the bounding
        # set; the user switch itself then clears every capability.
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        argv += ["--cap-add", "CAP_SETPCAP"]
    argv += ["--chdir", KERNEL_HOME, "--"]
    if sandbox.switch_user is not None:
        setpriv, uid, gid = sandbox.switch_user
        argv += [
            setpriv,
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    return [*argv, *runner]
