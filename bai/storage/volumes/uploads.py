"""Upload sessions of one volume: staging files, who is writing, what completed.

An upload session is made when the manager asks for an upload token.  Its
data goes to ``.bai/uploads/<session>`` on the volume's own file system (so
putting it in place is one atomic rename) with a record
``.bai/uploads/<session>.json`` naming the target; both survive a restart of
the proxy, so an upload resumes where its staging file ends.  Once complete,
the session leaves a marker ``.bai/done/<session>`` until its token expires,
and a token of a completed session is refused.

:class:`UploadRegistry` keeps the live sessions in memory (the Trio thread
alone changes it); its blocking helpers run through ``trio.to_thread``.
Guarantees:

* at most one session per target path is *active* (unexpired and written to
  within :data:`IDLE_SUPERSEDE` seconds, or younger than that): a second one
  is refused with UploadConflict; an idle one is superseded (its staging file
  removed, its token refused from then on);
* at most one request writes a session at a time (:meth:`UploadSession.busy`);
* every live session reserves its announced size against the quotas
  (:meth:`UploadRegistry.reserved`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec

from bai.common.storage_api import StorageErrorType
from bai.storage.errors import StorageError
from bai.storage.volumes.walk import Owner

__all__ = ["IDLE_SUPERSEDE", "UploadRecord", "UploadRegistry", "UploadSession"]

#: Seconds after its last write (or its start) after which a session no longer blocks a new one.
IDLE_SUPERSEDE: Final = 300.0


class UploadRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the staging record of a session says (``.bai/uploads/<session>.json``)."""

    vfid: str
    relpath: str
    size: int
    #: Unix time at which the session's token expires.
    expires: float


@dataclass
class UploadSession:
    """One upload in progress."""

    id: str
    record: UploadRecord
    #: Bytes in the staging file: the offset the next PATCH must give.
    offset: int = 0
    #: A request is writing this session now.
    busy: bool = False
    #: ``time.monotonic()`` of the last write (or of the start).
    last_active: float = field(default_factory=time.monotonic)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.record.expires

    def active(self) -> bool:
        """Unexpired and busy or written to recently: it blocks another upload of its path."""
        if self.expired():
            return False
        return self.busy or time.monotonic() - self.last_active < IDLE_SUPERSEDE


def _write_new(path: Path, data: bytes, owner: Owner) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


class UploadRegistry:
    """The upload sessions of one volume, in memory and on disk."""

    def __init__(self, staging: Path, done: Path, owner: Owner = None) -> None:
        self.staging = staging
        self.done = done
        self.owner = owner
        self.sessions: dict[str, UploadSession] = {}

    # ----------------------------------------------------------- blocking I/O

    def load(self) -> None:
        """Read back the sessions an earlier run left (blocking); drop expired ones."""
        now = time.time()
        for entry in os.scandir(self.staging):
            if not entry.name.endswith(".json"):
                continue
            session_id = entry.name[:-5]
            try:
                record = msgspec.json.decode(Path(entry.path).read_bytes(), type=UploadRecord)
                offset = os.stat(self.staging / session_id).st_size
            except (OSError, msgspec.DecodeError):
                self.discard_files(session_id)
                continue
            if record.expires <= now:
                self.discard_files(session_id)
                continue
            self.sessions[session_id] = UploadSession(session_id, record, offset)
        for entry in os.scandir(self.staging):
            name = entry.name.removesuffix(".json")
            if name not in self.sessions:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        self.purge_done(now)

    def create_files(self, session_id: str, record: UploadRecord) -> None:
        """Make the empty staging file and the record of a new session (blocking)."""
        _write_new(self.staging / session_id, b"", self.owner)
        try:
            _write_new(self.staging / f"{session_id}.json", msgspec.json.encode(record), self.owner)
        except BaseException:
            self.discard_files(session_id)
            raise

    def discard_files(self, session_id: str) -> None:
        """Remove a session's staging file and record (blocking)."""
        for name in (session_id, f"{session_id}.json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.staging / name)

    def mark_done(self, session_id: str, expires: float) -> None:
        """Remember that *session_id* completed until *expires*; drop its record (blocking)."""
        with contextlib.suppress(FileExistsError):
            _write_new(self.done / session_id, str(expires).encode(), self.owner)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staging / f"{session_id}.json")

    def is_done(self, session_id: str) -> bool:
        """Whether *session_id* completed (blocking, one ``stat``)."""
        return os.path.lexists(self.done / session_id)

    def purge_done(self, now: float | None = None) -> None:
        """Forget completed sessions whose tokens have expired (blocking)."""
        now = time.time() if now is None else now
        for entry in os.scandir(self.done):
            try:
                expires = float(Path(entry.path).read_text())
            except (OSError, ValueError):
                expires = 0.0
            if expires <= now:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    # ----------------------------------------------------------- in memory

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(16)

    def get(self, session_id: str) -> UploadSession | None:
        """The live session *session_id*, or None (unknown, superseded, expired or completed)."""
        session = self.sessions.get(session_id)
        if session is None or session.expired():
            return None
        return session

    def blocking(self, vfid: str, relpath: str) -> list[UploadSession]:
        """The sessions of the same target; raises UploadConflict if one of them is active.

        Answers the idle ones, which the caller supersedes (removes).
        """
        same = [
            s
            for s in self.sessions.values()
            if s.record.vfid == vfid and s.record.relpath == relpath
        ]
        for session in same:
            if session.active():
                raise StorageError(
                    StorageErrorType.UPLOAD_CONFLICT,
                    f"{relpath}: another upload of this path is in progress",
                    field="relpath",
                )
        return same

    def expired_sessions(self) -> list[UploadSession]:
        """Sessions whose tokens expired (to be removed)."""
        now = time.time()
        return [s for s in self.sessions.values() if s.expired(now)]

    def reserved(self, vfids: Iterable[str], *, excluding: str | None = None) -> int:
        """Bytes reserved by the live sessions of folders *vfids* (less session *excluding*)."""
        wanted = set(vfids)
        now = time.time()
        return sum(
            s.record.size
            for s in self.sessions.values()
            if s.record.vfid in wanted and s.id != excluding and not s.expired(now)
        )
