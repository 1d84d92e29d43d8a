"""Rich output from user code in a kernel: images and HTML in the console.

Inside a kernel's Python::

    from bai.kernel import display
    display.png(open("chart.png", "rb").read())
    display.svg(svg_text)
    display.html("<table><tr><td>1</td></tr></table>")

Each call becomes one ``media`` (or ``html``) console item, in print order
with the surrounding stdout/stderr.  Text and XML types (``image/svg+xml``)
carry the text itself; binary types carry an RFC 2397 ``data:`` URI, as the
spec's console items do.

This module is imported by the image's own Python, so it uses the standard
library only and runs on Python 3.8+.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    Sink = Callable[[str, dict[str, Any]], None]

_sink: Sink | None = None

_SIGNATURES = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
}


def install_sink(sink: Sink | None) -> None:
    """Route display calls to *sink* (``sink(kind, payload)``); the kernel does this."""
    global _sink
    _sink = sink


def is_text_mime(mime: str) -> bool:
    """Whether *mime* travels as plain text rather than a ``data:`` URI."""
    return mime.startswith("text/") or mime.endswith(("+xml", "/xml", "/json"))


def media_payload(mime: str, data: str | bytes) -> dict[str, str]:
    """The ``{"mime", "data"}`` payload of a media item, validating *data*.

    Raises :class:`TypeError` for a binary type given as ``str`` and
    :class:`ValueError` when PNG/JPEG/GIF bytes lack their signature.
    """
    if not isinstance(mime, str) or "/" not in mime:
        raise ValueError(f"not a MIME type: {mime!r}")
    if is_text_mime(mime):
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8", "replace")
        if not isinstance(data, str):
            raise TypeError(f"{mime} content must be str or bytes, not {type(data).__name__}")
        return {"mime": mime, "data": data}
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{mime} content must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    signature = _SIGNATURES.get(mime)
    if signature is not None and not raw.startswith(signature):
        raise ValueError(f"the data is not {mime} (it does not start with {signature!r})")
    encoded = base64.b64encode(raw).decode("ascii")
    return {"mime": mime, "data": f"data:{mime};base64,{encoded}"}


def _emit(kind: str, payload: dict[str, Any]) -> None:
    if _sink is None:
        raise RuntimeError("bai.kernel.display works only in code run by a bai kernel")
    _sink(kind, payload)


def media(mime: str, data: str | bytes) -> None:
    """Show *data* of type *mime* in the console."""
    _emit("media", media_payload(mime, data))


def png(data: bytes) -> None:
    """Show a PNG image (the file's bytes)."""
    media("image/png", data)


def jpeg(data: bytes) -> None:
    """Show a JPEG image (the file's bytes)."""
    media("image/jpeg", data)


def svg(text: str | bytes) -> None:
    """Show an SVG image (the document's text)."""
    media("image/svg+xml", text)


def html(text: str) -> None:
    """Show a fragment of HTML (a table, formatted text) in the console."""
    if not isinstance(text, str):
        raise TypeError(f"HTML must be str, not {type(text).__name__}")
    _emit("html", {"html": text})
