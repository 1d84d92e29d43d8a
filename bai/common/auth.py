"""HMAC request signing and verification, wire-compatible with Backend.AI.

The client SDK calls :func:`sign_request` to get the headers that authenticate
one API request; the manager calls :func:`read_signed_request` (pure parsing,
no secrets), looks up the secret key of the access key it names, then calls
:func:`verify_signature`.  :func:`verify_request` does both steps when the
secret key is already at hand.

What is signed, and how, follows the official ``backend.ai-client`` 23.9.10
and the official manager byte for byte (tests pin vectors produced by that
client's own code):

* the signing key is an HMAC chain: ``HMAC(secret, yyyymmdd)`` and then
  ``HMAC(that, host)``, where ``yyyymmdd`` is the calendar day written in the
  request's date and ``host`` is the ``Host`` value (``host[:port]``);
* the string to sign joins, with ``"\\n"``: the upper-case method, the raw path
  with its query string, the date header value verbatim,
  ``host:<host>``, ``content-type:<mime type>``,
  ``x-backendai-version:<version>`` and the hex hash of the body;
* the body hash covers the real body only for API versions older than
  ``v4.20181215``; newer versions (all that current clients speak) hash the
  empty string, so streamed and multipart bodies never need buffering;
* the signature is the hex HMAC of that string; the header reads
  ``Authorization: BackendAI signMethod=HMAC-SHA256, credential=<ak>:<sig>``.

Guarantees: every rejection is an :class:`AuthError`.  Bad or missing header
values raise subclasses of :class:`~bai.common.errors.InvalidValue` that name
the header (the API answers 400); a missing ``Authorization`` header raises
:class:`MissingCredentials` and a wrong signature :class:`SignatureMismatch`
(both 401), whose messages never contain the expected signature.  Signatures
are compared in constant time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import NamedTuple, Protocol

from bai.common.errors import BaiError, InvalidValue, describe_value
from bai.common.types import AccessKey

__all__ = [
    "AUTH_SCHEME",
    "DEFAULT_HASH",
    "HASH_ALGORITHMS",
    "MAX_AUTHORIZATION_LENGTH",
    "SIGNING_KEY_CACHE_SIZE",
    "SKEW_WINDOW",
    "AuthError",
    "Authorization",
    "BadDate",
    "DateSkewed",
    "HeaderSource",
    "MalformedAuthorization",
    "MalformedRequest",
    "MissingCredentials",
    "SignatureMismatch",
    "SignedRequest",
    "SigningInputs",
    "UnsupportedSignMethod",
    "body_is_signed",
    "compute_signature",
    "derive_signing_key",
    "format_sign_method",
    "hash_name_of",
    "normalize_content_type",
    "parse_authorization",
    "parse_date",
    "read_signed_request",
    "sign_request",
    "string_to_sign",
    "verify_request",
    "verify_signature",
]

#: A request whose date is this far from the server clock (or further) is refused.
SKEW_WINDOW = timedelta(minutes=15)

#: The hash names a ``signMethod`` may carry (lower-case hashlib names).  This is the
#: official manager's set, ``hashlib.algorithms_guaranteed``, minus the SHAKE
#: functions, whose digests have no fixed length and so cannot key an HMAC.
HASH_ALGORITHMS: frozenset[str] = frozenset(
    name for name in hashlib.algorithms_guaranteed if not name.startswith("shake_")
)

DEFAULT_HASH = "sha256"
AUTH_SCHEME = "BackendAI"

#: Longer Authorization headers are refused before any parsing; a real one is ~200 chars.
MAX_AUTHORIZATION_LENGTH = 1024
_MAX_DATE_LENGTH = 64
#: Signing keys remembered by :func:`derive_signing_key`: one per secret key, day and host.
SIGNING_KEY_CACHE_SIZE = 4096

#: Versions before this one hash the request body; it and later ones hash b"".
_FIRST_UNSIGNED_BODY_VERSION = (4, "20181215")
_VERSION_RE = re.compile(r"v(\d{1,4})\.(\d{8})")
_HEX_RE = re.compile(r"[0-9a-f]+")
#: Printable ASCII except space, ',' and ':', which delimit the Authorization header.
_ACCESS_KEY_RE = re.compile(r"[!-+\--9;-~]+")
#: The spec's header normalization strips exactly these.
_WHITESPACE = "\n\r \t"

_DATE_HEADERS = ("Date", "X-BackendAI-Date")
_VERSION_HEADER = "X-BackendAI-Version"


class AuthError(BaiError):
    """A request's credentials were refused."""


