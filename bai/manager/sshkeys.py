"""SSH keypairs of access keys: generated, checked, stored, and handed to sessions.

Every keypair (access key) may hold one SSH keypair, the ``ssh_public_key``
and ``ssh_private_key`` columns of ``keypairs``, in OpenSSH text: the public
key as one ``authorized_keys`` line ending in a newline, the private key
PEM-armoured, ending in a newline.  The kernels of every session the
access key owns get it (``KernelConfig.ssh_keypair``): the agent writes
the private key as ``/home/work/id_container`` and the public key into
``/home/work/.ssh/authorized_keys`` (:mod:`bai.agent.sshkeys`), so
``backend.ai ssh`` can log in with the downloaded ``id_container``.

* :func:`generate_keypair` makes a new ed25519 pair with ``ssh-keygen``
  (OpenSSH's own tool: this project carries no cryptography library) in a
  worker thread, in a private temporary folder that is removed afterwards.
* :func:`check_keypair` checks an uploaded pair: the public key is one line
  ``TYPE BASE64 [COMMENT]`` of a supported type (ed25519, RSA, ECDSA) whose
  data is that type's; the private key is PEM-armoured, not encrypted, and
  one ``ssh-keygen`` reads; the public key ``ssh-keygen`` derives from it is
  the uploaded one, and a signature made with the private key verifies with
  the uploaded public key.  Each refusal is an
  :class:`~bai.common.validation.InvalidField` naming ``pubkey`` or
  ``privkey`` (answered 400); no message echoes the private key.
* :func:`ensure_keypair` returns the stored pair, generating one on first use
  (a compare-and-set, so concurrent first uses agree on one pair);
  :func:`store_keypair` replaces it; :func:`session_keypair` is what a
  starting session's kernels get.

``ssh-keygen`` must be installed on the manager's host (Debian's
``openssh-client``); without it, or when it fails or hangs (each run is
bounded by :data:`KEYGEN_TIMEOUT`), the calls raise
:class:`SSHKeygenUnavailable` (answered 503), and sessions start without
SSH keys (logged).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Final

import sqlalchemy as sa
import trio

from bai.common.agent_api import MAX_SSH_PRIVATE_KEY, MAX_SSH_PUBLIC_KEY, SSHKeypair
from bai.common.errors import BaiError
from bai.common.validation import InvalidField
from bai.manager.db import Database
from bai.manager.models.identity import keypairs

__all__ = [
    "KEYGEN_TIMEOUT",
    "PUBLIC_KEY_TYPES",
    "SSHKeygenUnavailable",
    "check_keypair",
    "check_private_key",
    "check_public_key",
    "ensure_keypair",
    "generate_keypair",
    "load_keypair",
    "session_keypair",
    "store_keypair",
]

log = logging.getLogger(__name__)

#: Seconds one ``ssh-keygen`` run may take.
KEYGEN_TIMEOUT: Final = 10.0
#: Public key types accepted: those OpenSSH's sshd accepts by default with a plain key
#: file (no ``ssh-dss``, which OpenSSH dropped; no ``sk-*``, which need a hardware token).
PUBLIC_KEY_TYPES: Final = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    }
)
#: PEM labels of the private keys accepted, unencrypted: OpenSSH's own format, PKCS#1 RSA,
#: SEC 1 EC and PKCS#8.
_PRIVATE_KEY_LABELS: Final = frozenset(
    {"OPENSSH PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"}
)
_OPENSSH_MAGIC: Final = b"openssh-key-v1\x00"
_BEGIN: Final = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\Z")
_END: Final = re.compile(r"-----END ([A-Z0-9 ]+)-----\Z")
_BASE64_LINE: Final = re.compile(r"[A-Za-z0-9+/=]+\Z")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Comment of the keys this module generates.
_COMMENT: Final = "work@bai"
_SIGNING_NAMESPACE: Final = "bai-ssh-keypair-check"

_PUB: Final = "pubkey"
_PRIV: Final = "privkey"


class SSHKeygenUnavailable(BaiError):
    """``ssh-keygen`` is missing on the manager's host, failed, or took too long."""

    http_status: ClassVar[int] = 503
    error_type: ClassVar[str] = "service-unavailable"
    error_title: ClassVar[str] = "Service unavailable."


