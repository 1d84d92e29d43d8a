"""The local backend: each kernel is a kernel runner process tree on the agent's host.

What a kernel gets:

* its own **process session** (the runner is a session leader), so the whole
  tree can be signalled at once;
* its own **cgroups** (:mod:`bai.agent.cgroups`, v1 or v2) with the cpu quota
  and cpuset of its ``cpu`` allocation, the memory limit of its ``mem``
  allocation and a pids limit.  The runner joins them before it execs, via a
  one-line ``sh`` prologue that writes its pid to each ``cgroup.procs``, so
  no descendant is ever born outside;
* a **scratch directory** ``<scratch-root>/<kernel-id>`` as its working
  directory (the spec's ``/home/work``), holding ``bootstrap.sh`` when the
  session has a bootstrap script (the runner runs it before it serves), and
  the session owner's SSH keys (``id_container``, ``.ssh/authorized_keys``;
  :mod:`bai.agent.sshkeys`) and the dotfiles of the request
  (:mod:`bai.agent.dotfiles`);
* where ``bwrap`` is installed and works, a **sandbox** built from an
  allow-list (:mod:`bai.agent.backends.sandbox`): system folders and the
  runtime read-only, its scratch at ``/home/work``, private ``/tmp``,
  ``/proc`` and ``/dev``, its own pid, ipc, uts and cgroup namespaces, no
  capabilities, ``no_new_privs``, and the cluster hostname.  Without it the
  agent logs the weaker isolation once;
* where the agent runs as root, the **kernel user** (``[container]
  kernel-uid``/``kernel-gid``, by default the ``bai-kernel`` system user, or
  ``nobody``): bwrap starts as root and ``setpriv`` switches to that user
  before the runner runs;
* where the agent runs as root, a **network namespace** per session
  (:mod:`bai.agent.netns`) with loopback only, shared by the session's
  kernels on this agent; the agent forwards each service port's host port
  into it (:meth:`LocalBackend.connect_port`);
* a **scratch size limit** (:mod:`bai.agent.scratch`) when ``scratch-size``
  is set or ``scratch-type`` is ``memory``;
* its **virtual folders**, bound into the sandbox (:mod:`~bai.agent.backends.sandbox`).
  Before each start (and restart) every folder's host path must be an
  existing folder that is not a symbolic link, and no mount point below
  ``/home/work`` may be a symbolic link or a file in the scratch folder
  (the kernel could have planted one for its next start); otherwise the
  kernel fails with the reason.  Without a sandbox a kernel with folders is
  refused: with no mount namespace a read-only folder could not be kept
  read-only, and the kernel would reach the whole volume by its host path.

Killing a kernel never leaves a process behind: everything in its cgroup is
killed (frozen first on v1), then its process group, then -- hosts without
cgroups -- the init process of its pid namespace, which takes the whole
namespace with it.  Processes that left the session (``setsid``) without
leaving the cgroup die with the cgroup; only on a host without both cgroups
and bwrap could a deliberately escaping process survive, which is the weaker
isolation the start-up log names.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Final

import trio

import bai
from bai.agent import netns, scratch
from bai.agent.backends import sandbox
from bai.agent.backends.base import (
    BOOTSTRAP_NAME,
    BackendError,
    KernelBackend,
    KernelLaunch,
    KernelProcess,
)
from bai.agent.backends.kernel_etc import refresh_etc
from bai.agent.backends.network import SLIRP_DNS, KernelNetwork, SessionNetworks
from bai.agent.backends.processes import (
    AdoptedProcess,
    ChildProcess,
    children,
    proc_usage,
    session_members,
    signal_group,
    start_time,
)
from bai.agent.cgroups import CgroupDriver, CgroupError, CgroupUsage, KernelCgroup, detect
from bai.agent.dotfiles import DotfilesRefused, install_dotfiles
from bai.agent.images import Image
from bai.agent.kernel_store import KernelRecord
from bai.agent.sshkeys import SSHKeysRefused, install_ssh_keys
from bai.common.errors import sole_exception
from bai.common.scratch_paths import KERNEL_HOME, ScratchPathError
from bai.common.slots import BinarySize

log = logging.getLogger(__name__)

#: The prologue that moves the shell into the kernel's cgroups, then execs the runner.
_JOIN_CGROUPS: Final = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)
_PROBE_TIMEOUT: Final = 10.0
#: Tries of the bwrap probe before bwrap counts as not working.
_PROBE_ATTEMPTS: Final = 3
#: The folder under ``etc_root`` every kernel gets as its ``/etc``.
_ETC_BASE: Final = "_common"
_IPC_PATH_MAX: Final = 107


#: The system user kernels run as when the operator names none (``.ci/bootstrap`` makes it).
KERNEL_SYSTEM_USER: Final = "bai-kernel"
_NOBODY: Final = 65534


def kernel_owner(uid: int | None, gid: int | None) -> tuple[int, int] | None:
    """The uid and gid kernels run as (None: as the agent itself).

    A root agent never runs kernels as root unless told to: unset, they run
    as :data:`KERNEL_SYSTEM_USER`, or ``nobody`` where that user is missing.
    """
    if os.geteuid() != 0 and uid is None and gid is None:
        return None
    if uid is None:
        try:
            entry = pwd.getpwnam(KERNEL_SYSTEM_USER)
        except KeyError:
            uid, default_gid = _NOBODY, _NOBODY
        else:
            uid, default_gid = entry.pw_uid, entry.pw_gid
    else:
        try:
            default_gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            default_gid = uid
    return uid, default_gid if gid is None else gid


class LocalBackend(KernelBackend):
    """Kernels as local process trees; see the module docstring.

    *cgroup_parent* names the agent's parent cgroup (relative to the agent's
    own cgroup, or absolute from the hierarchy root); *use_bwrap* forces the
    sandbox on (failing kernels if it does not work) or off; None probes it.
    *kernel_uid*/*kernel_gid* run kernels as that user (the agent must be
    root); unset, a root agent picks :data:`KERNEL_SYSTEM_USER` or ``nobody``.
    *scratch_type*/*scratch_size* limit each kernel's scratch folder
    (:mod:`bai.agent.scratch`).
    """

    name = "local"

    def __init__(
        self,
        *,
        agent_id: str,
        scratch_root: Path,
        ipc_base: Path,
        log_dir: Path,
        runner_python: str = sys.executable,
        cgroup_parent: str | None = None,
        use_bwrap: bool | None = None,
        kernel_uid: int | None = None,
        kernel_gid: int | None = None,
        scratch_type: scratch.ScratchType = "hostdir",
        scratch_size: int = 0,
        network: KernelNetwork = "private",
    ) -> None:
        self.agent_id = agent_id
        self.scratch_root = scratch_root.resolve()
        self.ipc_base = ipc_base.resolve()
        self.log_dir = log_dir.resolve()
        self.runner_python = runner_python
        self.cgroup_parent = cgroup_parent or f"bai.{agent_id}"
        self._use_bwrap = use_bwrap
        self._kernel_uid = kernel_uid
        self._kernel_gid = kernel_gid
        self.kernel_owner: tuple[int, int] | None = None
        self.scratch_type: scratch.ScratchType = scratch_type
        self.scratch_size = scratch_size
        self.cgroups: CgroupDriver | None = None
        self.cgroup_problem = ""
        self.bwrap: str | None = None
        self.bwrap_problem = ""
        #: Where each kernel's generated ``/etc`` files and each session's namespace live.
        self.etc_root = self.ipc_base / "etc"
        self.netns_root = self.ipc_base / "netns"
        self.network_mode: KernelNetwork = network
        self.networks: SessionNetworks | None = None
        self.netns_problem = "not probed"
        self._setpriv: str | None = None
        self._nsenter: str | None = None
        self._system_links = sandbox.system_links()
        self._runtime_cache: dict[tuple[str, Path | None], list[Path]] = {}
        self._runner_command = [runner_python, "-I", "-m", "bai.kernel"]

    # -- host probing ------------------------------------------------------------

    async def init(self) -> None:
        longest = len(str(self.ipc_base)) + 1 + 36 + len("/out")
        if longest > _IPC_PATH_MAX:
            raise BackendError(
                f"ipc-base-path {self.ipc_base} is too long for kernel sockets "
                f"({longest} > {_IPC_PATH_MAX} bytes)"
            )
        self.kernel_owner = kernel_owner(self._kernel_uid, self._kernel_gid)
        limited = self.scratch_size > 0 or self.scratch_type == "memory"
        if limited and os.geteuid() != 0:
            raise BackendError(
                f"scratch-type {self.scratch_type!r} with a size needs an agent running as root"
            )
        await trio.to_thread.run_sync(self._make_dirs)
        self.cgroups, self.cgroup_problem = await trio.to_thread.run_sync(
            detect, self.cgroup_parent
        )
        if self.cgroups is None:
            log.warning(
                "kernels get no cgroups (%s): cpu, memory and pids limits are not enforced",
                self.cgroup_problem,
            )
        else:
            log.info("kernels run in %s", self.cgroups.describe())
        await self._probe_bwrap()
        await self._probe_netns()
        if self.bwrap is not None:
            owner = self.kernel_owner or (os.getuid(), os.getgid())
            dns = SLIRP_DNS if self.network_mode == "outbound" and self.networks else None
            # Kernels see the host's /bin: a login (ssh) gets bash where the host has it.
            shell = "/bin/bash" if os.access("/bin/bash", os.X_OK) else "/bin/sh"
            accounts = sandbox.account_files(*owner, dns, shell)
            await trio.to_thread.run_sync(refresh_etc, self.etc_root / _ETC_BASE, accounts)
        if self.kernel_owner is None or self.kernel_owner[0] == 0:
            log.warning("kernels run as root: set [container] kernel-uid to an unprivileged user")
        if not limited:
            log.warning("kernel scratch folders have no size limit ([container] scratch-size)")
        fast = await trio.to_thread.run_sync(_fast_runner_command, self.runner_python)
        if fast is not None:
            self._runner_command = fast

    def _make_dirs(self) -> None:
        # Modes are forced only on the folders this backend alone uses: the
        # scratch and socket roots may be folders the operator shares.
        for directory, mode in (
            (self.scratch_root, None),
            (self.ipc_base, None),
            (self.log_dir, 0o700),
            (self.etc_root, 0o755),
            (self.netns_root, 0o700),
        ):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                if mode is not None:
                    os.chmod(directory, mode)
            except OSError as exc:
                raise BackendError(f"cannot create {directory}: {exc.strerror}") from None

    async def _probe_bwrap(self) -> None:
        if self._use_bwrap is False:
            self.bwrap_problem = "disabled by configuration"
        else:
            path = shutil.which("bwrap")
            if path is None:
                self.bwrap_problem = "bwrap is not installed"
            else:
                argv = [path, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-ipc", "true"]
                # Binding / recursively races with mounts others make and drop meanwhile
                # (another agent's namespace probe): a failure is tried again before it
                # counts.
                for attempt in range(_PROBE_ATTEMPTS):
                    if attempt:
                        await trio.sleep(0.2)
                    try:
                        with trio.fail_after(_PROBE_TIMEOUT):
                            done = await trio.run_process(argv, capture_stderr=True, check=False)
                    except (OSError, trio.TooSlowError) as exc:
                        self.bwrap_problem = f"bwrap does not work here ({exc})"
                        continue
                    if done.returncode == 0:
                        self.bwrap, self.bwrap_problem = path, ""
                        break
                    detail = done.stderr.decode(errors="replace").strip()
                    self.bwrap_problem = f"bwrap does not work here ({detail})"
        if self.bwrap is None:
            if self._use_bwrap:
                raise BackendError(f"bwrap was required but {self.bwrap_problem}")
            log.warning(
                "%s: kernels see the host's files and share its mount, pid and ipc "
                "namespaces (weaker isolation than with bubblewrap)",
                self.bwrap_problem,
            )
            await self._check_runner_access()
            return
        owner = self.kernel_owner
        if os.geteuid() == 0 and owner is not None and owner[0] != 0:
            self._setpriv = shutil.which("setpriv")
            if self._setpriv is None:
                raise BackendError("kernels run as a user of their own, which needs setpriv")

    async def _check_runner_access(self) -> None:
        """Fail now, not at each kernel, when the kernel user cannot run the runner's Python.

        Without a sandbox the kernel user reads the runtime at its host path,
        so an interpreter under a folder only root may enter (a Python
        installed in ``/root``) cannot start kernels.
        """
        owner = self.kernel_owner
        if owner is None or os.geteuid() != 0 or owner[0] == 0:
            return
        argv = [self.runner_python, "-I", "-S", "-c", ""]
        try:
            with trio.fail_after(_PROBE_TIMEOUT):
                done = await trio.run_process(
                    argv, capture_stderr=True, check=False, user=owner[0], group=owner[1]
                )
        except (OSError, trio.TooSlowError) as exc:
            detail = str(exc)
        else:
            if done.returncode == 0:
                return
            detail = done.stderr.decode(errors="replace").strip()
        raise BackendError(
            f"the kernel user {owner[0]}:{owner[1]} cannot run {self.runner_python} "
            f"without a sandbox ({detail}); install bubblewrap, or set [container] kernel-uid"
        )

    async def _probe_netns(self) -> None:
        if self.bwrap is None:
            self.netns_problem = "no sandbox"
        else:
            self._nsenter = shutil.which("nsenter")
            if self._nsenter is None:
                self.netns_problem = "nsenter is not installed"
            else:
                self.netns_problem = await trio.to_thread.run_sync(netns.probe, self.netns_root)
        if self.netns_problem:
            log.warning(
                "kernels share the host's network, loopback included (%s)", self.netns_problem
            )
            return
        slirp4netns = None
        if self.network_mode == "outbound":
            slirp4netns = shutil.which("slirp4netns")
            if slirp4netns is None:
                raise BackendError("kernel-network 'outbound' needs slirp4netns")
        self.networks = SessionNetworks(self.netns_root, self.network_mode, slirp4netns)

    @property
    def isolates_network(self) -> bool:
        return self.networks is not None

    def describe(self) -> dict[str, object]:
        owner = self.kernel_owner
        return {
            "backend": self.name,
            "cgroup": self.cgroups.describe() if self.cgroups else f"none ({self.cgroup_problem})",
            "sandbox": "bwrap" if self.bwrap else f"none ({self.bwrap_problem})",
            "network": self.network_mode if self.networks else f"host ({self.netns_problem})",
            "kernel_user": "agent" if owner is None else f"{owner[0]}:{owner[1]}",
            "scratch": f"{self.scratch_type}, {self._scratch_limit()}",
        }

    def _scratch_limit(self) -> str:
        if self.scratch_size:
            return f"{BinarySize(self.scratch_size)} each"
        if self.scratch_type == "memory":
            return "each the kernel's memory limit"
        return "no size limit"

    # -- making kernels -----------------------------------------------------------

    def scratch_dir(self, record: KernelRecord) -> Path:
        return Path(record.scratch_dir)

    async def prepare(self, record: KernelRecord, launch: KernelLaunch) -> None:
        networks = self.networks
        if networks is None:
            await trio.to_thread.run_sync(self._prepare, record, launch)
            return

        async def join() -> None:
            try:
                await networks.join(record.session_id, record.kernel_id)
            except OSError as exc:
                raise BackendError(f"cannot make the session's network: {exc}") from None

        # The namespace is needed only when the kernel spawns: make both at once.
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(join)
                nursery.start_soon(trio.to_thread.run_sync, self._prepare, record, launch)
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None

    def _prepare(self, record: KernelRecord, launch: KernelLaunch) -> None:
        if launch.mounts and self.bwrap is None:
            raise BackendError(self._no_sandbox_for_mounts())
        kid = record.kernel_id
        scratch_dir = self.scratch_root / kid
        sock_dir = self.ipc_base / kid
        owner = self.kernel_owner
        as_owner = owner or (os.getuid(), os.getgid())
        try:
            record.scratch_dir = str(scratch_dir)
            limit = scratch.limit_of(self.scratch_type, self.scratch_size, launch.limits.memory)
            scratch.make(scratch_dir, self.scratch_type, limit, as_owner)
            record.sock_dir = str(sock_dir)
            sock_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(sock_dir, *as_owner)
            record.log_path = str(self.log_dir / f"{kid}.log")
            if launch.bootstrap_script is not None:
                script = scratch_dir / BOOTSTRAP_NAME
                script.write_text(launch.bootstrap_script, encoding="utf-8")
                os.chown(script, *as_owner)
                record.bootstrap = True
            mount_paths = [mount.kernel_path for mount in launch.mounts]
            if launch.dotfiles:
                # Before the SSH keys: a dotfile may make .ssh, which the keys then make 0700.
                install_dotfiles(scratch_dir, launch.dotfiles, as_owner, mount_paths)
            if launch.ssh_keypair is not None:
                install_ssh_keys(scratch_dir, launch.ssh_keypair, as_owner, mount_paths)
            if self.bwrap is not None:
                etc_dir = self.etc_root / kid
                etc_dir.mkdir(mode=0o755, exist_ok=True)
                for name, text in sandbox.host_files(launch.hostname, launch.peers).items():
                    (etc_dir / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise BackendError(f"cannot prepare the kernel's directories: {exc}") from None
        except (SSHKeysRefused, DotfilesRefused, ScratchPathError) as exc:
            raise BackendError(str(exc)) from None
        record.input_addr = f"ipc://{sock_dir}/in"
        record.output_addr = f"ipc://{sock_dir}/out"
        cgroup: KernelCgroup | None = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.create(kid)
                record.cgroup = cgroup.paths
                unenforced = cgroup.apply(launch.limits)
                if owner is not None and self.bwrap is None:
                    # Without a sandbox the prologue that joins the cgroup runs as the user.
                    for procs in cgroup.procs_files:
                        os.chown(procs, *owner)
            except (CgroupError, OSError) as exc:
                raise BackendError(f"cannot set up the kernel's cgroup: {exc}") from None
            if unenforced:
                log.debug("kernel %s: the host cannot enforce %s", kid, ", ".join(unenforced))
        runner = [
            *self._runner_command,
            "--input",
            record.input_addr,
            "--output",
            record.output_addr,
            "--runtime",
            launch.image.runtime_type,
            "--runtime-path",
            launch.image.runtime_path,
            "--service-ports",
            launch.service_ports_label,
        ]
        if launch.image.service_defs is not None:
            runner += ["--service-defs", str(launch.image.service_defs)]
        record.work_dir = KERNEL_HOME if self.bwrap is not None else str(scratch_dir)
        if record.bootstrap:
            runner += [
                "--bootstrap",
                f"{record.work_dir}/{BOOTSTRAP_NAME}",
                "--bootstrap-timeout",
                str(launch.bootstrap_timeout),
            ]
        environ = dict(launch.environ)
        environ["HOME"] = record.work_dir
        command = self._sandboxed(record, launch, runner) if self.bwrap else runner
        if cgroup is not None:
            command = [
                "/bin/sh",
                "-c",
                _JOIN_CGROUPS,
                "bai-kernel",
                *cgroup.procs_files,
                "--",
                *command,
            ]
        record.argv = command
        record.environ = environ
        record.isolation = "bwrap" if self.bwrap else "process"

    def _runtime_paths(self, image: Image) -> list[Path]:
        """The host folders *image*'s kernels need read-only (worked out once per image)."""
        key = (image.runtime_path, image.service_defs)
        found = self._runtime_cache.get(key)
        if found is None:
            extra = [Path(bai.__file__).resolve().parent]
            if image.service_defs is not None:
                extra.append(image.service_defs)
            interpreters = [self.runner_python, image.runtime_path]
            if os.path.realpath(self.runner_python) == os.path.realpath(sys.executable):
                interpreters += [
                    os.path.join(sys.prefix, "bin", "python"),
                    os.path.join(sys.base_prefix, "bin", "python"),
                ]
            found = self._runtime_cache[key] = sandbox.runtime_paths(interpreters, extra)
        return found

    def _sandboxed(
        self, record: KernelRecord, launch: KernelLaunch, runner: list[str]
    ) -> list[str]:
        assert self.bwrap is not None
        devices: list[str] = []
        if launch.environ.get("CUDA_VISIBLE_DEVICES"):
            devices = sorted(glob.glob("/dev/nvidia*"))
        owner = self.kernel_owner
        spec = sandbox.Sandbox(
            bwrap=self.bwrap,
            etc_base=self.etc_root / _ETC_BASE,
            etc_dir=self.etc_root / record.kernel_id,
            scratch_dir=Path(record.scratch_dir),
            sock_dir=Path(record.sock_dir),
            runtime_paths=self._runtime_paths(launch.image),
            hostname=launch.hostname,
            devices=devices,
            shmem=launch.shmem,
            switch_user=((self._setpriv, *owner) if self._setpriv is not None and owner else None),
            netns=(
                (self._nsenter, self.networks.path(record.session_id))
                if self._nsenter is not None and self.networks is not None
                else None
            ),
            system_links=self._system_links,
            mounts=launch.mounts,
        )
        try:
            return sandbox.command(spec, runner)
        except sandbox.MountRefused as exc:
            raise BackendError(str(exc)) from None

    def _no_sandbox_for_mounts(self) -> str:
        return (
            f"virtual folders cannot be mounted on this agent: it has no sandbox "
            f"({self.bwrap_problem or 'not bwrap'}), and without a mount namespace a "
            "read-only folder could not be kept read-only and the kernel would reach "
            "the whole volume"
        )

    def _check_mounts(self, record: KernelRecord) -> None:
        """Raise :class:`BackendError` unless every folder of *record* can be bound safely.

        Runs before each start: the folder must still be a folder (not a
        link bwrap would follow), and the mount points below ``/home/work``,
        which live in the kernel's own scratch folder, must not have become
        links or files while the kernel last ran.
        """
        if self.bwrap is None or self.bwrap not in record.argv:
            raise BackendError(self._no_sandbox_for_mounts())
        for mount in record.mounts:
            problem = _source_problem(mount.host_path) or _mount_point_problem(
                Path(record.scratch_dir), mount.kernel_path
            )
            if problem:
                raise BackendError(f"folder {mount.name!r} cannot be mounted: {problem}")

    async def spawn(self, record: KernelRecord) -> KernelProcess:
        if record.mounts:
            await trio.to_thread.run_sync(self._check_mounts, record)
        try:
            log_fd = os.open(record.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise BackendError(f"cannot open the kernel's log file: {exc}") from None
        if self.kernel_owner is not None:
            # As in a container, the kernel's processes may add to their own log
            # (through /proc/PID/fd/2); the folder around it stays the agent's.
            try:
                os.fchown(log_fd, *self.kernel_owner)
            except OSError as exc:
                os.close(log_fd)
                raise BackendError(f"cannot hand the kernel its log file: {exc}") from None
        # In a sandbox bwrap starts as the agent and setpriv switches users inside.
        owner = self.kernel_owner if self.bwrap is None else None
        try:
            process = await trio.lowlevel.open_process(
                record.argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                cwd=record.scratch_dir,
                env=record.environ,
                start_new_session=True,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                extra_groups=[] if owner else None,
            )
        except OSError as exc:
            raise BackendError(f"cannot start the kernel runner: {exc}") from None
        finally:
            os.close(log_fd)
        record.pid = process.pid
        record.pid_start = start_time(process.pid)
        return ChildProcess(process)

    async def adopt(self, record: KernelRecord) -> KernelProcess | None:
        pid = record.pid
        if pid is None or record.pid_start is None or start_time(pid) != record.pid_start:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # The pid may have died (and been reused) between the check and the pidfd.
        if start_time(pid) != record.pid_start:
            os.close(pidfd)
            return None
        if self.networks is not None:
            try:
                await self.networks.join(record.session_id, record.kernel_id)
            except OSError as exc:
                log.error("kernel %s: cannot restore its network: %s", record.kernel_id, exc)
                os.close(pidfd)
                return None
        return AdoptedProcess(pid, pidfd)

    async def connect_port(self, record: KernelRecord, port: int) -> trio.SocketStream:
        """A connection to *port* on the loopback of the kernel's network namespace."""
        if self.networks is None:
            return await super().connect_port(record, port)
        return await self.networks.connect(record.session_id, port)

    # -- ending kernels -----------------------------------------------------------

    def _cgroup(self, record: KernelRecord) -> KernelCgroup | None:
        if not record.cgroup or self.cgroups is None:
            return None
        return self.cgroups.attach(record.kernel_id, record.cgroup)

    async def terminate(
        self, record: KernelRecord, process: KernelProcess | None, *, grace: float
    ) -> None:
        pid = record.pid
        if pid is not None and process is not None and process.alive() and grace > 0:
            # The runner shuts down on SIGTERM (runs interrupted, services stopped);
            # the sandbox around it ends with it.
            runner = self._runner_pid(record)
            if runner is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(runner, signal.SIGTERM)
                with trio.move_on_after(grace):
                    await process.wait()
        await trio.to_thread.run_sync(self._kill_all, record)
        if process is not None:
            with trio.move_on_after(5.0):
                await process.wait()

    def _runner_pid(self, record: KernelRecord) -> int | None:
        """Host pid of the runner: the kernel's top process, or two levels below in bwrap."""
        pid = record.pid
        if pid is None or start_time(pid) != record.pid_start:
            return None
        if not record.argv or self.bwrap is None or self.bwrap not in record.argv:
            return pid
        for init in children(pid):
            for runner in children(init):
                return runner
        return None

    def _kill_all(self, record: KernelRecord) -> None:
        pid = record.pid
        ours = pid is not None and start_time(pid) == record.pid_start
        # A pid-namespace init dies with its whole namespace; find it before its parent goes.
        inits = children(pid) if pid is not None and ours and self.bwrap else []
        cgroup = self._cgroup(record)
        if cgroup is not None and not cgroup.kill():
            log.error("kernel %s: processes survive in its cgroup", record.kernel_id)
        if pid is not None and ours:
            signal_group(pid, signal.SIGKILL)
            for init in inits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)
        if cgroup is None and pid is not None:
            for member in session_members([pid])[pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)

    async def cleanup(self, record: KernelRecord) -> None:
        await trio.to_thread.run_sync(self._cleanup, record)
        if self.networks is not None:
            await self.networks.leave(record.session_id, record.kernel_id)

    def _cleanup(self, record: KernelRecord) -> None:
        cgroup = self._cgroup(record)
        if cgroup is not None:
            cgroup.kill()
            try:
                cgroup.remove()
            except CgroupError as exc:
                log.error("kernel %s: %s", record.kernel_id, exc)
        if record.scratch_dir:
            scratch.release(Path(record.scratch_dir))
        for folder in (record.sock_dir, str(self.etc_root / record.kernel_id)):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        if record.log_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record.log_path)

    # -- measuring and sweeping ---------------------------------------------------

    async def usage(self, records: Collection[KernelRecord]) -> dict[str, CgroupUsage]:
        return await trio.to_thread.run_sync(self._usage, list(records))

    def _usage(self, records: list[KernelRecord]) -> dict[str, CgroupUsage]:
        result: dict[str, CgroupUsage] = {}
        without: dict[int, str] = {}
        for record in records:
            cgroup = self._cgroup(record)
            if cgroup is not None:
                result[record.kernel_id] = cgroup.usage()
            elif record.pid is not None:
                without[record.pid] = record.kernel_id
        if without:
            tick = os.sysconf("SC_CLK_TCK")
            page = os.sysconf("SC_PAGE_SIZE")
            for sid, members in session_members(without).items():
                cpu = memory = io_read = io_write = 0
                for pid in members:
                    cpu_ticks, rss_pages, reads, writes = proc_usage(pid)
                    cpu += cpu_ticks
                    memory += rss_pages * page
                    io_read += reads
                    io_write += writes
                result[without[sid]] = CgroupUsage(
                    cpu_ns=cpu * 1_000_000_000 // tick,
                    memory=memory,
                    io_read=io_read,
                    io_write=io_write,
                    pids=len(members),
                )
        return result

    async def sweep(self, known: Collection[str]) -> list[str]:
        return await trio.to_thread.run_sync(self._sweep, set(known))

    def _sweep(self, known: set[str]) -> list[str]:
        removed: list[str] = []
        if self.cgroups is not None:
            for name, cgroup in self.cgroups.children().items():
                if name in known:
                    continue
                cgroup.kill()
                try:
                    cgroup.remove()
                except CgroupError as exc:
                    log.error("cannot remove the leftover cgroup %s: %s", name, exc)
                removed.append(name)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.scratch_root):
                # A size-limited scratch folder has its image beside it.
                name = entry.name.removesuffix(".img")
                if _is_kernel_id(name) and name not in known:
                    scratch.release(self.scratch_root / name)
                    removed.append(name)
        for folder in (self.ipc_base, self.etc_root):
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if _is_kernel_id(entry.name) and entry.name not in known:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed.append(entry.name)
        if self.networks is not None:
            self.networks.sweep()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.log_dir):
                stem = entry.name.removesuffix(".log")
                if entry.name.endswith(".log") and _is_kernel_id(stem) and stem not in known:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return sorted(set(removed))

    async def shutdown(self) -> None:
        if self.networks is not None:
            await self.networks.aclose()
        if self.cgroups is not None:
            await trio.to_thread.run_sync(self.cgroups.remove_parent)
        await trio.to_thread.run_sync(self._remove_shared_folders)

    def _remove_shared_folders(self) -> None:
        """Remove the common ``/etc`` and the namespace folder once no kernel needs them."""
        with contextlib.suppress(OSError):
            if any(_is_kernel_id(name) for name in os.listdir(self.etc_root)):
                return
        shutil.rmtree(self.etc_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.netns_root.rmdir()


def _fast_runner_command(runner_python: str) -> list[str] | None:
    """The runner's command line when it runs on the agent's own interpreter (else None).

    A kernel start is mostly Python start-up, twice (the runner and the
    kernel's Python), so the runner skips ``site`` (``-S``: no ``.pth``
    processing, no editable-install finder) and gets the few folders it
    imports from on ``sys.path`` directly; ``-I`` keeps the kernel's working
    directory (the user's files) and ``PYTHON*`` variables out of its imports.
    Its bytecode is compiled here once, because the sandbox's read-only root
    would make every runner compile it again.
    """
    import compileall
    import site

    if os.path.realpath(runner_python) != os.path.realpath(sys.executable):
        return None
    package = Path(bai.__file__).resolve().parent
    with contextlib.suppress(OSError):
        compileall.compile_file(str(package / "__init__.py"), quiet=2)
        compileall.compile_dir(str(package / "kernel"), quiet=2)
    paths = [str(package.parent), *site.getsitepackages()]
    bootstrap = (
        f"import sys; sys.path[:0] = {paths!r}; "
        "from bai.kernel.runner import main; raise SystemExit(main())"
    )
    return [sys.executable, "-I", "-S", "-c", bootstrap]


def _source_problem(host_path: str) -> str | None:
    """Why a folder's host path cannot be bound (None: it is a folder, not a link)."""
    try:
        info = os.lstat(host_path)
    except FileNotFoundError:
        return f"{host_path} does not exist on this agent's host (is its volume shared here?)"
    except OSError as exc:
        return f"{host_path} cannot be read: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"{host_path} is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return f"{host_path} is not a folder"
    return None


def _mount_point_problem(scratch_dir: Path, kernel_path: str) -> str | None:
    """Why *kernel_path* cannot be a mount point in the kernel's scratch folder (None: it can).

    Only paths below ``/home/work`` live in the scratch folder; bwrap makes
    whatever part of the path is missing.
    """
    if not kernel_path.startswith(KERNEL_HOME + "/"):
        return None
    current = scratch_dir
    shown = KERNEL_HOME
    for part in kernel_path[len(KERNEL_HOME) + 1 :].split("/"):
        current = current / part
        shown = f"{shown}/{part}"
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{shown} cannot be read: {exc.strerror}"
        if stat.S_ISLNK(info.st_mode):
            return f"{shown} is a symbolic link in the kernel's work folder"
        if not stat.S_ISDIR(info.st_mode):
            return f"{shown} is a file in the kernel's work folder, not a folder"
    return None


def _is_kernel_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False