class MissingCredentials(AuthError):
    """The request carries no ``Authorization`` header at all (answer 401)."""

    def __init__(self) -> None:
        super().__init__("Authorization header is missing")


class MalformedAuthorization(AuthError, InvalidValue):
    """``Authorization`` is not ``BackendAI signMethod=..., credential=<ak>:<sig>``."""


class UnsupportedSignMethod(AuthError, InvalidValue):
    """``signMethod`` names something other than ``HMAC-<hash>`` with a supported hash."""


class MalformedRequest(AuthError, InvalidValue):
    """A header the signature covers is missing or unusable (``field`` names it)."""


class BadDate(AuthError, InvalidValue):
    """The date header is neither ISO 8601 nor RFC 822."""


class DateSkewed(AuthError, InvalidValue):
    """The request's date is :data:`SKEW_WINDOW` or more away from the server clock."""


class SignatureMismatch(AuthError):
    """The signature does not match the request; the message names only the access key."""

    def __init__(self, access_key: str) -> None:
        self.access_key = access_key
        super().__init__(f"signature mismatch for access key {describe_value(access_key)}")


class HeaderSource(Protocol):
    """Anything with ``items()`` yielding ``(name, value)`` pairs: a dict, a multidict,
    werkzeug ``Headers``.  Names are matched case-insensitively; the first wins."""

    def items(self) -> Iterable[tuple[str, str]]: ...


class Authorization(NamedTuple):
    """The three parts of an ``Authorization`` header, as sent."""

    sign_method: str
    access_key: AccessKey
    signature: str


@dataclass(frozen=True, slots=True)
class SigningInputs:
    """Everything a signature covers, in the form it is signed.

    ``path`` is the request target exactly as on the request line (still
    percent-encoded, with ``?query`` when there is one); ``date_text`` is the
    date header value byte for byte and ``date`` its parsed, timezone-aware
    value; ``content_type`` is already normalized (see
    :func:`normalize_content_type`).  ``body`` only matters when
    :attr:`body_is_signed`.  Construction raises :class:`MalformedRequest`
    when a text field is empty, spans lines or is not valid Unicode, when
    ``date`` is naive, or when ``api_version`` is not ``vX.yyyymmdd``.
    """

    method: str
    path: str
    date: datetime
    date_text: str
    host: str
    content_type: str
    api_version: str
    body: bytes = b""

    def __post_init__(self) -> None:
        # A line break inside one field could shift text into the next one and
        # make two different requests share a string to sign.
        for name in ("method", "path", "date_text", "host", "content_type", "api_version"):
            value: str = getattr(self, name)
            if not value or "\r" in value or "\n" in value or "\0" in value:
                raise MalformedRequest("must be non-empty and on one line", value=value, field=name)
            if value.isascii():
                continue
            try:
                value.encode()
            except UnicodeEncodeError:
                raise MalformedRequest("must be valid Unicode", value=value, field=name) from None
        if self.date.tzinfo is None:
            raise MalformedRequest("must be timezone-aware", value=self.date, field="date")
        body_is_signed(self.api_version)

    @property
    def body_is_signed(self) -> bool:
        """Whether :attr:`api_version` puts the real body into the signature."""
        return body_is_signed(self.api_version)


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request's claim to be from ``access_key``, parsed but not yet verified."""

    access_key: AccessKey
    hash_name: str
    signature: str
    inputs: SigningInputs


