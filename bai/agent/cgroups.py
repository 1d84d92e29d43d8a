"""Kernel cgroups on cgroup v1 and v2: create, limit, measure, kill and remove.

Each local kernel lives in one cgroup per hierarchy, named after the kernel,
under a parent cgroup owned by one agent (``<own cgroup>/bai.<agent-id>`` by
default, so kernels also stay inside whatever limits the agent itself runs
under).  A process joins the kernel's cgroups by writing its own pid to every
file of :attr:`KernelCgroup.procs_files` before it execs anything, so every
descendant is born inside them and cannot escape (only root can move tasks).

Guarantees:

* :func:`detect` never raises for a host without usable cgroups; it returns
  ``None`` and a reason (no mount, not writable), and the agent then runs
  kernels without limits, saying so once.
* :meth:`KernelCgroup.kill` leaves no process behind in the cgroup, even a
  fork bomb: on v1 the freezer stops every task before the SIGKILLs (when the
  freezer hierarchy is mounted), on v2 ``cgroup.kill`` kills the whole cgroup
  atomically (Linux 5.14+; older kernels freeze first like v1).
* Every failure to write a control file raises :class:`CgroupError` naming the
  file; reading statistics never raises (a missing file reads as ``None``).

All calls are blocking file-system operations of a few microseconds each; the
agent runs them through ``trio.to_thread.run_sync`` where they may wait (kill,
remove).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Final

from bai.common.errors import BaiError

#: v1 hierarchies a kernel joins (those mounted on the host).
V1_CONTROLLERS: Final = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer")
#: v2 controllers the agent enables for kernels (those the host offers).
V2_CONTROLLERS: Final = ("cpu", "cpuset", "memory", "pids", "io")
#: The CFS period used for cpu quotas (microseconds).
CPU_PERIOD_US: Final = 100_000
#: The smallest quota the kernel accepts (microseconds).
_MIN_QUOTA_US: Final = 1000
_MOUNTINFO: Final = Path("/proc/self/mountinfo")
_PROC_CGROUP: Final = Path("/proc/self/cgroup")


class CgroupError(BaiError):
    """A cgroup could not be created, configured, emptied or removed."""


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """What a kernel may use; ``None`` means no limit.

    ``cpu`` is in cores (a CFS quota of ``cpu`` times the period), ``memory``
    in bytes (swap is not allowed on top), ``pids`` counts tasks (threads
    included), ``cpus`` pins the kernel to those CPU numbers.
    """

    cpu: Decimal | None = None
    memory: int | None = None
    pids: int | None = None
    cpus: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class CgroupUsage:
    """A sample of a kernel's consumption; ``None`` where the host does not measure it."""

    cpu_ns: int | None = None
    memory: int | None = None
    memory_peak: int | None = None
    io_read: int | None = None
    io_write: int | None = None
    pids: int | None = None
    oom_kills: int | None = None


