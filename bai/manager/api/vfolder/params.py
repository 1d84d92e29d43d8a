"""Reading the parameters of ``/folders`` routes, wherever the client put them.

The official client sends the parameters of ``GET`` and ``DELETE`` routes as
a JSON body, other clients as a query string.  :func:`read_args` reads the
query string when it names any key other than the gate's
(``owner_access_key``), else the JSON body (an empty body is ``{}``);
either way the result is *model* or a 400 naming the field.  Keys in
*lists* take every value of a repeated query key.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final, TypeVar

import msgspec
from quart import request

from bai.common.validation import invalid_value
from bai.manager.api.helpers import InvalidParameter, read_json

__all__ = ["read_args"]

T = TypeVar("T")

#: Query-string keys the request gate reads, never a route's parameter.
_GATE_KEYS: Final = frozenset({"owner_access_key"})


async def read_args(model: type[T], *, lists: Collection[str] = ()) -> T:
    """*model* from the query string or the JSON body (module docs)."""
    keys = set(request.args) - _GATE_KEYS
    if not keys:
        return await read_json(model)
    values: dict[str, Any] = {}
    for key in sorted(keys):
        if "\0" in key:
            raise InvalidParameter("must not contain NUL characters", field="query")
        found = request.args.getlist(key)
        if any("\0" in value for value in found):
            raise InvalidParameter("must not contain NUL characters", field=key)
        values[key] = found if key in lists else found[0]
    try:
        return msgspec.convert(values, model, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid_value(exc, values, where="the query string", error=InvalidParameter) from None