def hash_name_of(sign_method: str) -> str:
    """Return the hashlib name in a ``signMethod`` (``"HMAC-SHA256"`` -> ``"sha256"``).

    Matching is case-insensitive; anything but ``HMAC-<name in HASH_ALGORITHMS>``
    raises :class:`UnsupportedSignMethod` naming the value.
    """
    mac, sep, hash_name = sign_method.partition("-")
    hash_name = hash_name.lower()
    if sep and mac.lower() == "hmac" and hash_name in HASH_ALGORITHMS:
        return hash_name
    raise UnsupportedSignMethod(
        f"must be HMAC-<hash> with hash one of {', '.join(sorted(HASH_ALGORITHMS))}",
        value=sign_method,
        field="signMethod",
    )


def format_sign_method(hash_name: str) -> str:
    """Return the ``signMethod`` for a hashlib name (``"sha256"`` -> ``"HMAC-SHA256"``)."""
    return f"HMAC-{hash_name_of('HMAC-' + hash_name).upper()}"


def parse_date(text: str) -> datetime:
    """Parse a ``Date`` / ``X-BackendAI-Date`` value into an aware datetime.

    Accepts ISO 8601 (``2016-09-30T01:23:45+00:00``, ``20160930T012345Z``,
    ``20160930T01:23:45Z``, ...) and RFC 822 / RFC 1123 dates
    (``Fri, 30 Sep 2016 01:23:45 GMT``).  A value without a timezone is UTC.
    The offset written in the value is kept: the signing key uses the calendar
    day as written.  Raises :class:`BadDate` otherwise.
    """
    value = text.strip(_WHITESPACE)
    problem = "must be an ISO 8601 or RFC 822 date"
    if not value or len(value) > _MAX_DATE_LENGTH or not value.isascii():
        raise BadDate(problem, value=text, field="Date")
    parsed: datetime
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            raise BadDate(problem, value=text, field="Date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def normalize_content_type(value: str | None) -> str:
    """Return the mime type the signature covers for a ``Content-Type`` header.

    Parameters (``; charset=...``, multipart boundaries) are dropped and the
    rest lower-cased; an absent header counts as ``application/octet-stream``
    and one that is not ``type/subtype`` as ``text/plain``, as the official
    manager's HTTP server reads it.
    """
    if value is None:
        return "application/octet-stream"
    mime = value.split(";", 1)[0].strip(_WHITESPACE).lower()
    if mime.count("/") != 1:
        return "text/plain"
    return mime


@functools.lru_cache(maxsize=64)
def body_is_signed(api_version: str) -> bool:
    """Whether requests of ``api_version`` (``vX.yyyymmdd``) sign their body.

    Raises :class:`MalformedRequest` when the version is not ``vX.yyyymmdd``.
    """
    match = _VERSION_RE.fullmatch(api_version)
    if match is None:
        raise MalformedRequest(
            "must look like v7.20230615", value=api_version, field=_VERSION_HEADER
        )
    return (int(match[1]), match[2]) < _FIRST_UNSIGNED_BODY_VERSION


def parse_authorization(header: str) -> Authorization:
    """Split ``BackendAI signMethod=<m>, credential=<access_key>:<signature>``.

    The scheme is matched case-insensitively, parameters may come in any order
    and unknown parameters are ignored.  The sign method is returned as sent
    (check it with :func:`hash_name_of`); the signature must be lower-case
    hex.  Raises :class:`MalformedAuthorization` naming the problem.
    """

    def bad(problem: str) -> MalformedAuthorization:
        return MalformedAuthorization(problem, value=header, field="Authorization")

    if len(header) > MAX_AUTHORIZATION_LENGTH:
        raise bad(f"is longer than {MAX_AUTHORIZATION_LENGTH} characters")
    if not header.isascii() or not header.strip(_WHITESPACE).isprintable():
        raise bad("must be printable ASCII")
    scheme, _, rest = header.strip(_WHITESPACE).partition(" ")
    if scheme.lower() != AUTH_SCHEME.lower():
        raise bad(f"must start with {AUTH_SCHEME!r}")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.partition("=")
        key = key.strip(_WHITESPACE)
        if not sep or not key:
            raise bad(f"parameter {part.strip(_WHITESPACE)!r} is not key=value")
        if key in params:
            raise bad(f"parameter {key!r} is repeated")
        params[key] = value.strip(_WHITESPACE)
    sign_method = params.get("signMethod")
    credential = params.get("credential")
    if not sign_method or credential is None:
        raise bad("needs both signMethod= and credential=")
    access_key, sep, signature = credential.partition(":")
    if not sep or _ACCESS_KEY_RE.fullmatch(access_key) is None:
        raise bad("credential must be <access_key>:<signature>")
    if _HEX_RE.fullmatch(signature) is None:
        raise bad("signature must be lower-case hex")
    return Authorization(sign_method, AccessKey(access_key), signature)


def derive_signing_key(secret_key: str, date: datetime, host: str, hash_name: str) -> bytes:
    """Return ``HMAC(HMAC(secret, yyyymmdd of date), host)`` with *hash_name*.

    The last :data:`SIGNING_KEY_CACHE_SIZE` keys are remembered under their
    secret key, day, host and hash, so a client signing many requests a day
    costs one HMAC per request instead of three.
    """
    return _signing_key(secret_key, date.strftime("%Y%m%d"), host, hash_name)


@functools.lru_cache(maxsize=SIGNING_KEY_CACHE_SIZE)
def _signing_key(secret_key: str, day: str, host: str, hash_name: str) -> bytes:
    day_key = hmac.digest(secret_key.encode(), day.encode(), hash_name)
    return hmac.digest(day_key, host.encode(), hash_name)


@functools.cache
def _empty_body_hash(hash_name: str) -> str:
    return hashlib.new(hash_name, b"").hexdigest()


def string_to_sign(inputs: SigningInputs, hash_name: str) -> bytes:
    """Return the UTF-8 string the signature covers (layout in the module doc)."""
    if inputs.body_is_signed:
        body_hash = hashlib.new(hash_name, inputs.body).hexdigest()
    else:
        body_hash = _empty_body_hash(hash_name)
    return (
        f"{inputs.method.upper()}\n{inputs.path}\n{inputs.date_text}\nhost:{inputs.host}\n"
        f"content-type:{inputs.content_type}\nx-backendai-version:{inputs.api_version}\n"
        f"{body_hash}"
    ).encode()


def compute_signature(inputs: SigningInputs, secret_key: str, hash_name: str) -> str:
    """Return the lower-case hex signature of *inputs* under *secret_key*."""
    key = derive_signing_key(secret_key, inputs.date, inputs.host, hash_name)
    return hmac.digest(key, string_to_sign(inputs, hash_name), hash_name).hex()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def sign_request(
    *,
    method: str,
    path: str,
    host: str,
    api_version: str,
    access_key: str,
    secret_key: str,
    content_type: str = "application/json",
    body: bytes = b"",
    hash_name: str = DEFAULT_HASH,
    now: datetime | None = None,
) -> dict[str, str]:
    """Return the headers that authenticate one request.

    The result holds ``Date`` (``now`` in UTC, ISO 8601, as the official client
    writes it), ``Content-Type``, ``X-BackendAI-Version`` and ``Authorization``.
    ``path`` must be the exact request target the HTTP library will send
    (percent-encoded, with its query string) and ``host`` the exact ``Host``
    header value (``host`` or ``host:port``).  ``now`` defaults to the current
    time; a naive value is UTC.  Raises :class:`UnsupportedSignMethod` for an
    unknown *hash_name* and :class:`MalformedRequest` for unusable fields.
    """
    sign_method = format_sign_method(hash_name)
    hash_name = hash_name.lower()
    if _ACCESS_KEY_RE.fullmatch(access_key) is None:
        raise MalformedRequest(
            "must be printable ASCII without spaces, ':' or ','",
            value=access_key,
            field="access_key",
        )
    if any(c in content_type for c in "\r\n\0"):
        raise MalformedRequest("must be on one line", value=content_type, field="Content-Type")
    date = _utc(now if now is not None else datetime.now(UTC))
    date_text = date.isoformat()
    inputs = SigningInputs(
        method=method.upper(),
        path=path,
        date=date,
        date_text=date_text,
        host=host,
        content_type=normalize_content_type(content_type),
        api_version=api_version,
        body=body,
    )
    signature = compute_signature(inputs, secret_key, hash_name)
    authorization = f"{AUTH_SCHEME} signMethod={sign_method}, credential={access_key}:{signature}"
    return {
        "Date": date_text,
        "Content-Type": content_type,
        _VERSION_HEADER: api_version,
        "Authorization": authorization,
    }


def _collect(headers: HeaderSource) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), value)
    return found


