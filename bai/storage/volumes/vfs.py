"""The ``vfs`` backend: folders as plain directories, quotas by the proxy's own accounting.

Layout of a volume at ``path``:

* folder *vfid* lives at ``path/vfid[0:2]/vfid[2:4]/vfid[4:]`` (owned, like
  everything the proxy creates, by ``[storage-proxy] user``/``group`` when set);
* ``path/.bai/`` holds the proxy's own state, never inside a folder:
  ``folders/`` and ``scopes/`` (quota records, :mod:`.meta`), ``uploads/``
  and ``done/`` (upload sessions, :mod:`bai.storage.volumes.uploads`), ``trash/``
  and ``clones/`` (folders being removed or copied; emptied at start).

Quotas: each folder's usage (bytes of regular files, entries) is cached from
its last scan and adjusted by the proxy's own writes; :meth:`refresh_usage`
rescans every folder (the server calls it every ``usage-scan-interval``) to
catch what kernels wrote.  Uploads and API writes are refused (413
QuotaExceeded) when the folder's quota or its scope's limit would be
exceeded (:mod:`bai.storage.quota`); writes from inside kernels are only seen
by the next scan and then block further uploads.

All paths inside a folder are walked by :mod:`.walk` (no link followed); all
blocking work runs in ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from bai.common.safe_fs import DIR_FLAGS, kind_of, lstat_at, open_plain
from bai.common.storage_api import (
    DirEntry,
    FolderUsage,
    QuotaScopeInfo,
    StorageErrorType,
)
from bai.storage.errors import StorageError, os_error
from bai.storage.quota import Budget, check_room
from bai.storage.volumes import metric as metrics
from bai.storage.volumes import tree
from bai.storage.volumes.base import Volume, VolumeTotals
from bai.storage.volumes.meta import FolderRecord, MetaStore
from bai.storage.volumes.uploads import UploadRecord, UploadRegistry, UploadSession
from bai.storage.volumes.walk import (
    Owner,
    chown_fd,
    enter,
    folder_parts,
    open_dir,
    open_root,
    opened,
    rename_noreplace,
    split_relpath,
)

__all__ = ["VfsVolume"]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: A performance sample younger than this is reused as the start of the next interval.
_METRIC_MAX_AGE: Final = 60.0
#: Shortest interval the metric's rates are measured over.
_METRIC_MIN_SPAN: Final = 0.2

_T = StorageErrorType


def _no_folder(vfid: str) -> StorageError:
    return StorageError(_T.FOLDER_NOT_FOUND, f"no folder {vfid} in this volume", field="vfid")


def _folder_exists(vfid: str, field: str = "dst_vfid") -> StorageError:
    return StorageError(_T.FOLDER_EXISTS, f"folder {vfid} already exists", field=field)


class VfsVolume(Volume):
    """A volume on a plain directory of any POSIX file system."""

    backend = "vfs"
    capabilities = ("vfolder", "quota", "metric")

    def __init__(self, name: str, path: Path, *, owner: Owner = None, scandir_limit: int) -> None:
        self.name = name
        self.path = Path(os.path.abspath(path))
        self.owner = owner
        self.scandir_limit = scandir_limit
        self.base = self.path / ".bai"
        self.meta = MetaStore(self.base, owner)
        self.uploads = UploadRegistry(self.base / "uploads", self.base / "done", owner)
        self._fd = -1
        self._records: dict[str, FolderRecord] = {}
        self._limits: dict[str, int] = {}
        self._usage: dict[str, tree.Usage] = {}
        self._device: str | None = None
        self._last_sample: metrics.Sample | None = None

    async def _run(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        return await trio.to_thread.run_sync(functools.partial(func, *args, **kwargs))

    # ------------------------------------------------------------ life cycle

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for sub in ("", "folders", "scopes", "uploads", "done", "trash", "clones"):
            folder = self.base / sub
            folder.mkdir(mode=0o700, exist_ok=True)
            if self.owner is not None:
                os.chown(folder, *self.owner)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for sub in ("trash", "clones"):  # left by a run that stopped half-way
            with opened(os.open(self.base / sub, DIR_FLAGS)) as fd:
                for name in os.listdir(fd):
                    with contextlib.suppress(OSError):
                        tree.remove_tree(fd, name)
        self._records = self.meta.load_folders()
        self._limits = self.meta.load_scopes()
        self.uploads.load()
        self._device = metrics.block_device(self.path)

    async def open(self) -> None:
        await self._run(self._open)

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # ------------------------------------------------------------ helpers

    def _root(self, vfid: str) -> int:
        return open_root(self._fd, vfid)

    def _in_folder(self, vfid: str, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run *func(root_fd, ...)* on folder *vfid*'s root (blocking)."""
        with opened(self._root(vfid)) as root:
            return func(root, *args, **kwargs)

    def _scan(self, vfid: str) -> tree.Usage:
        return self._in_folder(vfid, tree.scan_usage)

    async def _used(self, vfid: str) -> tree.Usage:
        usage = self._usage.get(vfid)
        if usage is None:
            usage = await self._run(self._scan, vfid)
            self._usage[vfid] = usage
        return usage

    def _scope_folders(self, scope: str) -> list[str]:
        return [vfid for vfid, rec in self._records.items() if rec.quota_scope == scope]

    async def _budgets(self, vfid: str, *, excluding: str | None = None) -> list[Budget]:
        """The folder's and its scope's budgets, usage rescanned where not cached."""
        record = self._records.get(vfid, FolderRecord())
        budgets = [
            Budget(
                f"folder {vfid}",
                record.quota,
                (await self._used(vfid)).used_bytes,
                self.uploads.reserved([vfid], excluding=excluding),
            )
        ]
        scope = record.quota_scope
        if scope is not None and scope in self._limits:
            members = self._scope_folders(scope)
            used = 0
            for member in members:
                with contextlib.suppress(StorageError):
                    used += (await self._used(member)).used_bytes
            reserved = self.uploads.reserved(members, excluding=excluding)
            budgets.append(Budget(f"quota scope {scope}", self._limits[scope], used, reserved))
        return budgets

    # ------------------------------------------------------------ folders

    def _create(self, vfid: str) -> None:
        a, b, c = folder_parts(vfid)
        with opened(open_dir(self._fd, [a, b], relpath=vfid, create=True, owner=self.owner)) as fd:
            try:
                os.mkdir(c, 0o755, dir_fd=fd)
            except FileExistsError:
                raise _folder_exists(vfid, "vfid") from None
            with opened(os.open(c, DIR_FLAGS, dir_fd=fd)) as root:
                chown_fd(root, self.owner)

    async def create_folder(self, vfid: str, quota_scope: str, quota: int | None) -> None:
        await self._run(self._create, vfid)
        record = FolderRecord(quota_scope=quota_scope, quota=quota)
        try:
            await self._run(self.meta.put_folder, vfid, record)
        except BaseException:
            with contextlib.suppress(OSError, StorageError):
                await self._run(self._remove_folder, vfid)
            raise
        self._records[vfid] = record
        self._usage[vfid] = tree.Usage()

    def _remove_folder(self, vfid: str) -> None:
        a, b, c = folder_parts(vfid)
        try:
            shard = open_dir(self._fd, [a, b], relpath=vfid, field="vfid")
        except StorageError:
            shard = -1
        if shard < 0 or lstat_at(c, shard) is None:
            if shard >= 0:
                os.close(shard)
            raise _no_folder(vfid)
        with opened(shard), opened(os.open(self.base / "trash", DIR_FLAGS)) as trash:
            doomed = f"{vfid}-{secrets.token_hex(4)}"
            # One rename takes the folder away at once; the slow removal follows.
            os.rename(c, doomed, src_dir_fd=shard, dst_dir_fd=trash)
            tree.remove_tree(trash, doomed)

    async def delete_folder(self, vfid: str) -> None:
        await self._run(self._remove_folder, vfid)
        for session in [s for s in self.uploads.sessions.values() if s.record.vfid == vfid]:
            await self._drop_session(session)
        await self._run(self.meta.drop_folder, vfid)
        self._records.pop(vfid, None)
        self._usage.pop(vfid, None)

    def _exists(self, vfid: str) -> bool:
        try:
            os.close(self._root(vfid))
        except StorageError:
            return False
        return True

    def _clone_into(self, src: VfsVolume, vfid: str, dst_vfid: str) -> None:
        a, b, c = folder_parts(dst_vfid)
        with (
            opened(src._root(vfid)) as src_root,
            opened(os.open(self.base / "clones", DIR_FLAGS)) as clones,
        ):
            staging = f"{dst_vfid}-{secrets.token_hex(4)}"
            os.mkdir(staging, 0o755, dir_fd=clones)
            try:
                with opened(os.open(staging, DIR_FLAGS, dir_fd=clones)) as copy:
                    chown_fd(copy, self.owner)
                    os.fchmod(copy, stat.S_IMODE(os.fstat(src_root).st_mode))
                    tree.copy_tree(src_root, copy, self.owner)
                with opened(
                    open_dir(self._fd, [a, b], relpath=dst_vfid, create=True, owner=self.owner)
                ) as shard:
                    rename_noreplace(staging, c, src_dir_fd=clones, dst_dir_fd=shard)
            except BaseException:
                with contextlib.suppress(OSError):
                    tree.remove_tree(clones, staging)
                raise

    async def clone_folder(
        self, vfid: str, dst: Volume, dst_vfid: str, dst_quota_scope: str
    ) -> None:
        if not isinstance(dst, VfsVolume):
            raise StorageError(
                _T.OPERATION_NOT_SUPPORTED, "a vfs folder can only be cloned to a vfs volume"
            )
        usage = await self._run(self._scan, vfid)
        if await dst._run(dst._exists, dst_vfid):
            raise _folder_exists(dst_vfid)
        limit = dst._limits.get(dst_quota_scope)
        if limit is not None:
            members = dst._scope_folders(dst_quota_scope)
            used = sum([(await dst._used(m)).used_bytes for m in members])
            check_room(
                [
                    Budget(
                        f"quota scope {dst_quota_scope}",
                        limit,
                        used,
                        dst.uploads.reserved(members),
                    )
                ],
                usage.used_bytes,
                field="dst_quota_scope",
            )
        try:
            await dst._run(dst._clone_into, self, vfid, dst_vfid)
        except FileExistsError:
            raise _folder_exists(dst_vfid) from None
        except OSError as exc:
            raise os_error(exc, dst_vfid, field="dst_vfid") from None
        record = FolderRecord(quota_scope=dst_quota_scope)
        await dst._run(dst.meta.put_folder, dst_vfid, record)
        dst._records[dst_vfid] = record
        dst._usage[dst_vfid] = usage

    async def mount_path(self, vfid: str) -> str:
        if not await self._run(self._exists, vfid):
            raise _no_folder(vfid)
        return str(self.path.joinpath(*folder_parts(vfid)))

    async def usage(self, vfid: str) -> FolderUsage:
        usage = await self._run(self._scan, vfid)
        self._usage[vfid] = usage
        return {"file_count": usage.file_count, "used_bytes": usage.used_bytes}

    async def _record(self, vfid: str) -> FolderRecord:
        if not await self._run(self._exists, vfid):
            raise _no_folder(vfid)
        return self._records.get(vfid, FolderRecord())

    async def get_quota(self, vfid: str) -> int | None:
        return (await self._record(vfid)).quota

    async def set_quota(self, vfid: str, quota: int | None) -> None:
        old = await self._record(vfid)
        record = FolderRecord(quota_scope=old.quota_scope, quota=quota)
        await self._run(self.meta.put_folder, vfid, record)
        self._records[vfid] = record

    async def scope_info(self, scope: str) -> QuotaScopeInfo:
        used = 0
        for vfid in self._scope_folders(scope):
            with contextlib.suppress(StorageError):
                used += (await self._used(vfid)).used_bytes
        return {"used_bytes": used, "limit_bytes": self._limits.get(scope)}

    async def set_scope_limit(self, scope: str, limit: int | None) -> QuotaScopeInfo:
        await self._run(self.meta.put_scope, scope, limit)
        if limit is None:
            self._limits.pop(scope, None)
        else:
            self._limits[scope] = limit
        return await self.scope_info(scope)

    async def performance_metric(self) -> dict[str, Any]:
        before = self._last_sample
        now = time.monotonic()
        if before is None or now - before.at > _METRIC_MAX_AGE:
            before = await self._run(metrics.sample, self.path, self._device)
        wait = _METRIC_MIN_SPAN - (time.monotonic() - before.at)
        if wait > 0:
            await trio.sleep(wait)
        after = await self._run(metrics.sample, self.path, self._device)
        self._last_sample = after
        return metrics.metric(before, after)

    def totals(self) -> VolumeTotals:
        usages = [self._usage[vfid] for vfid in self._records if vfid in self._usage]
        return VolumeTotals(
            folders=len(self._records),
            files=sum(usage.file_count for usage in usages),
            used_bytes=sum(usage.used_bytes for usage in usages),
        )

    async def refresh_usage(self) -> None:
        for vfid in list(self._records):
            try:
                self._usage[vfid] = await self._run(self._scan, vfid)
            except StorageError:
                self._usage.pop(vfid, None)  # removed meanwhile
            except OSError as exc:
                log.warning("volume %s: cannot scan folder %s: %s", self.name, vfid, exc)
        for session in self.uploads.expired_sessions():
            await self._drop_session(session)
        await self._run(self.uploads.purge_done)

    # ------------------------------------------------------------ files

    async def mkdir(self, vfid: str, relpath: str, *, parents: bool, exist_ok: bool) -> None:
        await self._record(vfid)
        check_room(await self._budgets(vfid), 0)
        await self._run(
            self._in_folder,
            vfid,
            tree.make_dir,
            relpath,
            parents=parents,
            exist_ok=exist_ok,
            owner=self.owner,
        )

    async def list_files(self, vfid: str, relpath: str) -> list[DirEntry]:
        return await self._run(
            self._in_folder, vfid, tree.list_dir, relpath, limit=self.scandir_limit
        )

    async def rename(self, vfid: str, relpath: str, new_name: str) -> None:
        await self._run(self._in_folder, vfid, tree.rename, relpath, new_name)

    async def move(self, vfid: str, src_relpath: str, dst_relpath: str) -> None:
        await self._run(self._in_folder, vfid, tree.move, src_relpath, dst_relpath)

    async def delete_files(self, vfid: str, relpaths: list[str], *, recursive: bool) -> None:
        try:
            await self._run(self._in_folder, vfid, tree.delete, relpaths, recursive=recursive)
        finally:
            # Whatever went, the next quota check rescans the folder.
            self._usage.pop(vfid, None)

    # ------------------------------------------------------------ transfers

    def _check_target(self, vfid: str, parts: list[str], relpath: str) -> None:
        with opened(self._root(vfid)) as root:
            fd = os.dup(root)
            try:
                for name in parts[:-1]:
                    try:
                        inner = enter(fd, name, relpath=relpath)
                    except StorageError as exc:
                        if exc.error_type is _T.FILE_NOT_FOUND:
                            return  # the rest of the way is created at the end
                        raise
                    os.close(fd)
                    fd = inner
                st = lstat_at(parts[-1], fd)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    raise StorageError(
                        _T.FILE_EXISTS, f"{relpath}: a folder is in the way", field="relpath"
                    )
            finally:
                os.close(fd)

    async def start_upload(self, vfid: str, relpath: str, size: int, expires: float) -> str:
        parts = split_relpath(relpath, allow_root=False)
        normal = "/".join(parts)
        await self._run(self._check_target, vfid, parts, normal)
        budgets = await self._budgets(vfid)
        # No await from here until the session is registered: the conflict check holds.
        idle = self.uploads.blocking(vfid, normal)
        reserved_idle = sum(s.record.size for s in idle)
        budgets = [
            Budget(b.owner, b.limit, b.used, max(b.reserved - reserved_idle, 0)) for b in budgets
        ]
        check_room(budgets, size, field="size")
        session_id = self.uploads.new_id()
        record = UploadRecord(vfid=vfid, relpath=normal, size=size, expires=expires)
        session = UploadSession(session_id, record)
        self.uploads.sessions[session_id] = session
        for old in idle:
            await self._drop_session(old)
        try:
            await self._run(self.uploads.create_files, session_id, record)
        except BaseException:
            self.uploads.sessions.pop(session_id, None)
            raise
        if size == 0:
            await self.finish_upload(session_id)
        return session_id

    async def _drop_session(self, session: UploadSession) -> None:
        self.uploads.sessions.pop(session.id, None)
        await self._run(self.uploads.discard_files, session.id)

    def _live(self, session_id: str) -> UploadSession:
        session = self.uploads.sessions.get(session_id)
        if session is None:
            # Dropped meanwhile: its folder was deleted, or its token expired mid-request.
            raise StorageError(
                _T.INVALID_TOKEN,
                "this upload session is gone (folder deleted or expired)",
                field="token",
            )
        return session

    async def check_upload_room(self, session_id: str) -> None:
        session = self._live(session_id)
        check_room(
            await self._budgets(session.record.vfid, excluding=session_id),
            session.record.size,
            field="size",
        )

    def _commit(self, session: UploadSession) -> int | None:
        """Rename the staging file into place; answers the size of the file it replaced."""
        record = session.record
        parts = record.relpath.split("/")
        with (
            opened(self._root(record.vfid)) as root,
            opened(
                open_dir(root, parts[:-1], relpath=record.relpath, create=True, owner=self.owner)
            ) as parent,
            opened(os.open(self.uploads.staging, DIR_FLAGS)) as staging,
        ):
            name = parts[-1]
            st = lstat_at(name, parent)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise StorageError(
                    _T.FILE_EXISTS, f"{record.relpath}: a folder is in the way", field="relpath"
                )
            os.chmod(session.id, 0o644, dir_fd=staging)
            # rename(2) replaces a file (or a link, never followed) atomically.
            os.rename(session.id, name, src_dir_fd=staging, dst_dir_fd=parent)
            return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    async def finish_upload(self, session_id: str) -> None:
        session = self._live(session_id)
        try:
            replaced = await self._run(self._commit, session)
        except OSError as exc:
            raise os_error(exc, session.record.relpath) from None
        self.uploads.sessions.pop(session_id, None)
        usage = self._usage.get(session.record.vfid)
        if usage is not None:
            usage.used_bytes += session.record.size - (replaced or 0)
            usage.file_count += 0 if replaced is not None else 1
        await self._run(self.uploads.mark_done, session_id, session.record.expires)

    def _open_download(self, vfid: str, relpath: str) -> tuple[int, os.stat_result]:
        parts = split_relpath(relpath)
        with opened(self._root(vfid)) as root:
            if not parts:
                fd = os.dup(root)
                return fd, os.fstat(fd)
            with opened(open_dir(root, parts[:-1], relpath=relpath)) as parent:
                try:
                    found = open_plain(parts[-1], parent)
                except FileNotFoundError:
                    raise StorageError(
                        _T.FILE_NOT_FOUND, f"{relpath}: no such file or folder"
                    ) from None
                if found is None:
                    st = lstat_at(parts[-1], parent)
                    kind = kind_of(st.st_mode) if st is not None else "gone"
                    raise StorageError(
                        _T.INVALID_PATH,
                        f"{relpath}: is {kind}; only files and folders are downloaded",
                        field="relpath",
                    )
                return found

    async def open_download(self, vfid: str, relpath: str) -> tuple[int, os.stat_result]:
        try:
            return await self._run(self._open_download, vfid, relpath)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise StorageError(_T.FILE_NOT_FOUND, f"{relpath}: no such file") from None
            raise
