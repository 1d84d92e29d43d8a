"""Quota arithmetic: may a folder, or its quota scope, take more bytes?

The ``vfs`` backend enforces quotas by its own accounting: what a folder
*uses* (its last scan, plus the proxy's own writes since), plus what uploads
in progress have *reserved* (each reserves its announced size until it
completes or expires), plus what a request wants to *add*, must not exceed
the folder's quota nor its scope's limit.  A request adding nothing (mkdir)
is refused only once the total is already over.  Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from bai.common.storage_api import StorageErrorType
from bai.storage.errors import StorageError

__all__ = ["Budget", "check_room"]


@dataclass(frozen=True)
class Budget:
    """One limit and what counts against it."""

    #: Who the limit belongs to, for the message ("folder 0123...", "quota scope user:...").
    owner: str
    limit: int | None
    used: int
    reserved: int = 0

    def room(self) -> int | None:
        """Bytes that may still be added (negative when over), or None without a limit."""
        if self.limit is None:
            return None
        return self.limit - self.used - self.reserved


def check_room(budgets: list[Budget], adding: int, *, field: str | None = None) -> None:
    """Raise QuotaExceeded (413) if adding *adding* bytes would put any budget over its limit."""
    for budget in budgets:
        room = budget.room()
        if room is None or (adding <= room and room >= 0):
            continue
        detail = (
            f"{budget.owner} is limited to {budget.limit} bytes: {budget.used} used"
            + (f", {budget.reserved} reserved by uploads in progress" if budget.reserved else "")
            + (f", {adding} more requested" if adding else "")
        )
        raise StorageError(StorageErrorType.QUOTA_EXCEEDED, detail, field=field)
