"""HMAC request signing and verification, checked against the official client.

The fixed vectors below were produced by the official ``backend.ai-client==23.9.10``
(with ``yarl==1.9.4``, ``aiohttp==3.8.6``) installed in a throwaway venv, never
imported here:

* ``OFFICIAL_SIGNATURES``: ``ai.backend.client.auth.generate_signature(method=...,
  version="v7.20230615", endpoint=URL(endpoint), date=..., rel_url=...,
  content_type=..., access_key=..., secret_key=..., hash_type=...)`` for the two
  cases in ``OFFICIAL_CASES`` and every hash the manager accepts.
* ``WIRE_CAPTURES``: real requests sent by the official ``AsyncSession`` /
  ``Request.fetch()`` to an aiohttp server on ``http://127.0.0.1:18765``, with the
  method, raw path, headers and body as that server received them:
  ``Request("GET", "/auth/test", params={"owner_access_key": "AK 2", "q": "한글"})``
  and ``Request("POST", "/session")`` with ``set_json({"image": "python:3.9",
  "name": "세션"})``, for ``hash_type`` sha256, sha512 and md5.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

import pytest

from bai.common.auth import (
    HASH_ALGORITHMS,
    SKEW_WINDOW,
    AuthError,
    BadDate,
    DateSkewed,
    MalformedAuthorization,
    MalformedRequest,
    MissingCredentials,
    SignatureMismatch,
    SigningInputs,
    UnsupportedSignMethod,
    compute_signature,
    derive_signing_key,
    format_sign_method,
    hash_name_of,
    normalize_content_type,
    parse_authorization,
    parse_date,
    read_signed_request,
    sign_request,
    verify_request,
    verify_signature,
)
from bai.common.errors import BaiError, InvalidValue

API_VERSION = "v7.20230615"
SPEC_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SPEC_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# (method, endpoint netloc, rel_url, content_type, access_key, secret_key, date)
OFFICIAL_CASES = [
    (
        "GET",
        "your.sorna.api.endpoint",
        "/v2",
        "application/json",
        SPEC_ACCESS_KEY,
        SPEC_SECRET_KEY,
        datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC),
    ),
    (
        "post",
        "api.example.com:8443",
        "/prefix/session?a=b+c&%C3%A9=1",
        "Application/JSON",
        "AKIATEST",
        "sécret-ключ",
        datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ),
]

# (hash_type, index into OFFICIAL_CASES, signature from generate_signature)
OFFICIAL_SIGNATURES = [
    ("md5", 0, "610e23d1f070c63cef917a75ce1b3f0b"),
    ("md5", 1, "ec7ddcc03707c1ce82306d638ed31602"),
    ("sha1", 0, "a2f810369ef55de6b28ae95c0d5e24675248ddad"),
    ("sha1", 1, "2d34027512049d0b70062acde742c13bbb63a3c7"),
    ("sha224", 0, "ef947bb251288371282d78682e5b4e7fbd3ce1ca93c3a219b226b203"),
    ("sha224", 1, "0d93ff14f30915884d11f5d01d4df29688500988fa28dd97f025faac"),
    ("sha256", 0, "459822b2ace04912c6b085ed7b6e66951310986aef4e1bae692b67dc1599efcb"),
    ("sha256", 1, "8d984d96a18459725cb71afb4e586a80d645308f1a076cca5f205bb1e6ef2e07"),
    (
        "sha384",
        0,
        "0b5b66f8bb8fc91a8edfd02b8ea9ce10e1668c3746e9ef94912d9f31e5a650d1"
        "f43af62be0c63f9c603d3df84d60985b",
    ),
    (
        "sha384",
        1,
        "2f15e7af7249e1b09ce579fc893498fe3474ca3dbf67fc6900a6463b66a800e8"
        "66b7ddf43342a295a0ee3b2a72d31f72",
    ),
    (
        "sha512",
        0,
        "d284c583c8656566b6fe350e657bc451de7da77c13de709eaa3488bf273cf540"
        "9b326ae0a6080169ba084445804b67b7bc4eb4b9b373d6f83e3a591074c2ae28",
    ),
    (
        "sha512",
        1,
        "9f323dedecc06404bafce11046e8f6f7f9fb8dd680db84232ee4c5ec19db15bd"
        "ea98a0eaa3c816d36a6425266a4fb2dae38e6b563706f4bd22fa3183b519ca87",
    ),
    ("sha3_224", 0, "d75aca65392ff0a1239164bf9a26641c08045e417daa1544b2b819e9"),
    ("sha3_224", 1, "d3a3b2eb37bec93b41d2c87b2f7c0ff86ca8722159515146fa92dd83"),
    ("sha3_256", 0, "969f0c29b14144adbd14ca5daeef87092b124c884b78b4d0d108629ea1628fc9"),
    ("sha3_256", 1, "358c3c122e7fe8e81b9f99f8037046c26b75a7fbf159ba0439e9175990a1aaa8"),
    (
        "sha3_384",
        0,
        "50982354246909e1c97c408fc0d1fe4b440fa00e4b1cd5257e180bf8b4bb1588"
        "295832d6113ba369f131a9d1d6269273",
    ),
    (
        "sha3_384",
        1,
        "2b58615f809af81a39f93d8f828803c1d5e3c85b4794ad3c12ae890387dfeade"
        "5b6f3d42ee1f119f5fe1b64d6dfa2200",
    ),
    (
        "sha3_512",
        0,
        "3b49af733b3dd87e28985acb84154eaa80f944f4329c0bd7c283a31c3e50f896"
        "d26e56379ad5ad2146b578417d874841270669437e09e197e996900c2ee9fc2f",
    ),
    (
        "sha3_512",
        1,
        "3bae733a3e9e0eafc44fd22cdcba7294f020a65c65fb1a45ac47b0a8e94109a9"
        "ee0229c9ec4701f4e692d7439e7ed07f279b017e4e59fe500f2dc2ff4c1b49d2",
    ),
    (
        "blake2b",
        0,
        "cff285915520da6f61bc3e6b43066649359131651f988621aa254e2cfd77b323"
        "1a302786195adb1925f38b2fac39b36036e9139e751b00192ad528ba329ec925",
    ),
    (
        "blake2b",
        1,
        "bbe835a54c7daa06e342a33e525a6999786224abd65a5ad9ec42428fd202c592"
        "194c9afb6aed99d6badc03dfbf304e157a205e7acb2ec200564ac6fcaf6830a7",
    ),
    ("blake2s", 0, "b5bc06f9950049f641dc9606c639d443bdb569872389f1ac8150d6c0efa6bc4b"),
    ("blake2s", 1, "f7f0cb59e8e1dc5c4c651504526151ef3a6cf352df684e34e0c0eb38006664da"),
]

WIRE_HOST = "127.0.0.1:18765"
GET_PATH = "/auth/test?owner_access_key=AK+2&q=%ED%95%9C%EA%B8%80"
POST_BODY = b'{"image": "python:3.9", "name": "\\uc138\\uc158"}'

# (method, raw_path, Content-Type, Date, body, signMethod, signature) as received
WIRE_CAPTURES = [
    (
        "GET",
        GET_PATH,
        "text/plain",
        "2026-11-28T00:51:58.408618+00:00",
        b"",
        "HMAC-SHA256",
        "1fa879107a9983291be83e1547b6422462addf4a7e5371c69d321c004ce9efb2",
    ),
    (
        "POST",
        "/session",
        "application/json",
        "2026-11-28T00:51:58.410034+00:00",
        POST_BODY,
        "HMAC-SHA256",
        "5dbe279c033c8494c3677b6a7aa8bff62857db4bfd4559bb99d3b620278e0c7b",
    ),
    (
        "GET",
        GET_PATH,
        "text/plain",
        "2026-11-28T00:51:58.413073+00:00",
        b"",
        "HMAC-SHA512",
        "24549ec9a29581fb8d83e31b2d8e34cbc65551b98143f2410960d32f46db73e1"
        "a302478b9951144c4c55fabbe839c3d64338d99a5228b09a847ac0c39d1bb503",
    ),
    (
        "POST",
        "/session",
        "application/json",
        "2026-11-28T00:51:58.413755+00:00",
        POST_BODY,
        "HMAC-SHA512",
        "4b960fe701cfa7d63590d93f75bfb765b70fff8966eb584549ccebe65b6a7e9a"
        "d2b5087ca08b1413b891f92c999c58125986411a89c22cea9a201ecae8d2b200",
    ),
    (
        "GET",
        GET_PATH,
        "text/plain",
        "2026-11-28T00:51:58.415793+00:00",
        b"",
        "HMAC-MD5",
        "44f72db9959a5262704aa08cbaf450ed",
    ),
    (
        "POST",
        "/session",
        "application/json",
        "2026-11-28T00:51:58.416472+00:00",
        POST_BODY,
        "HMAC-MD5",
        "928ac7db9e912d6e5354a68679f83a4d",
    ),
]

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
HEX_RUN = re.compile(r"[0-9a-f]{16,}")


def _signed_headers(
    *,
    method: str = "POST",
    path: str = "/session/create?x=1",
    host: str = "api.example.com",
    api_version: str = API_VERSION,
    secret_key: str = SPEC_SECRET_KEY,
    content_type: str = "application/json",
    body: bytes = b"{}",
    hash_name: str = "sha256",
    now: datetime = NOW,
) -> dict[str, str]:
    headers = sign_request(
        method=method,
        path=path,
        host=host,
        api_version=api_version,
        access_key=SPEC_ACCESS_KEY,
        secret_key=secret_key,
        content_type=content_type,
        body=body,
        hash_name=hash_name,
        now=now,
    )
    headers["Host"] = host
    return headers


def _verify(
    headers: dict[str, str],
    *,
    method: str = "POST",
    path: str = "/session/create?x=1",
    secret_key: str = SPEC_SECRET_KEY,
    body: bytes = b"{}",
    now: datetime = NOW,
) -> str:
    return verify_request(
        method=method, path=path, headers=headers, secret_key=secret_key, body=body, now=now
    ).access_key


# --- compatibility with the official client -------------------------------------------


@pytest.mark.parametrize(("hash_name", "case", "signature"), OFFICIAL_SIGNATURES)
def test_sign_request_matches_official_generate_signature(
    hash_name: str, case: int, signature: str
) -> None:
    method, host, path, content_type, access_key, secret_key, date = OFFICIAL_CASES[case]
    headers = sign_request(
        method=method,
        path=path,
        host=host,
        api_version=API_VERSION,
        access_key=access_key,
        secret_key=secret_key,
        content_type=content_type,
        hash_name=hash_name,
        now=date,
    )
    assert headers["Authorization"] == (
        f"BackendAI signMethod=HMAC-{hash_name.upper()}, credential={access_key}:{signature}"
    )
    assert headers["Date"] == date.isoformat()
    assert headers["X-BackendAI-Version"] == API_VERSION
    assert headers["Content-Type"] == content_type


@pytest.mark.parametrize(("hash_name", "case", "signature"), OFFICIAL_SIGNATURES)
def test_verify_accepts_official_signatures(hash_name: str, case: int, signature: str) -> None:
    method, host, path, content_type, access_key, secret_key, date = OFFICIAL_CASES[case]
    headers = {
        "Host": host,
        "Date": date.isoformat(),
        "Content-Type": content_type,
        "X-BackendAI-Version": API_VERSION,
        "Authorization": (
            f"BackendAI signMethod=HMAC-{hash_name.upper()}, credential={access_key}:{signature}"
        ),
    }
    checked = verify_request(
        method=method.upper(),
        path=path,
        headers=headers,
        secret_key=secret_key,
        now=date + timedelta(minutes=3),
    )
    assert checked.access_key == access_key
    assert checked.hash_name == hash_name


@pytest.mark.parametrize(
    ("method", "path", "content_type", "date", "body", "sign_method", "signature"), WIRE_CAPTURES
)
def test_verify_accepts_requests_captured_from_official_client(
    method: str,
    path: str,
    content_type: str,
    date: str,
    body: bytes,
    sign_method: str,
    signature: str,
) -> None:
    headers = {
        "Host": WIRE_HOST,
        "X-BackendAI-Version": API_VERSION,
        "Date": date,
        "Content-Type": content_type,
        "Authorization": f"BackendAI signMethod={sign_method}, "
        f"credential={SPEC_ACCESS_KEY}:{signature}",
    }
    received = datetime.fromisoformat(date) + timedelta(seconds=2)
    assert (
        verify_request(
            method=method,
            path=path,
            headers=headers,
            secret_key=SPEC_SECRET_KEY,
            body=body,
            now=received,
        ).access_key
        == SPEC_ACCESS_KEY
    )
    with pytest.raises(SignatureMismatch):
        verify_request(
            method=method,
            path=path.replace("test", "tesT").replace("session", "sessions"),
            headers=headers,
            secret_key=SPEC_SECRET_KEY,
            now=received,
        )


@pytest.mark.parametrize(
    ("method", "path", "content_type", "date", "body", "sign_method", "signature"), WIRE_CAPTURES
)
def test_sign_request_reproduces_official_wire_headers(
    method: str,
    path: str,
    content_type: str,
    date: str,
    body: bytes,
    sign_method: str,
    signature: str,
) -> None:
    headers = sign_request(
        method=method,
        path=path,
        host=WIRE_HOST,
        api_version=API_VERSION,
        access_key=SPEC_ACCESS_KEY,
        secret_key=SPEC_SECRET_KEY,
        content_type=content_type,
        body=body,
        hash_name=hash_name_of(sign_method),
        now=datetime.fromisoformat(date),
    )
    assert headers == {
        "Date": date,
        "Content-Type": content_type,
        "X-BackendAI-Version": API_VERSION,
        "Authorization": f"BackendAI signMethod={sign_method}, "
        f"credential={SPEC_ACCESS_KEY}:{signature}",
    }


def test_signing_key_uses_the_calendar_day_written_in_the_date() -> None:
    # 08:00 at +09:00 is still the 29th in UTC; the official manager keys on the 30th.
    date_text = "2016-09-30T08:00:00+09:00"
    inputs = SigningInputs(
        method="GET",
        path="/v2",
        date=parse_date(date_text),
        date_text=date_text,
        host="h",
        content_type="application/json",
        api_version=API_VERSION,
    )
    day_key = hmac.digest(b"secret", b"20160930", "sha256")
    key = hmac.digest(day_key, b"h", "sha256")
    message = (
        "GET\n/v2\n2016-09-30T08:00:00+09:00\nhost:h\ncontent-type:application/json\n"
        f"x-backendai-version:{API_VERSION}\n{hashlib.sha256(b'').hexdigest()}"
    ).encode()
    assert (
        compute_signature(inputs, "secret", "sha256")
        == hmac.new(key, message, "sha256").hexdigest()
    )


def test_remembered_signing_keys_are_never_reused_for_another_secret_day_or_host() -> None:
    def expected(secret: str, day: str, host: str) -> bytes:
        return hmac.digest(
            hmac.digest(secret.encode(), day.encode(), "sha256"), host.encode(), "sha256"
        )

    late = datetime(2024, 5, 6, 23, 59, 59, tzinfo=UTC)
    cases = [
        (SPEC_SECRET_KEY, late, "h", "20240506"),
        (SPEC_SECRET_KEY, late + timedelta(seconds=1), "h", "20240507"),
        (SPEC_SECRET_KEY, late, "h:8080", "20240506"),
        (SPEC_SECRET_KEY + "x", late, "h", "20240506"),
    ]
    # Twice over, so the second pass reads what the first one remembered.
    for _ in range(2):
        for secret, date, host, day in cases:
            assert derive_signing_key(secret, date, host, "sha256") == expected(secret, day, host)
    headers = _signed_headers(now=late)
    assert _verify(headers, now=late) == SPEC_ACCESS_KEY
    with pytest.raises(SignatureMismatch):
        _verify(headers, now=late, secret_key=SPEC_SECRET_KEY + "x")


# --- round trips and tampering ------------------------------------------------------------


@pytest.mark.parametrize("hash_name", sorted(HASH_ALGORITHMS))
def test_round_trip_for_every_hash(hash_name: str) -> None:
    headers = _signed_headers(hash_name=hash_name)
    assert headers["Authorization"].startswith(
        f"BackendAI signMethod=HMAC-{hash_name.upper()}, credential={SPEC_ACCESS_KEY}:"
    )
    assert _verify(headers) == SPEC_ACCESS_KEY


def test_hash_names_are_case_insensitive() -> None:
    headers = _signed_headers(hash_name="SHA512")
    assert "signMethod=HMAC-SHA512," in headers["Authorization"]
    headers["Authorization"] = headers["Authorization"].replace("HMAC-SHA512", "hmac-sha512")
    assert _verify(headers) == SPEC_ACCESS_KEY


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "PUT"),
        ("path", "/session/create?x=2"),
        ("path", "/session/create"),
        ("secret_key", SPEC_SECRET_KEY + "x"),
    ],
)
def test_tampered_request_fails(field: str, value: str) -> None:
    headers = _signed_headers()
    with pytest.raises(SignatureMismatch) as caught:
        _verify(headers, **{field: value})  # type: ignore[arg-type]
    assert not isinstance(caught.value, InvalidValue)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Host", "api.example.com:443"),
        ("Date", (NOW + timedelta(seconds=1)).isoformat()),
        ("Date", NOW.isoformat().replace("+00:00", "Z")),
        ("Content-Type", "text/plain"),
        ("X-BackendAI-Version", "v7.20230616"),
    ],
)
def test_tampered_signed_header_fails(header: str, value: str) -> None:
    headers = _signed_headers()
    headers[header] = value
    with pytest.raises(SignatureMismatch):
        _verify(headers)


def test_tampered_signature_fails_without_revealing_the_expected_one() -> None:
    headers = _signed_headers()
    auth = parse_authorization(headers["Authorization"])
    flipped = ("0" if auth.signature[0] != "0" else "1") + auth.signature[1:]
    headers["Authorization"] = headers["Authorization"].replace(auth.signature, flipped)
    with pytest.raises(SignatureMismatch) as caught:
        _verify(headers)
    message = str(caught.value)
    assert SPEC_ACCESS_KEY in message
    assert HEX_RUN.search(message) is None


def test_body_is_not_signed_by_current_api_versions() -> None:
    # The official client hashes b"" for every version it speaks, so streamed and
    # multipart uploads never need buffering; the body travels unsigned.
    headers = _signed_headers(body=b'{"a": 1}')
    assert _verify(headers, body=b'{"a": 2}') == SPEC_ACCESS_KEY


def test_body_is_signed_by_api_versions_before_v4_20181215() -> None:
    headers = _signed_headers(api_version="v3.20170615", body=b'{"a": 1}')
    assert _verify(headers, body=b'{"a": 1}') == SPEC_ACCESS_KEY
    with pytest.raises(SignatureMismatch):
        _verify(headers, body=b'{"a": 2}')


def test_two_step_verification_for_the_manager() -> None:
    headers = _signed_headers(hash_name="sha384")
    claim = read_signed_request(method="POST", path="/session/create?x=1", headers=headers, now=NOW)
    assert (claim.access_key, claim.hash_name) == (SPEC_ACCESS_KEY, "sha384")
    assert not claim.inputs.body_is_signed
    verify_signature(claim, SPEC_SECRET_KEY)
    with pytest.raises(SignatureMismatch):
        verify_signature(claim, "another secret")


def test_header_names_are_case_insensitive() -> None:
    headers = {name.lower(): value for name, value in _signed_headers().items()}
    assert _verify(headers) == SPEC_ACCESS_KEY


def test_method_case_does_not_matter() -> None:
    headers = _signed_headers(method="post")
    assert _verify(headers, method="POST") == SPEC_ACCESS_KEY


def test_non_ascii_path_secret_and_host_round_trip() -> None:
    headers = _signed_headers(path="/폴더/ファイル?q=é", secret_key="비밀🔑", host="예시.kr:8080")
    assert _verify(headers, path="/폴더/ファイル?q=é", secret_key="비밀🔑") == SPEC_ACCESS_KEY
    with pytest.raises(SignatureMismatch):
        _verify(headers, path="/폴더/ファイル?q=e", secret_key="비밀🔑")


# --- content type --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "signed"),
    [
        (None, "application/octet-stream"),
        ("application/json", "application/json"),
        (" Application/JSON ; charset=UTF-8", "application/json"),
        ("multipart/form-data; boundary=abc", "multipart/form-data"),
        ("", "text/plain"),
        ("garbage", "text/plain"),
        ("a/b/c", "text/plain"),
    ],
)
def test_content_type_is_signed_as_the_server_reads_it(header: str | None, signed: str) -> None:
    assert normalize_content_type(header) == signed


def test_content_type_parameters_do_not_break_the_signature() -> None:
    # The HTTP library adds the multipart boundary after signing.
    headers = _signed_headers(content_type="multipart/form-data")
    headers["Content-Type"] = "multipart/form-data; boundary=----1234"
    assert _verify(headers) == SPEC_ACCESS_KEY


def test_absent_content_type_verifies_as_octet_stream() -> None:
    headers = _signed_headers(content_type="application/octet-stream")
    del headers["Content-Type"]
    assert _verify(headers) == SPEC_ACCESS_KEY


# --- dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1, -1])
def test_clock_skew_window(sign: int) -> None:
    headers = _signed_headers()
    assert _verify(headers, now=NOW + sign * timedelta(minutes=14)) == SPEC_ACCESS_KEY
    assert _verify(headers, now=NOW + sign * timedelta(minutes=14, seconds=59)) == SPEC_ACCESS_KEY
    for off in (SKEW_WINDOW, timedelta(minutes=16), timedelta(days=400)):
        with pytest.raises(DateSkewed) as caught:
            _verify(headers, now=NOW + sign * off)
        assert headers["Date"] in str(caught.value)
        assert isinstance(caught.value, InvalidValue)


def test_skew_is_measured_in_absolute_time_across_timezones() -> None:
    headers = _signed_headers()
    local = NOW.astimezone(datetime.fromisoformat("2000-01-01T00:00:00-05:00").tzinfo)
    assert _verify(headers, now=local + timedelta(minutes=10)) == SPEC_ACCESS_KEY
    with pytest.raises(DateSkewed):
        _verify(headers, now=local + timedelta(minutes=16))


def test_naive_now_is_utc() -> None:
    headers = _signed_headers()
    assert _verify(headers, now=NOW.replace(tzinfo=None)) == SPEC_ACCESS_KEY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016-09-30T01:23:45+00:00", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("2016-09-30T01:23:45.5Z", datetime(2016, 9, 30, 1, 23, 45, 500000, tzinfo=UTC)),
        ("20160930T012345Z", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("20160930T01:23:45Z", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("2016-09-30 01:23:45", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("2016-09-30T10:23:45+09:00", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("Fri, 30 Sep 2016 01:23:45 GMT", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("Fri, 30 Sep 2016 01:23:45 -0000", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("30 Sep 2016 03:23:45 +0200", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
        ("  2016-09-30T01:23:45Z\t", datetime(2016, 9, 30, 1, 23, 45, tzinfo=UTC)),
    ],
)
def test_accepted_date_formats(text: str, expected: datetime) -> None:
    parsed = parse_date(text)
    assert parsed.tzinfo is not None
    assert parsed == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yesterday",
        "2016-13-01T00:00:00Z",
        "2016-09-31T00:00:00Z",
        "Fri, 99 Foo 2016 01:23:45 GMT",
        "1475198625",
        "２０１６-09-30T01:23:45Z",
        "2016-09-30T01:23:45Z" + " " * 100 + "x",
        "9" * 10_000,
        "\x00\x01",
    ],
)
def test_bad_date_formats_are_rejected_with_the_value(text: str) -> None:
    with pytest.raises(BadDate) as caught:
        parse_date(text)
    assert caught.value.field == "Date"
    assert caught.value.value == text
    assert len(str(caught.value)) < 300


def test_bad_date_header_is_rejected_by_verification() -> None:
    headers = _signed_headers()
    headers["Date"] = "Thursday-ish"
    with pytest.raises(BadDate, match="Thursday-ish"):
        _verify(headers)


def test_x_backendai_date_is_used_when_date_is_absent() -> None:
    headers = _signed_headers()
    headers["X-BackendAI-Date"] = headers.pop("Date")
    assert _verify(headers) == SPEC_ACCESS_KEY


def test_date_takes_precedence_over_x_backendai_date() -> None:
    headers = _signed_headers()
    headers["X-BackendAI-Date"] = "not a date"
    assert _verify(headers) == SPEC_ACCESS_KEY
    headers["X-BackendAI-Date"], headers["Date"] = headers["Date"], "not a date"
    with pytest.raises(BadDate, match="not a date"):
        _verify(headers)


def test_empty_date_falls_back_to_x_backendai_date() -> None:
    headers = _signed_headers()
    headers["X-BackendAI-Date"], headers["Date"] = headers["Date"], ""
    assert _verify(headers) == SPEC_ACCESS_KEY


def test_missing_date_is_a_malformed_request() -> None:
    headers = _signed_headers()
    del headers["Date"]
    with pytest.raises(MalformedRequest, match="Date or X-BackendAI-Date"):
        _verify(headers)


# --- Authorization header --------------------------------------------------------------------


def test_parse_authorization() -> None:
    parsed = parse_authorization(
        "BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:022ae894b4ec"
    )
    assert parsed == ("HMAC-SHA256", "AKIAIOSFODNN7EXAMPLE", "022ae894b4ec")
    sign_method, access_key, signature = parsed
    assert (sign_method, access_key, signature) == tuple(parsed)


@pytest.mark.parametrize(
    "header",
    [
        "backendai signMethod=HMAC-SHA1,credential=AK:00ff",
        "BackendAI credential=AK:00ff, signMethod=HMAC-SHA1",
        "BackendAI  signMethod = HMAC-SHA1 ,  credential = AK:00ff ",
        "BackendAI signMethod=HMAC-SHA1, credential=AK:00ff, realm=x",
        "\tBackendAI signMethod=HMAC-SHA1, credential=AK:00ff\r\n",
    ],
)
def test_authorization_header_layout_is_tolerated(header: str) -> None:
    assert parse_authorization(header) == ("HMAC-SHA1", "AK", "00ff")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("Basic dXNlcjpwYXNz", "must start with 'BackendAI'"),
        ("BackendAI", "is not key=value"),
        ("BackendAI signMethod=HMAC-SHA256", "needs both"),
        ("BackendAI credential=AK:00ff", "needs both"),
        ("BackendAI signMethod=, credential=AK:00ff", "needs both"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK", "<access_key>:<signature>"),
        ("BackendAI signMethod=HMAC-SHA256, credential=:00ff", "<access_key>:<signature>"),
        ("BackendAI signMethod=HMAC-SHA256, credential=A K:00ff", "<access_key>:<signature>"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK:", "lower-case hex"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK:00FF", "lower-case hex"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK:zz", "lower-case hex"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK:00:11", "lower-case hex"),
        ("BackendAI signMethod=HMAC-SHA256, , credential=AK:00", "is not key=value"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK:00, credential=B:11", "repeated"),
        ("BackendAI signMethod=HMAC-SHA256, credential=ÄK:00ff", "printable ASCII"),
        ("BackendAI signMethod=HMAC-SHA256,\ncredential=AK:00ff", "printable ASCII"),
        ("BackendAI signMethod=HMAC-SHA256, credential=AK:00ff\x00", "printable ASCII"),
        ("BackendAI " + "x=y, " * 1000, "longer than 1024"),
    ],
)
def test_malformed_authorization_is_rejected_with_the_problem(header: str, problem: str) -> None:
    with pytest.raises(MalformedAuthorization) as caught:
        parse_authorization(header)
    assert problem in str(caught.value)
    assert caught.value.field == "Authorization"
    assert len(str(caught.value)) < 400


def test_malformed_authorization_is_rejected_by_verification() -> None:
    headers = _signed_headers()
    headers["Authorization"] = headers["Authorization"].replace("credential=", "cred=")
    with pytest.raises(MalformedAuthorization, match="needs both"):
        _verify(headers)


@pytest.mark.parametrize("value", [None, "", "  \t"])
def test_missing_authorization_is_missing_credentials(value: str | None) -> None:
    headers = _signed_headers()
    del headers["Authorization"]
    if value is not None:
        headers["Authorization"] = value
    with pytest.raises(MissingCredentials, match="Authorization header is missing") as caught:
        _verify(headers)
    assert not isinstance(caught.value, InvalidValue)


# --- sign methods --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sign_method",
    ["HMAC-SHA999", "RSA-SHA256", "HMAC", "HMACSHA256", "HMAC-", "HMAC-SHAKE_128", "HMAC-SHA3-256"],
)
def test_unknown_sign_method_is_rejected_naming_it(sign_method: str) -> None:
    with pytest.raises(UnsupportedSignMethod) as caught:
        hash_name_of(sign_method)
    assert repr(sign_method) in str(caught.value)
    assert "sha256" in str(caught.value)
    headers = _signed_headers()
    headers["Authorization"] = headers["Authorization"].replace("HMAC-SHA256", sign_method)
    with pytest.raises(UnsupportedSignMethod):
        _verify(headers)


def test_sign_method_names_round_trip() -> None:
    for hash_name in HASH_ALGORITHMS:
        assert hash_name_of(format_sign_method(hash_name)) == hash_name
    assert format_sign_method("sha3_256") == "HMAC-SHA3_256"
    assert {"md5", "sha1", "sha224", "sha256", "sha384", "sha512"} <= HASH_ALGORITHMS
    assert not any(name.startswith("shake") for name in HASH_ALGORITHMS)


def test_sign_request_rejects_unknown_hash() -> None:
    with pytest.raises(UnsupportedSignMethod, match="whirlpool"):
        _signed_headers(hash_name="whirlpool")


# --- other headers and fields ----------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-BackendAI-Version", "Host"])
def test_missing_signed_header_is_named(header: str) -> None:
    headers = _signed_headers()
    del headers[header]
    with pytest.raises(MalformedRequest) as caught:
        _verify(headers)
    assert caught.value.field == header


@pytest.mark.parametrize("version", ["7", "v7", "v7.2023061", "v7.20230615x", "V7.20230615"])
def test_malformed_api_version_is_rejected(version: str) -> None:
    headers = _signed_headers()
    headers["X-BackendAI-Version"] = version
    with pytest.raises(MalformedRequest, match=re.escape(repr(version))):
        _verify(headers)
    with pytest.raises(MalformedRequest):
        _signed_headers(api_version=version)


@pytest.mark.parametrize("path", ["/a\nb", "/a\rb", "/a\x00", "", "/\udcff"])
def test_unsignable_path_is_rejected(path: str) -> None:
    with pytest.raises(MalformedRequest):
        _signed_headers(path=path)
    headers = _signed_headers()
    with pytest.raises(MalformedRequest) as caught:
        _verify(headers, path=path)
    assert caught.value.field == "path"


def test_sign_request_refuses_a_content_type_that_would_inject_headers() -> None:
    with pytest.raises(MalformedRequest, match="Content-Type"):
        _signed_headers(content_type="application/json; a=1\r\nX-Evil: 1")


@pytest.mark.parametrize("access_key", ["", "A:K", "A,K", "A K", "ÄK", "AK\n"])
def test_sign_request_rejects_access_keys_that_break_the_header(access_key: str) -> None:
    with pytest.raises(MalformedRequest, match="access_key"):
        sign_request(
            method="GET",
            path="/",
            host="h",
            api_version=API_VERSION,
            access_key=access_key,
            secret_key="s",
            now=NOW,
        )


def test_error_hierarchy() -> None:
    bad_request: list[type[AuthError]] = [
        MalformedAuthorization,
        UnsupportedSignMethod,
        MalformedRequest,
        BadDate,
        DateSkewed,
    ]
    unauthorized: list[type[AuthError]] = [MissingCredentials, SignatureMismatch]
    assert all(issubclass(cls, InvalidValue) for cls in bad_request)
    assert not any(issubclass(cls, InvalidValue) for cls in unauthorized)
    assert issubclass(AuthError, BaiError)


def test_sign_request_defaults_to_now_and_sha256() -> None:
    headers = sign_request(
        method="GET",
        path="/",
        host="h",
        api_version=API_VERSION,
        access_key="AK",
        secret_key="s",
    )
    assert "signMethod=HMAC-SHA256," in headers["Authorization"]
    assert abs(parse_date(headers["Date"]) - datetime.now(UTC)) < timedelta(minutes=1)
    headers["Host"] = "h"
    assert (
        verify_request(method="GET", path="/", headers=headers, secret_key="s").access_key == "AK"
    )