def _write(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise CgroupError(f"cannot open {path}: {exc.strerror}") from None
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise CgroupError(f"cannot write {text!r} to {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _keyed(text: str | None, key: str) -> int | None:
    """The value of ``key value`` lines (``memory.stat``, ``cpu.stat``, ...)."""
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def _oom_file(paths: Mapping[str, str]) -> Path | None:
    """The file that counts OOM kills in the cgroup of these :attr:`KernelCgroup.paths`."""
    if "memory" in paths:
        return Path(paths["memory"], "memory.oom_control")
    if "unified" in paths:
        return Path(paths["unified"], "memory.events")
    return None


def oom_kill_count(paths: Mapping[str, str]) -> int | None:
    """How many processes the OOM killer ended in the cgroup of these :attr:`KernelCgroup.paths`.

    None where the host does not count them.
    """
    found = _oom_file(paths)
    return _keyed(_read(found), "oom_kill") if found is not None else None


class OomKillCounter:
    """:func:`oom_kill_count` of one cgroup, read through a descriptor kept open.

    One ``pread`` instead of an open, read and close: cheap enough to ask
    after every run.  :meth:`close` before the cgroup is removed.
    """

    def __init__(self, paths: Mapping[str, str]) -> None:
        self._file = _oom_file(paths)
        self._fd: int | None = None

    def read(self) -> int | None:
        if self._file is None:
            return None
        try:
            if self._fd is None:
                self._fd = os.open(self._file, os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(self._fd, 4096, 0)
        except OSError:
            return None
        return _keyed(data.decode(errors="replace"), "oom_kill")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _procs(directory: Path) -> set[int]:
    text = _read(directory / "cgroup.procs")
    if text is None:
        return set()
    return {int(line) for line in text.split() if line.isdigit()}


def _rmdir(directory: Path, deadline: float) -> None:
    """Remove an emptied cgroup directory, waiting out the kernel's brief EBUSY."""
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"cannot remove {directory}: {exc.strerror}") from None
        time.sleep(0.01)


def _kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in sorted(set(cpus)))


def _quota_us(cores: Decimal) -> int:
    quota = (cores * CPU_PERIOD_US).to_integral_value(rounding=ROUND_DOWN)
    return max(int(quota), _MIN_QUOTA_US)


class KernelCgroup(ABC):
    """The cgroup(s) of one kernel."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abstractmethod
    def paths(self) -> dict[str, str]:
        """Directory of each hierarchy (controller name -> path), kept in the kernel store."""

    @property
    @abstractmethod
    def procs_files(self) -> tuple[str, ...]:
        """The files a process writes its pid to in order to join this cgroup."""

    @abstractmethod
    def apply(self, limits: CgroupLimits) -> list[str]:
        """Set *limits*; returns the limits the host cannot enforce (e.g. ``["memory"]``).

        Raises :class:`CgroupError` when the host has the controller but refuses the value.
        """

    @abstractmethod
    def pids(self) -> set[int]:
        """The processes currently in the cgroup."""

    @abstractmethod
    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup; True once it is empty (within *timeout*)."""

    def _kill_until_empty(self, deadline: float) -> bool:
        """SIGKILL whatever is left until the cgroup is empty; False once *deadline* passes."""
        while True:
            remaining = self.pids()
            if not remaining:
                return True
            if time.monotonic() >= deadline:
                return False
            _kill_pids(remaining)
            time.sleep(0.005)

    @abstractmethod
    def remove(self, timeout: float = 2.0) -> None:
        """Remove the (emptied) cgroup; a cgroup already gone is not an error."""

    @abstractmethod
    def usage(self) -> CgroupUsage:
        """Current consumption; never raises."""

    def exists(self) -> bool:
        """Whether any of the cgroup's directories is still there."""
        return any(Path(p).is_dir() for p in self.paths.values())


class CgroupDriver(ABC):
    """Creates and finds the kernel cgroups of one agent on one host."""

    version: int
    #: The controllers (v1 hierarchies) kernels get.
    controllers: tuple[str, ...]

    @abstractmethod
    def create(self, name: str) -> KernelCgroup:
        """Make (or reuse) kernel cgroup *name*; raises :class:`CgroupError`."""

    @abstractmethod
    def attach(self, name: str, paths: Mapping[str, str]) -> KernelCgroup:
        """The kernel cgroup recorded as *paths* (after an agent restart)."""

    @abstractmethod
    def children(self) -> dict[str, KernelCgroup]:
        """Every kernel cgroup under this agent's parent, by name (to find leftovers)."""

    @abstractmethod
    def remove_parent(self) -> None:
        """Remove the agent's parent cgroup if it is empty (at shutdown); never raises."""

    def describe(self) -> str:
        """One line for the start-up log."""
        return f"cgroup v{self.version} ({', '.join(self.controllers)})"


# --------------------------------------------------------------------------- v1


class _V1Cgroup(KernelCgroup):
    def __init__(self, name: str, dirs: Mapping[str, Path]) -> None:
        super().__init__(name)
        self._dirs = dict(dirs)
        # One directory per mounted hierarchy (co-mounted controllers share one).
        self._unique = list(dict.fromkeys(self._dirs.values()))

    @property
    def paths(self) -> dict[str, str]:
        return {c: str(d) for c, d in self._dirs.items()}

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(d / "cgroup.procs") for d in self._unique)

    def apply(self, limits: CgroupLimits) -> list[str]:
        missing: list[str] = []
        cpu = self._dirs.get("cpu")
        if limits.cpu is not None:
            if cpu is None:
                missing.append("cpu")
            else:
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                quota = _quota_us(limits.cpu) if limits.cpu > 0 else -1
                _write(cpu / "cpu.cfs_quota_us", str(quota))
        memory = self._dirs.get("memory")
        if limits.memory is not None:
            if memory is None:
                missing.append("memory")
            else:
                self._set_memory(memory, limits.memory)
        pids = self._dirs.get("pids")
        if limits.pids is not None:
            if pids is None:
                missing.append("pids")
            else:
                _write(pids / "pids.max", str(limits.pids))
        cpuset = self._dirs.get("cpuset")
        if limits.cpus is not None:
            if cpuset is None:
                missing.append("cpuset")
            else:
                _write(cpuset / "cpuset.cpus", _cpu_list(limits.cpus))
        return missing

    @staticmethod
    def _set_memory(directory: Path, limit: int) -> None:
        memsw = directory / "memory.memsw.limit_in_bytes"
        # memsw (memory + swap) must never be below the plain limit, so lower it
        # last when raising and first when lowering; hosts without swap
        # accounting refuse it, which leaves swap unlimited but is no error.
        current = _read_int(directory / "memory.limit_in_bytes")
        lowering = current is not None and limit < current
        if lowering:
            with contextlib.suppress(CgroupError):
                _write(memsw, str(limit))
        _write(directory / "memory.limit_in_bytes", str(limit))
        if not lowering:
            with contextlib.suppress(CgroupError):
                _write(memsw, str(limit))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self._unique:
            found |= _procs(directory)
        return found

    def kill(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        freezer = self._dirs.get("freezer")
        frozen = False
        if freezer is not None and (freezer / "freezer.state").exists():
            with contextlib.suppress(CgroupError):
                _write(freezer / "freezer.state", "FROZEN")
                frozen = True
                while (
                    _read(freezer / "freezer.state") or ""
                ).strip() == "FREEZING" and time.monotonic() < deadline:
                    time.sleep(0.001)
        try:
            _kill_pids(self.pids())
        finally:
            if frozen and freezer is not None:
                with contextlib.suppress(CgroupError):
                    _write(freezer / "freezer.state", "THAWED")
        return self._kill_until_empty(deadline)

    def remove(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for directory in self._unique:
            _rmdir(directory, deadline)

    def usage(self) -> CgroupUsage:
        cpuacct = self._dirs.get("cpuacct")
        memory = self._dirs.get("memory")
        pids = self._dirs.get("pids")
        blkio = self._dirs.get("blkio")
        io_read = io_write = None
        if blkio is not None:
            io_read, io_write = self._blkio(blkio)
        return CgroupUsage(
            cpu_ns=_read_int(cpuacct / "cpuacct.usage") if cpuacct else None,
            memory=_read_int(memory / "memory.usage_in_bytes") if memory else None,
            memory_peak=_read_int(memory / "memory.max_usage_in_bytes") if memory else None,
            io_read=io_read,
            io_write=io_write,
            pids=_read_int(pids / "pids.current") if pids else None,
            oom_kills=oom_kill_count(self.paths),
        )

    @staticmethod
    def _blkio(directory: Path) -> tuple[int | None, int | None]:
        text = _read(directory / "blkio.throttle.io_service_bytes_recursive")
        if text is None:
            return None, None
        read = write = 0
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                if parts[1] == "Read":
                    read += int(parts[2])
                elif parts[1] == "Write":
                    write += int(parts[2])
        return read, write


class CgroupV1(CgroupDriver):
    """Kernel cgroups in the v1 hierarchies (one directory per mounted controller)."""

    version = 1

    def __init__(self, parents: Mapping[str, Path]) -> None:
        self._parents = dict(parents)
        self.controllers = tuple(self._parents)
        for controller, parent in self._parents.items():
            self._make_dir(controller, parent)

    @staticmethod
    def _make_dir(controller: str, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot create {directory}: {exc.strerror}") from None
        if controller == "cpuset":
            # A new cpuset starts empty and takes no task until given cpus and mems.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not (_read(directory / name) or "").strip():
                    _write(directory / name, (_read(directory.parent / name) or "").strip())

    def _dirs(self, name: str) -> dict[str, Path]:
        return {c: p / name for c, p in self._parents.items()}

    def create(self, name: str) -> KernelCgroup:
        dirs = self._dirs(name)
        for controller, directory in dirs.items():
            self._make_dir(controller, directory)
        return _V1Cgroup(name, dirs)

    def attach(self, name: str, paths: Mapping[str, str]) -> KernelCgroup:
        return _V1Cgroup(name, {c: Path(p) for c, p in paths.items()})

    def children(self) -> dict[str, KernelCgroup]:
        names: set[str] = set()
        for parent in self._parents.values():
            with contextlib.suppress(OSError):
                names |= {entry.name for entry in os.scandir(parent) if entry.is_dir()}
        return {name: _V1Cgroup(name, self._dirs(name)) for name in sorted(names)}

    def remove_parent(self) -> None:
        for parent in dict.fromkeys(self._parents.values()):
            with contextlib.suppress(OSError):
                parent.rmdir()


# --------------------------------------------------------------------------- v2


class _V2Cgroup(KernelCgroup):
    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(name)
        self._dir = directory

    @property
    def paths(self) -> dict[str, str]:
        return {"unified": str(self._dir)}

    @property
    def procs_files(self) -> tuple[str, ...]:
        return (str(self._dir / "cgroup.procs"),)

    def apply(self, limits: CgroupLimits) -> list[str]:
        missing: list[str] = []
        d = self._dir
        if limits.cpu is not None:
            if not (d / "cpu.max").exists():
                missing.append("cpu")
            else:
                quota = str(_quota_us(limits.cpu)) if limits.cpu > 0 else "max"
                _write(d / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        if limits.memory is not None:
            if not (d / "memory.max").exists():
                missing.append("memory")
            else:
                _write(d / "memory.max", str(limits.memory))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
        if limits.pids is not None:
            if not (d / "pids.max").exists():
                missing.append("pids")
            else:
                _write(d / "pids.max", str(limits.pids))
        if limits.cpus is not None:
            if not (d / "cpuset.cpus").exists():
                missing.append("cpuset")
            else:
                _write(d / "cpuset.cpus", _cpu_list(limits.cpus))
        return missing

    def pids(self) -> set[int]:
        return _procs(self._dir)

    def kill(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        if not self._dir.is_dir():
            return True
        if (self._dir / "cgroup.kill").exists():
            with contextlib.suppress(CgroupError):
                _write(self._dir / "cgroup.kill", "1")
        elif (self._dir / "cgroup.freeze").exists():
            with contextlib.suppress(CgroupError):
                _write(self._dir / "cgroup.freeze", "1")
            try:
                _kill_pids(self.pids())
            finally:
                with contextlib.suppress(CgroupError):
                    _write(self._dir / "cgroup.freeze", "0")
        return self._kill_until_empty(deadline)

    def remove(self, timeout: float = 2.0) -> None:
        _rmdir(self._dir, time.monotonic() + timeout)

    def usage(self) -> CgroupUsage:
        d = self._dir
        usec = _keyed(_read(d / "cpu.stat"), "usage_usec")
        io_read = io_write = None
        io = _read(d / "io.stat")
        if io is not None:
            io_read = io_write = 0
            for line in io.splitlines():
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if value.isdigit():
                        if key == "rbytes":
                            io_read += int(value)
                        elif key == "wbytes":
                            io_write += int(value)
        return CgroupUsage(
            cpu_ns=usec * 1000 if usec is not None else None,
            memory=_read_int(d / "memory.current"),
            memory_peak=_read_int(d / "memory.peak"),
            io_read=io_read,
            io_write=io_write,
            pids=_read_int(d / "pids.current"),
            oom_kills=oom_kill_count(self.paths),
        )


class CgroupV2(CgroupDriver):
    """Kernel cgroups in the unified hierarchy.

    The controllers of :data:`V2_CONTROLLERS` that the host offers are enabled
    in ``cgroup.subtree_control`` of every ancestor of the kernels.  Where that
    is refused (v2's rule: no processes in a cgroup that delegates controllers
    -- the agent's own cgroup, say), kernels still get their own cgroups for
    killing and accounting, and :attr:`controllers` tells which limits work.
    """

    version = 2

    def __init__(self, mount: Path, parent: Path) -> None:
        self._mount = mount
        self._parent = parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot create {parent}: {exc.strerror}") from None
        self.problem = ""
        offered = set((_read(mount / "cgroup.controllers") or "").split())
        wanted = [c for c in V2_CONTROLLERS if c in offered]
        enabled: list[str] = []
        if wanted:
            enabled = self._enable(wanted)
        self.controllers = tuple(enabled)

    def _enable(self, wanted: Sequence[str]) -> list[str]:
        """Enable *wanted* from the mount down to the parent; returns what the parent delegates."""
        chain = [self._mount]
        for part in self._parent.relative_to(self._mount).parts:
            chain.append(chain[-1] / part)
        for directory in chain:
            available = set((_read(directory / "cgroup.controllers") or "").split())
            todo = [c for c in wanted if c in available]
            if not todo:
                continue
            try:
                _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in todo))
            except CgroupError as exc:
                self.problem = str(exc)
        delegated = set((_read(self._parent / "cgroup.subtree_control") or "").split())
        return [c for c in wanted if c in delegated]

    def create(self, name: str) -> KernelCgroup:
        directory = self._parent / name
        try:
            directory.mkdir(exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot create {directory}: {exc.strerror}") from None
        return _V2Cgroup(name, directory)

    def attach(self, name: str, paths: Mapping[str, str]) -> KernelCgroup:
        return _V2Cgroup(name, Path(paths.get("unified", str(self._parent / name))))

    def children(self) -> dict[str, KernelCgroup]:
        try:
            names = sorted(entry.name for entry in os.scandir(self._parent) if entry.is_dir())
        except OSError:
            return {}
        return {name: _V2Cgroup(name, self._parent / name) for name in names}

    def remove_parent(self) -> None:
        with contextlib.suppress(OSError):
            self._parent.rmdir()


# ------------------------------------------------------------------ detection


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Mount:
    root: str
    mountpoint: Path
    fstype: str
    options: frozenset[str]


def _mounts(text: str) -> list[_Mount]:
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        rest = tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        options = frozenset(rest[2].split(",")) | frozenset(fields[5].split(","))
        mounts.append(_Mount(_unescape(fields[3]), Path(_unescape(fields[4])), rest[0], options))
    return mounts


def _own_paths(text: str) -> dict[str, str]:
    """Controller (``""`` for the v2 line) -> this process's cgroup path."""
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            own[controller] = parts[2]
    return own


def _inside(mount: _Mount, cgroup_path: str, parent: str) -> Path:
    """Directory of *parent* (relative: below *cgroup_path*; absolute: from the root)."""
    base = parent if parent.startswith("/") else f"{cgroup_path.rstrip('/')}/{parent}"
    if mount.root != "/" and base.startswith(mount.root):
        base = base[len(mount.root) :]
    return mount.mountpoint / base.lstrip("/")


def detect(
    parent: str,
    *,
    mountinfo: Path = _MOUNTINFO,
    proc_cgroup: Path = _PROC_CGROUP,
) -> tuple[CgroupDriver | None, str]:
    """Find the host's cgroup hierarchy and prepare the agent's parent cgroup *parent*.

    *parent* is relative to the agent's own cgroup (``"bai.i-agent"``) or,
    starting with ``/``, to the hierarchy's root.  v1 is used where any v1
    controller is mounted (hybrid hosts keep their controllers there),
    otherwise v2.  Returns ``(driver, "")`` or ``(None, reason)``; never raises.
    """
    if not parent or ".." in Path(parent).parts:
        return None, f"bad cgroup parent {parent!r}"
    try:
        mounts = _mounts(mountinfo.read_text())
        own = _own_paths(proc_cgroup.read_text())
    except OSError as exc:
        return None, f"cannot read the cgroup layout: {exc}"
    v1: dict[str, Path] = {}
    for mount in mounts:
        if mount.fstype != "cgroup":
            continue
        for controller in V1_CONTROLLERS:
            if controller in mount.options and controller not in v1 and controller in own:
                v1[controller] = _inside(mount, own[controller], parent)
    try:
        if v1:
            return CgroupV1(v1), ""
        unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
        if unified is None:
            return None, "no cgroup hierarchy is mounted"
        directory = _inside(unified, own.get("", "/"), parent)
        return CgroupV2(unified.mountpoint, directory), ""
    except CgroupError as exc:
        return None, str(exc)
