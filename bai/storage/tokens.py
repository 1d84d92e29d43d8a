"""Transfer tokens: short-lived JWTs (HS256) that let a client move one file.

The manager asks the proxy for a token (``/folder/file/upload`` or
``/folder/file/download``); the proxy signs :class:`~bai.common.storage_api.TokenClaims`
with ``[storage-proxy] secret``, audience
:data:`~bai.common.storage_api.TOKEN_AUDIENCE` and ``exp`` = now +
``session-expire``.  :meth:`TokenSigner.verify` refuses (InvalidToken, 401)
a token that is malformed, signed with another key or algorithm, expired,
for another audience, or for another operation; whether an upload session
is still open is the upload registry's business.
"""

from __future__ import annotations

import time
from typing import Literal

import jwt
import msgspec

from bai.common.storage_api import TOKEN_AUDIENCE, StorageErrorType, TokenClaims
from bai.storage.errors import StorageError

__all__ = ["ALGORITHM", "TokenSigner"]

ALGORITHM = "HS256"


class TokenSigner:
    """Issues and checks the transfer tokens of one proxy."""

    def __init__(self, secret: str, lifetime: float) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def issue(self, claims: TokenClaims, *, now: float | None = None) -> tuple[str, float]:
        """A signed token for *claims* and the Unix time it expires."""
        expires = int((time.time() if now is None else now) + self.lifetime)
        payload = {**msgspec.to_builtins(claims), "aud": TOKEN_AUDIENCE, "exp": expires}
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), float(expires)

    def verify(self, token: str | None, op: Literal["upload", "download"]) -> TokenClaims:
        """The claims of *token* if it is valid for *op*; InvalidToken (field ``token``) else."""
        if not token:
            raise StorageError(
                StorageErrorType.INVALID_TOKEN, "a transfer token is required", field="token"
            )
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=TOKEN_AUDIENCE,
                options={"require": ["exp", "aud"]},
            )
            claims = msgspec.convert(payload, TokenClaims)
        except jwt.ExpiredSignatureError:
            raise StorageError(
                StorageErrorType.INVALID_TOKEN, "the transfer token has expired", field="token"
            ) from None
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise StorageError(
                StorageErrorType.INVALID_TOKEN, f"invalid transfer token: {exc}", field="token"
            ) from None
        if claims.op != op:
            raise StorageError(
                StorageErrorType.INVALID_TOKEN,
                f"the token is for an {claims.op}, not an {op}",
                field="token",
            )
        return claims
