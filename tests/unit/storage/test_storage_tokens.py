"""Transfer tokens of the storage proxy: issued, verified, and refused when they should be."""

from __future__ import annotations

import time

import jwt
import pytest

from bai.common.storage_api import TOKEN_AUDIENCE, StorageErrorType, TokenClaims
from bai.storage.errors import StorageError
from bai.storage.tokens import TokenSigner

SECRET = "a-secret-of-at-least-32-bytes-for-hs256"
OTHER = "another-secret-of-32-bytes-or-more-too"
CLAIMS = TokenClaims(
    op="upload", volume="v", vfid="ab" * 16, relpath="a/b.txt", size=5, session="s1"
)


def _refused(signer: TokenSigner, token: str | None, op: str = "upload") -> StorageError:
    with pytest.raises(StorageError) as caught:
        signer.verify(token, op)  # type: ignore[arg-type]
    assert caught.value.error_type is StorageErrorType.INVALID_TOKEN
    assert caught.value.status == 401
    assert caught.value.field == "token"
    return caught.value


def test_round_trip_keeps_every_claim_and_expires_after_the_lifetime() -> None:
    signer = TokenSigner(SECRET, 60.0)
    token, expires = signer.issue(CLAIMS)
    assert abs(expires - (time.time() + 60)) < 2
    assert signer.verify(token, "upload") == CLAIMS
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["aud"] == TOKEN_AUDIENCE
    assert payload["exp"] == int(expires)


def test_expired_token_is_refused() -> None:
    signer = TokenSigner(SECRET, 60.0)
    token, _ = signer.issue(CLAIMS, now=time.time() - 120)
    assert "expired" in _refused(signer, token).detail


def test_forged_token_is_refused() -> None:
    token, _ = TokenSigner(OTHER, 60.0).issue(CLAIMS)
    _refused(TokenSigner(SECRET, 60.0), token)


def test_unsigned_token_is_refused() -> None:
    payload: dict[str, object] = {"op": "upload", "volume": "v", "vfid": "x", "relpath": "a"}
    payload |= {"aud": TOKEN_AUDIENCE, "exp": int(time.time()) + 60}
    token = jwt.encode(payload, None, algorithm="none")
    _refused(TokenSigner(SECRET, 60.0), token)


def test_token_for_another_audience_is_refused() -> None:
    payload: dict[str, object] = {"op": "upload", "volume": "v", "vfid": "x", "relpath": "a"}
    payload |= {"aud": "someone-else", "exp": int(time.time()) + 60}
    _refused(TokenSigner(SECRET, 60.0), jwt.encode(payload, SECRET, algorithm="HS256"))


def test_token_without_expiry_is_refused() -> None:
    payload = {"op": "upload", "volume": "v", "vfid": "x", "relpath": "a", "aud": TOKEN_AUDIENCE}
    _refused(TokenSigner(SECRET, 60.0), jwt.encode(payload, SECRET, algorithm="HS256"))


def test_token_for_the_other_operation_is_refused() -> None:
    signer = TokenSigner(SECRET, 60.0)
    token, _ = signer.issue(CLAIMS)
    assert "not an download" in _refused(signer, token, "download").detail


def test_missing_and_garbage_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET, 60.0)
    _refused(signer, None)
    _refused(signer, "")
    _refused(signer, "not.a.jwt")
