"""The manager's shared configuration: ``POST /config/get|set|delete`` (superadmin only).

Keys are ``/``-separated paths, as in the official manager's etcd.  A
``prefix`` read or delete covers the key and the keys below it; a ``prefix``
read answers the subtree as nested objects.  Failures (a keypair that is not
superadmin: 403) raise the typed :class:`~bai.client.exceptions.BackendAPIError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bai.client.exceptions import MalformedResponse
from bai.client.request import APIClient

__all__ = ["delete_config", "get_config", "set_config"]


async def get_config(api: APIClient, key: str, *, prefix: bool = False) -> Any:
    """The value under *key* (``None`` if unset); with *prefix*, a mapping of the subtree."""
    data = await api.fetch_json("POST", "/config/get", json_body={"key": key, "prefix": prefix})
    if not isinstance(data, dict) or "result" not in data:
        raise MalformedResponse("has no result", value=data, field="/config/get answer")
    return data["result"]


async def set_config(api: APIClient, key: str, value: str | Mapping[str, Any]) -> None:
    """Store *value* (a string, or a mapping written as a subtree) under *key*."""
    body_value = value if isinstance(value, str) else dict(value)
    await api.fetch_json("POST", "/config/set", json_body={"key": key, "value": body_value})


async def delete_config(api: APIClient, key: str, *, prefix: bool = False) -> None:
    """Delete *key* (with *prefix*: every key starting with it)."""
    await api.fetch_json("POST", "/config/delete", json_body={"key": key, "prefix": prefix})
