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
  session has a bootstrap script (the runner runs it before it serves);
* where ``bwrap`` is installed and works, **private mount, pid, ipc and uts
  namespaces**: the host root read-only, fresh ``/proc``, ``/dev``, ``/tmp``
  and ``/home``, the scratch directory at ``/home/work``, the other kernels'
  scratch, socket and registry folders hidden, all capabilities dropped, and
  the cluster hostname.  Without it the agent logs the weaker isolation once.

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
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Final

import trio

import bai
from bai.agent.backends.base import (
    BOOTSTRAP_NAME,
    BackendError,
    KernelBackend,
    KernelLaunch,
    KernelProcess,
)
from bai.agent.cgroups import CgroupDriver, CgroupError, CgroupUsage, KernelCgroup, detect
from bai.agent.registry import KernelRecord

log = logging.getLogger(__name__)

#: Where the scratch directory appears inside a bwrap sandbox.
KERNEL_HOME: Final = "/home/work"
#: The prologue that moves the shell into the kernel's cgroups, then execs the runner.
_JOIN_CGROUPS: Final = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)
_BWRAP_PROBE_TIMEOUT: Final = 10.0
_IPC_PATH_MAX: Final = 107


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (``/proc/PID/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        return int(fields[19]) if fields[0] != b"Z" else None
    except (ValueError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _session_members(sids: Collection[int]) -> dict[int, list[int]]:
    """Live processes of each session in *sids* (a scan of /proc)."""
    found: dict[int, list[int]] = {sid: [] for sid in sids}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[0] != b"Z":
            sid = int(fields[3])
            if sid in found:
                found[sid].append(int(entry.name))
    return found


class _Child(KernelProcess):
    """A kernel process this agent started (its exit code is known)."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self.pid = process.pid

    async def wait(self) -> int | None:
        code = await self._process.wait()
        return 128 - code if code < 0 else code

    def alive(self) -> bool:
        return self._process.poll() is None


class _Adopted(KernelProcess):
    """A kernel process found again after an agent restart, watched through a pidfd."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd = pidfd
        self._ended = False

    async def wait(self) -> int | None:
        if not self._ended:
            await trio.lowlevel.wait_readable(self._pidfd)
            if not self._ended:
                self._ended = True
                os.close(self._pidfd)
        return None

    def alive(self) -> bool:
        return not self._ended and _start_time(self.pid) is not None


class LocalBackend(KernelBackend):
    """Kernels as local process trees; see the module docstring.

    *cgroup_parent* names the agent's parent cgroup (relative to the agent's
    own cgroup, or absolute from the hierarchy root); *use_bwrap* forces the
    sandbox on (failing kernels if it does not work) or off; None probes it.
    *kernel_uid*/*kernel_gid* run kernels as that user (the agent must be root).
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
    ) -> None:
        self.agent_id = agent_id
        self.scratch_root = scratch_root.resolve()
        self.ipc_base = ipc_base.resolve()
        self.log_dir = log_dir.resolve()
        self.runner_python = runner_python
        self.cgroup_parent = cgroup_parent or f"bai.{agent_id}"
        self._use_bwrap = use_bwrap
        self.kernel_uid = kernel_uid
        self.kernel_gid = kernel_gid
        self.cgroups: CgroupDriver | None = None
        self.cgroup_problem = ""
        self.bwrap: str | None = None
        self.bwrap_problem = ""
        self._runner_command = [runner_python, "-I", "-m", "bai.kernel"]

    # -- host probing ------------------------------------------------------------

    async def init(self) -> None:
        longest = len(str(self.ipc_base)) + 1 + 36 + len("/out")
        if longest > _IPC_PATH_MAX:
            raise BackendError(
                f"ipc-base-path {self.ipc_base} is too long for kernel sockets "
                f"({longest} > {_IPC_PATH_MAX} bytes)"
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
        fast = await trio.to_thread.run_sync(_fast_runner_command, self.runner_python)
        if fast is not None:
            self._runner_command = fast

    def _make_dirs(self) -> None:
        for directory in (self.scratch_root, self.ipc_base, self.log_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
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
                try:
                    with trio.fail_after(_BWRAP_PROBE_TIMEOUT):
                        done = await trio.run_process(argv, capture_stderr=True, check=False)
                except (OSError, trio.TooSlowError) as exc:
                    self.bwrap_problem = f"bwrap does not work here ({exc})"
                else:
                    if done.returncode == 0:
                        self.bwrap = path
                    else:
                        detail = done.stderr.decode(errors="replace").strip()
                        self.bwrap_problem = f"bwrap does not work here ({detail})"
        if self.bwrap is None:
            if self._use_bwrap:
                raise BackendError(f"bwrap was required but {self.bwrap_problem}")
            log.warning(
                "%s: kernels share the host's mount, pid and ipc namespaces "
                "(weaker isolation than with bubblewrap)",
                self.bwrap_problem,
            )

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "cgroup": self.cgroups.describe() if self.cgroups else f"none ({self.cgroup_problem})",
            "sandbox": "bwrap" if self.bwrap else f"none ({self.bwrap_problem})",
        }

    # -- making kernels -----------------------------------------------------------

    @property
    def _owner(self) -> tuple[int, int] | None:
        if self.kernel_uid is None and self.kernel_gid is None:
            return None
        uid = os.getuid() if self.kernel_uid is None else self.kernel_uid
        gid = os.getgid() if self.kernel_gid is None else self.kernel_gid
        return uid, gid

    def scratch_dir(self, record: KernelRecord) -> Path:
        return Path(record.scratch_dir)

    async def prepare(self, record: KernelRecord, launch: KernelLaunch) -> None:
        await trio.to_thread.run_sync(self._prepare, record, launch)

    def _prepare(self, record: KernelRecord, launch: KernelLaunch) -> None:
        kid = record.kernel_id
        scratch = self.scratch_root / kid
        sock_dir = self.ipc_base / kid
        try:
            record.scratch_dir = str(scratch)
            scratch.mkdir(exist_ok=True)
            record.sock_dir = str(sock_dir)
            sock_dir.mkdir(exist_ok=True)
            owner = self._owner
            if owner is not None:
                os.chown(scratch, *owner)
                os.chown(sock_dir, *owner)
            record.log_path = str(self.log_dir / f"{kid}.log")
            if launch.bootstrap_script is not None:
                script = scratch / BOOTSTRAP_NAME
                script.write_text(launch.bootstrap_script, encoding="utf-8")
                if owner is not None:
                    os.chown(script, *owner)
                record.bootstrap = True
        except OSError as exc:
            raise BackendError(f"cannot prepare the kernel's directories: {exc}") from None
        record.input_addr = f"ipc://{sock_dir}/in"
        record.output_addr = f"ipc://{sock_dir}/out"
        cgroup: KernelCgroup | None = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.create(kid)
                record.cgroup = cgroup.paths
                unenforced = cgroup.apply(launch.limits)
                if owner is not None:
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
        record.work_dir = KERNEL_HOME if self.bwrap is not None else str(scratch)
        if record.bootstrap:
            runner += [
                "--bootstrap",
                f"{record.work_dir}/{BOOTSTRAP_NAME}",
                "--bootstrap-timeout",
                str(launch.bootstrap_timeout),
            ]
        environ = dict(launch.environ)
        environ["HOME"] = record.work_dir
        command = [*self._sandbox(record, launch), *runner] if self.bwrap else runner
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

    def _sandbox(self, record: KernelRecord, launch: KernelLaunch) -> list[str]:
        assert self.bwrap is not None
        needed = [
            Path(os.path.realpath(self.runner_python)),
            Path(self.runner_python).parent,
            Path(os.path.realpath(launch.image.runtime_path)),
            Path(bai.__file__).resolve().parent,
        ]
        if launch.image.service_defs is not None:
            needed.append(launch.image.service_defs)

        def hideable(folder: Path) -> bool:
            return not any(p == folder or folder in p.parents for p in needed)

        argv = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--tmpfs", "/dev/shm"]
        if launch.environ.get("CUDA_VISIBLE_DEVICES"):
            for node in sorted(glob.glob("/dev/nvidia*")):
                argv += ["--dev-bind-try", node, node]
        for folder in dict.fromkeys(
            [Path("/tmp"), Path("/home"), self.scratch_root, self.ipc_base, self.log_dir]
        ):
            if hideable(folder):
                argv += ["--tmpfs", str(folder)]
        argv += ["--bind", record.scratch_dir, KERNEL_HOME]
        argv += ["--bind", record.sock_dir, record.sock_dir]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        if launch.hostname:
            argv += ["--hostname", launch.hostname]
        if os.geteuid() == 0 and self.kernel_uid in (None, 0):
            argv += ["--cap-drop", "ALL"]
        argv += ["--chdir", KERNEL_HOME, "--"]
        return argv

    async def spawn(self, record: KernelRecord) -> KernelProcess:
        try:
            log_fd = os.open(record.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise BackendError(f"cannot open the kernel's log file: {exc}") from None
        owner = self._owner
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
        record.pid_start = _start_time(process.pid)
        return _Child(process)

    async def adopt(self, record: KernelRecord) -> KernelProcess | None:
        pid = record.pid
        if pid is None or record.pid_start is None or _start_time(pid) != record.pid_start:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # The pid may have died (and been reused) between the check and the pidfd.
        if _start_time(pid) != record.pid_start:
            os.close(pidfd)
            return None
        return _Adopted(pid, pidfd)

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
        if pid is None or _start_time(pid) != record.pid_start:
            return None
        if not record.argv or self.bwrap is None or self.bwrap not in record.argv:
            return pid
        for init in _children(pid):
            for runner in _children(init):
                return runner
        return None

    def _kill_all(self, record: KernelRecord) -> None:
        pid = record.pid
        ours = pid is not None and _start_time(pid) == record.pid_start
        # A pid-namespace init dies with its whole namespace; find it before its parent goes.
        inits = _children(pid) if pid is not None and ours and self.bwrap else []
        cgroup = self._cgroup(record)
        if cgroup is not None and not cgroup.kill():
            log.error("kernel %s: processes survive in its cgroup", record.kernel_id)
        if pid is not None and ours:
            _signal_group(pid, signal.SIGKILL)
            for init in inits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGKILL)
        if cgroup is None and pid is not None:
            for member in _session_members([pid])[pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)

    async def cleanup(self, record: KernelRecord) -> None:
        await trio.to_thread.run_sync(self._cleanup, record)

    def _cleanup(self, record: KernelRecord) -> None:
        cgroup = self._cgroup(record)
        if cgroup is not None:
            cgroup.kill()
            try:
                cgroup.remove()
            except CgroupError as exc:
                log.error("kernel %s: %s", record.kernel_id, exc)
        for folder in (record.sock_dir, record.scratch_dir):
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
            for sid, members in _session_members(without).items():
                cpu = memory = io_read = io_write = 0
                for pid in members:
                    cpu_ticks, rss_pages, reads, writes = _proc_usage(pid)
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
        for folder in (self.scratch_root, self.ipc_base):
            with contextlib.suppress(OSError):
                for entry in os.scandir(folder):
                    if _is_kernel_id(entry.name) and entry.name not in known:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed.append(entry.name)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.log_dir):
                stem = entry.name.removesuffix(".log")
                if entry.name.endswith(".log") and _is_kernel_id(stem) and stem not in known:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return sorted(set(removed))

    async def shutdown(self) -> None:
        if self.cgroups is not None:
            await trio.to_thread.run_sync(self.cgroups.remove_parent)


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


def _is_kernel_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def _proc_usage(pid: int) -> tuple[int, int, int, int]:
    """CPU ticks, resident pages, bytes read and written of one process (zeros if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        cpu = int(fields[11]) + int(fields[12])
        rss = int(fields[21])
    except (OSError, IndexError, ValueError):
        return 0, 0, 0, 0
    reads = writes = 0
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key == b"read_bytes":
                    reads = int(value)
                elif key == b"write_bytes":
                    writes = int(value)
    except (OSError, ValueError):
        pass
    return cpu, rss, reads, writes