# ----------------------------------------------------------------- pure checks


def _bad_public(problem: str, value: str) -> InvalidField:
    return InvalidField(problem, field=_PUB, value=value)


def _bad_private(problem: str) -> InvalidField:
    # The value is never echoed: it is a secret.
    return InvalidField(problem, field=_PRIV)


def check_public_key(text: str) -> str:
    """*text* as a public key line ``TYPE BASE64[ COMMENT]`` (module docs), newline-ended.

    Surrounding white space is dropped.  Raises :class:`InvalidField` naming
    ``pubkey``.
    """
    line = text.strip()
    if not line:
        raise _bad_public("is empty; expected TYPE BASE64 [COMMENT]", text)
    if "\n" in line or "\r" in line:
        raise _bad_public("must be one line: TYPE BASE64 [COMMENT]", text)
    if _CONTROL.search(line):
        raise _bad_public("must not contain control characters", text)
    if len(line) + 1 > MAX_SSH_PUBLIC_KEY:
        raise _bad_public(f"is longer than {MAX_SSH_PUBLIC_KEY - 1} characters", text)
    parts = line.split(None, 2)
    key_type = parts[0]
    if key_type not in PUBLIC_KEY_TYPES:
        raise _bad_public(
            f"must start with a supported key type ({', '.join(sorted(PUBLIC_KEY_TYPES))}), "
            "without authorized_keys options",
            text,
        )
    if len(parts) < 2:
        raise _bad_public("has no key data after its type; expected TYPE BASE64 [COMMENT]", text)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise _bad_public("its key data is not base64", text) from None
    if _ssh_string(blob, 0)[0] != key_type.encode():
        raise _bad_public(f"its key data is not a {key_type} key", text)
    return " ".join(parts) + "\n"


def _ssh_string(data: bytes, offset: int) -> tuple[bytes | None, int]:
    """The SSH wire ``string`` at *offset* of *data* and the offset after it (None: truncated)."""
    if len(data) < offset + 4:
        return None, offset
    (size,) = struct.unpack_from(">I", data, offset)
    end = offset + 4 + size
    if len(data) < end:
        return None, offset
    return data[offset + 4 : end], end


def check_private_key(text: str) -> str:
    """*text* as an unencrypted PEM-armoured private key (module docs), newline-ended.

    Surrounding white space and trailing spaces of lines are dropped; what
    the key holds is left to ``ssh-keygen`` (:func:`check_keypair`).
    Raises :class:`InvalidField` naming ``privkey``.
    """
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if not lines or not lines[0]:
        raise _bad_private("is empty; expected a PEM-armoured private key")
    normalised = "\n".join(lines) + "\n"
    if len(normalised) > MAX_SSH_PRIVATE_KEY:
        raise _bad_private(f"is longer than {MAX_SSH_PRIVATE_KEY} characters")
    begin = _BEGIN.match(lines[0])
    end = _END.match(lines[-1]) if len(lines) > 1 else None
    if begin is None or end is None:
        raise _bad_private(
            "must be a PEM-armoured private key, from -----BEGIN ... PRIVATE KEY----- "
            "to -----END ... PRIVATE KEY-----"
        )
    label = begin.group(1)
    if end.group(1) != label:
        raise _bad_private(f"its END line does not match its BEGIN line ({label})")
    if label == "ENCRYPTED PRIVATE KEY" or any(
        line.startswith("Proc-Type:") and "ENCRYPTED" in line for line in lines
    ):
        raise _bad_private("is encrypted with a passphrase; sessions need a key without one")
    if label not in _PRIVATE_KEY_LABELS:
        raise _bad_private(f"is a {label}; expected an OpenSSH, RSA, EC or PKCS#8 private key")
    body = lines[1:-1]
    if not body or not all(_BASE64_LINE.match(line) for line in body):
        raise _bad_private("its body is not base64 lines between its BEGIN and END lines")
    try:
        data = base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_private("its body is not base64") from None
    if label == "OPENSSH PRIVATE KEY":
        if not data.startswith(_OPENSSH_MAGIC):
            raise _bad_private("is not in OpenSSH's key format (no openssh-key-v1 header)")
        cipher, _ = _ssh_string(data, len(_OPENSSH_MAGIC))
        if cipher is None:
            raise _bad_private("is truncated")
        if cipher != b"none":
            raise _bad_private("is encrypted with a passphrase; sessions need a key without one")
    return normalised


