"""The errors of virtual-folder operations, each with the HTTP status the API answers.

These are :class:`~bai.common.errors.BaiError` subclasses that declare
``http_status`` and ``error_type`` (the API's problem mapping reads both), so
this package needs nothing of the API layer.  Errors about one input derive
from :class:`~bai.common.validation.InvalidField` and name it in ``field``.
"""

from __future__ import annotations

from typing import ClassVar

from bai.common.errors import BaiError
from bai.common.validation import InvalidField

__all__ = [
    "InvalidFolderInput",
    "InvitationNotFound",
    "VFolderAlreadyExists",
    "VFolderError",
    "VFolderInUse",
    "VFolderLimitExceeded",
    "VFolderNotFound",
    "VFolderNotReady",
    "VFolderPermissionDenied",
    "VFolderUserNotFound",
]


class VFolderError(BaiError):
    """A virtual-folder operation that cannot be done (the subclass says why and its status)."""

    http_status: ClassVar[int] = 400
    error_type: ClassVar[str] = "vfolder-error"
    error_title: ClassVar[str] = "Virtual folder operation failed."


class VFolderNotFound(VFolderError):
    """No such folder, or none the caller may see (404)."""

    http_status = 404
    error_type = "vfolder-not-found"
    error_title = "Virtual folder not found."


class VFolderPermissionDenied(VFolderError):
    """The caller sees the folder but may not do this with it (403)."""

    http_status = 403
    error_type = "vfolder-permission-denied"
    error_title = "Permission denied on the virtual folder."


class VFolderNotReady(VFolderError):
    """The folder is busy (e.g. being cloned) and cannot be changed now (409)."""

    http_status = 409
    error_type = "vfolder-not-ready"
    error_title = "The virtual folder is busy."


class VFolderInUse(VFolderError):
    """A live session mounts the folder (409); ``data.sessions`` lists those sessions."""

    http_status = 409
    error_type = "vfolder-in-use"
    error_title = "The virtual folder is mounted by a session."

    def __init__(self, detail: str, *, sessions: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.extra_data = {"sessions": sessions}


class InvitationNotFound(VFolderError):
    """No such pending invitation that the caller may see (404)."""

    http_status = 404
    error_type = "vfolder-invitation-not-found"
    error_title = "Virtual folder invitation not found."


class InvalidFolderInput(InvalidField):
    """Bad input to a folder operation (400), naming the field."""

    http_status: ClassVar[int] = 400
    error_type: ClassVar[str] = "invalid-api-params"
    error_title: ClassVar[str] = "Missing or invalid API parameters."


class VFolderAlreadyExists(InvalidFolderInput):
    """The name is taken among the caller's folders (400, as the spec says), naming the field."""

    error_type = "vfolder-already-exists"
    error_title = "A virtual folder with the same name already exists."


class VFolderUserNotFound(InvalidFolderInput):
    """An email that names no user, or none the operation can apply to (400)."""

    error_type = "vfolder-user-not-found"
    error_title = "No such user."


class VFolderLimitExceeded(InvalidFolderInput):
    """A resource-policy limit refuses the folder (406 for the count, as the spec says)."""

    http_status = 406
    error_type = "vfolder-limit-exceeded"
    error_title = "The virtual folder limit is reached."
