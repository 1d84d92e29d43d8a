"""What every route handler needs: the manager context, validated input, JSON answers.

* :func:`current_ctx` -- the :class:`~bai.manager.context.ManagerContext` of
  the app serving the request.
* :func:`read_json`, :func:`read_query`, :func:`read_params` -- decode the
  body or the query string into a ``msgspec.Struct`` (or any type msgspec
  converts to).  Guarantees: whatever the client sends, they return a valid
  value or raise :class:`InvalidParameter` (an
  :class:`~bai.common.errors.InvalidValue`, answered 400) or
  :class:`~bai.manager.api.errors.PayloadTooLarge` (413), never a raw
  decoding error.  ``field`` is in the spec's dotted JSON notation
  (``config.resources.cpu``, ``mounts.0``; ``*`` stands for any key of an
  object), and the message echoes the offending value when there is one.
  Strings with NUL characters are refused, as neither PostgreSQL text nor
  JSONB can store them.
* :func:`json_response` -- a JSON answer encoded with msgspec (UUIDs,
  datetimes, enums, Decimals and :class:`~bai.common.slots.ResourceSlot`
  encode as the spec writes them); :func:`no_content` -- an empty 204.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar, cast

import msgspec
from quart import Response, current_app, request
from werkzeug.datastructures import MultiDict

from bai.common.slots import ResourceSlot
from bai.common.validation import NO_VALUE, InvalidField, invalid_value
from bai.manager.api.errors import PayloadTooLarge
from bai.manager.context import ManagerContext

__all__ = [
    "MAX_JSON_BODY",
    "InvalidParameter",
    "current_ctx",
    "json_response",
    "no_content",
    "read_json",
    "read_params",
    "read_query",
]

T = TypeVar("T")

#: The largest JSON body :func:`read_json` reads unless a route allows more.
MAX_JSON_BODY: Final = 1024 * 1024

# A JSON ``\u0000`` escape: an odd run of backslashes before ``u0000``.
_NUL_ESCAPE: Final = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def current_ctx() -> ManagerContext:
    """The :class:`ManagerContext` the app serving this request was created with."""
    return cast(ManagerContext, current_app.bai)  # type: ignore[attr-defined]


def _encode_extra(value: Any) -> Any:
    if isinstance(value, ResourceSlot):
        return value.to_json()
    if isinstance(value, Mapping):
        return dict(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__} as JSON")


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_encode_extra, decimal_format="string")


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """An ``application/json`` response holding *data*."""
    response: Response = current_app.response_class(
        _ENCODER.encode(data), status=status, content_type="application/json"
    )
    if headers:
        for name, value in headers.items():
            response.headers[name] = value
    return response


def no_content() -> Response:
    """An empty ``204 No Content`` answer."""
    response: Response = current_app.response_class(b"", status=204)
    return response


class InvalidParameter(InvalidField):
    """Bad input to an API route; the message echoes the value only when it is known."""


def _untyped(raw: bytes) -> Any:
    """*raw* decoded without a type, to find an offending value; ``NO_VALUE`` if it is not
    JSON (typed decoding can stop at a type error before reaching a syntax error)."""
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return NO_VALUE


def _decode(raw: bytes, model: type[T]) -> T:
    if _NUL_ESCAPE.search(raw):
        raise InvalidParameter("strings in the request body must not contain NUL (\\u0000)")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise invalid_value(
            exc, _untyped(raw), where="the request body", error=InvalidParameter
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidParameter(f"the request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidParameter("the request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidParameter("the request body is nested too deeply") from None


async def _body(max_size: int) -> bytes:
    declared = request.content_length
    if declared is not None and declared > max_size:
        raise PayloadTooLarge(f"a JSON body may have at most {max_size} bytes")
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    if len(raw) > max_size:
        raise PayloadTooLarge(f"a JSON body may have at most {max_size} bytes")
    return raw.strip()


async def read_json(model: type[T], *, max_size: int = MAX_JSON_BODY) -> T:
    """Decode the request body as JSON into *model*; an empty body counts as ``{}``.

    The ``Content-Type`` is not checked: the official client sends bodiless
    POSTs as ``application/octet-stream``.  Bodies over *max_size* bytes
    raise :class:`PayloadTooLarge` (a declared ``Content-Length`` is
    checked before anything is read).
    """
    return _decode(await _body(max_size) or b"{}", model)


def read_query(model: type[T], args: MultiDict[str, str] | None = None) -> T:
    """Convert *args* (by default the query string) into *model*, the first value of each key.

    Values are strings, converted leniently: ``"1"`` for ints, ``"true"`` /
    ``"false"`` / ``"1"`` / ``"0"`` for bools.
    """
    values: dict[str, str] = {}
    for key, value in (request.args if args is None else args).items(multi=False):
        if "\0" in key or "\0" in value:
            raise InvalidParameter("must not contain NUL characters", field=key)
        values[key] = value
    try:
        return msgspec.convert(values, model, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid_value(exc, values, where="the query string", error=InvalidParameter) from None


async def read_params(model: type[T], *, max_size: int = MAX_JSON_BODY) -> T:
    """The query string for ``GET`` / ``HEAD`` and bodiless requests, else the JSON body."""
    if request.method in ("GET", "HEAD"):
        return read_query(model)
    raw = await _body(max_size)
    return _decode(raw, model) if raw else read_query(model)