# ------------------------------------------------------------------ ssh-keygen


def _keygen_path() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise SSHKeygenUnavailable(
            "ssh-keygen is not installed on the manager's host (Debian: openssh-client)"
        )
    return path


def _run(argv: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            timeout=KEYGEN_TIMEOUT,
            check=False,
            env={"PATH": os.defpath, "LANG": "C"},
        )
    except subprocess.TimeoutExpired:
        raise SSHKeygenUnavailable(f"ssh-keygen took longer than {KEYGEN_TIMEOUT} s") from None
    except OSError as exc:
        raise SSHKeygenUnavailable(f"ssh-keygen could not run: {exc}") from None


_LOAD_KEY: Final = re.compile(r'^Load key "[^"]*": ')


def _why(done: subprocess.CompletedProcess[bytes], folder: str) -> str:
    """ssh-keygen's complaint, without the temporary folder's name."""
    text = done.stderr.decode(errors="replace").strip().replace(folder + "/", "")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("@")]
    if not lines:
        return f"ssh-keygen exited with code {done.returncode}"
    why = _LOAD_KEY.sub("", lines[-1])
    if "incorrect passphrase" in why:
        # Said of an unencrypted key (encrypted ones are refused before) whose check bytes differ.
        return "the key is damaged (its check bytes do not match)"
    return why


def _generate_sync(comment: str) -> SSHKeypair:
    keygen = _keygen_path()
    with tempfile.TemporaryDirectory(prefix="bai-ssh-") as folder:
        key = os.path.join(folder, "key")
        done = _run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key])
        if done.returncode != 0:
            raise SSHKeygenUnavailable(f"ssh-keygen failed: {_why(done, folder)}")
        private_key = Path(key).read_text(encoding="ascii")
        public_key = Path(key + ".pub").read_text(encoding="ascii")
    return SSHKeypair(public_key=public_key, private_key=private_key)


