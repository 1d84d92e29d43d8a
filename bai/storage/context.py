"""What both of the proxy's APIs share: its config, its volumes and its token signer."""

from __future__ import annotations

from dataclasses import dataclass

from bai.common.config import StorageProxyConfig
from bai.common.storage_api import StorageErrorType
from bai.storage.errors import StorageError
from bai.storage.tokens import TokenSigner
from bai.storage.volumes.base import Volume

__all__ = ["StorageContext"]


@dataclass
class StorageContext:
    """The running proxy's state, handed to both apps."""

    config: StorageProxyConfig
    volumes: dict[str, Volume]
    signer: TokenSigner

    def volume(self, name: str, *, field: str = "volume") -> Volume:
        """Volume *name*; VolumeNotFound (404) naming *field* if the proxy has none by that name."""
        try:
            return self.volumes[name]
        except KeyError:
            raise StorageError(
                StorageErrorType.VOLUME_NOT_FOUND, f"no volume {name!r} on this proxy", field=field
            ) from None

    def check_upload_size(self, size: int) -> None:
        """Raise UploadTooLarge (413) if *size* exceeds ``[storage-proxy] max-upload-size``."""
        limit = int(self.config.storage_proxy.max_upload_size)
        if size > limit:
            raise StorageError(
                StorageErrorType.UPLOAD_TOO_LARGE,
                f"{size} bytes exceed the largest upload of {limit} bytes",
                field="size",
            )