def _required(found: dict[str, str], name: str) -> str:
    value = found.get(name.lower(), "").strip(_WHITESPACE)
    if not value:
        raise MalformedRequest("header is missing", value=None, field=name)
    return value


def read_signed_request(
    *, method: str, path: str, headers: HeaderSource, now: datetime | None = None
) -> SignedRequest:
    """Parse and sanity-check a request's authentication headers (no secret needed).

    Reads ``Authorization``, the date (``Date``, or ``X-BackendAI-Date`` when
    ``Date`` is absent or empty), ``X-BackendAI-Version``, ``Host`` and
    ``Content-Type``.  Checks the sign method and that the date lies strictly
    within :data:`SKEW_WINDOW` of ``now`` (default: the current time; naive is
    UTC).  ``path`` is the raw request target with its query string.  The
    returned :class:`SignedRequest` carries no body; pass it to
    :func:`verify_signature` with the body when ``inputs.body_is_signed``.

    Raises :class:`MissingCredentials`, or an :class:`~bai.common.errors.InvalidValue`
    subclass: :class:`MalformedAuthorization`, :class:`UnsupportedSignMethod`,
    :class:`BadDate`, :class:`DateSkewed`, :class:`MalformedRequest`.
    """
    found = _collect(headers)
    raw_authorization = found.get("authorization", "")
    if not raw_authorization.strip(_WHITESPACE):
        raise MissingCredentials()
    authorization = parse_authorization(raw_authorization)
    hash_name = hash_name_of(authorization.sign_method)

    raw_date = ""
    for name in _DATE_HEADERS:
        raw_date = found.get(name.lower(), "").strip(_WHITESPACE)
        if raw_date:
            break
    if not raw_date:
        raise MalformedRequest("header is missing", value=None, field=" or ".join(_DATE_HEADERS))
    date = parse_date(raw_date)
    clock = _utc(now if now is not None else datetime.now(UTC))
    if abs(date - clock) >= SKEW_WINDOW:
        raise DateSkewed(
            f"must be within {SKEW_WINDOW} of the server time {clock.isoformat()}",
            value=raw_date,
            field="Date",
        )

    inputs = SigningInputs(
        method=method.upper(),
        path=path,
        date=date,
        date_text=raw_date,
        host=_required(found, "Host"),
        content_type=normalize_content_type(found.get("content-type")),
        api_version=_required(found, _VERSION_HEADER),
    )
    return SignedRequest(
        access_key=authorization.access_key,
        hash_name=hash_name,
        signature=authorization.signature,
        inputs=inputs,
    )


def verify_signature(request: SignedRequest, secret_key: str, *, body: bytes = b"") -> None:
    """Check *request*'s signature against *secret_key*, in constant time.

    *body* is only read when ``request.inputs.body_is_signed``; like the
    official manager, pass ``b""`` for multipart bodies even then.  Raises
    :class:`SignatureMismatch` (which does not reveal the expected signature).
    """
    inputs = replace(request.inputs, body=body) if request.inputs.body_is_signed else request.inputs
    expected = compute_signature(inputs, secret_key, request.hash_name)
    if not hmac.compare_digest(expected.encode(), request.signature.encode()):
        raise SignatureMismatch(request.access_key)


def verify_request(
    *,
    method: str,
    path: str,
    headers: HeaderSource,
    secret_key: str,
    body: bytes = b"",
    now: datetime | None = None,
) -> SignedRequest:
    """:func:`read_signed_request` then :func:`verify_signature`; returns the verified request."""
    request = read_signed_request(method=method, path=path, headers=headers, now=now)
    verify_signature(request, secret_key, body=body)
    return request