def _check_pair_sync(public_key: str, private_key: str) -> None:
    """Raise :class:`InvalidField` unless ssh-keygen reads *private_key* and it is the
    private half of *public_key* (both already in shape)."""
    keygen = _keygen_path()
    given = public_key.split()[:2]
    with tempfile.TemporaryDirectory(prefix="bai-ssh-") as folder:
        key = os.path.join(folder, "key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(private_key)
        # -P "": an encrypted key fails instead of asking for a passphrase.
        derived = _run([keygen, "-y", "-P", "", "-f", key])
        if derived.returncode != 0:
            raise _bad_private(f"ssh-keygen cannot read it: {_why(derived, folder)}")
        if derived.stdout.decode(errors="replace").split()[:2] != given:
            raise _bad_public("is not the public key of privkey", public_key.strip())
        # -y reads the public key the file stores beside the private half; only a signature
        # that verifies with the uploaded public key proves the private half is its own.
        # (To sign, ssh-keygen reads key.pub beside a PEM private key.)
        Path(key + ".pub").write_text(public_key, encoding="ascii")
        message = os.path.join(folder, "message")
        Path(message).write_bytes(os.urandom(32))
        signed = _run([keygen, "-Y", "sign", "-f", key, "-n", _SIGNING_NAMESPACE, message])
        if signed.returncode != 0:
            raise _bad_private(f"ssh-keygen cannot sign with it: {_why(signed, folder)}")
        signers = os.path.join(folder, "signers")
        Path(signers).write_text(f"check {' '.join(given)}\n", encoding="ascii")
        verify = [
            keygen, "-Y", "verify", "-f", signers, "-I", "check",
            "-n", _SIGNING_NAMESPACE, "-s", message + ".sig",
        ]  # fmt: skip
        if _run(verify, Path(message).read_bytes()).returncode != 0:
            raise _bad_private("its signatures do not verify with pubkey: the two do not match")


async def generate_keypair(comment: str = _COMMENT) -> SSHKeypair:
    """A new ed25519 keypair in OpenSSH text; raises :class:`SSHKeygenUnavailable`."""
    return await trio.to_thread.run_sync(_generate_sync, comment)


async def check_keypair(public_key: str, private_key: str) -> SSHKeypair:
    """The uploaded pair, normalised, once every check of the module docs holds.

    Raises :class:`InvalidField` naming ``pubkey`` or ``privkey``, or
    :class:`SSHKeygenUnavailable`.
    """
    public = check_public_key(public_key)
    private = check_private_key(private_key)
    await trio.to_thread.run_sync(_check_pair_sync, public, private)
    return SSHKeypair(public_key=public, private_key=private)


# ---------------------------------------------------------------------- storage


async def load_keypair(db: Database, access_key: str) -> SSHKeypair | None:
    """The SSH keypair stored for *access_key*, None when it has none (or no such key)."""
    row = (
        await db.fetch(
            sa.select(keypairs.c.ssh_public_key, keypairs.c.ssh_private_key).where(
                keypairs.c.access_key == access_key
            )
        )
    ).first()
    if row is None or not row.ssh_public_key or not row.ssh_private_key:
        return None
    return SSHKeypair(public_key=row.ssh_public_key, private_key=row.ssh_private_key)


async def store_keypair(
    db: Database, access_key: str, pair: SSHKeypair, *, only_if_missing: bool = False
) -> bool:
    """Store *pair* for *access_key*; whether a row changed.

    With *only_if_missing*, a keypair that has a pair keeps it.
    """
    query = (
        sa.update(keypairs)
        .where(keypairs.c.access_key == access_key)
        .values(ssh_public_key=pair.public_key, ssh_private_key=pair.private_key)
    )
    if only_if_missing:
        query = query.where(
            sa.or_(keypairs.c.ssh_public_key.is_(None), keypairs.c.ssh_private_key.is_(None))
        )
    async with db.begin() as conn:
        result = await conn.execute(query)
    return result.rowcount > 0


async def ensure_keypair(db: Database, access_key: str) -> SSHKeypair:
    """The SSH keypair of *access_key*, generated and stored on first use.

    When two first uses race, both answer the pair stored first.  Raises
    :class:`SSHKeygenUnavailable`, and ``LookupError`` for an access key
    that does not exist.
    """
    pair = await load_keypair(db, access_key)
    if pair is not None:
        return pair
    # Generated outside any transaction: no external work inside one.
    await store_keypair(db, access_key, await generate_keypair(), only_if_missing=True)
    pair = await load_keypair(db, access_key)
    if pair is None:
        raise LookupError(f"no keypair {access_key}")
    return pair


async def session_keypair(db: Database, access_key: str) -> dict[str, Any] | None:
    """``KernelConfig.ssh_keypair`` for the kernels of a session *access_key* owns.

    None (logged) when no pair can be generated: the session starts without
    SSH keys rather than not at all.
    """
    try:
        pair = await ensure_keypair(db, access_key)
    except (SSHKeygenUnavailable, LookupError) as exc:
        log.warning("the sessions of %s start without SSH keys: %s", access_key, exc)
        return None
    return {"public_key": pair.public_key, "private_key": pair.private_key}
