"""The display helper user code calls to put images and HTML in the console."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from bai.kernel import display

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture
def shown() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    items: list[tuple[str, dict[str, Any]]] = []
    display.install_sink(lambda kind, payload: items.append((kind, payload)))
    yield items
    display.install_sink(None)


def test_png_becomes_a_data_uri_media_item(shown: list[tuple[str, dict[str, Any]]]) -> None:
    display.png(PNG)
    ((kind, payload),) = shown
    assert kind == "media"
    assert payload["mime"] == "image/png"
    prefix = "data:image/png;base64,"
    assert payload["data"].startswith(prefix)
    assert base64.b64decode(payload["data"][len(prefix) :]) == PNG


def test_svg_and_html_travel_as_text(shown: list[tuple[str, dict[str, Any]]]) -> None:
    display.svg(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    display.html("<table><tr><td>1</td></tr></table>")
    display.media("text/plain", "plain")
    assert shown == [
        ("media", {"mime": "image/svg+xml", "data": "<svg xmlns='http://www.w3.org/2000/svg'/>"}),
        ("html", {"html": "<table><tr><td>1</td></tr></table>"}),
        ("media", {"mime": "text/plain", "data": "plain"}),
    ]


def test_bad_content_is_refused_before_anything_is_shown(
    shown: list[tuple[str, dict[str, Any]]],
) -> None:
    with pytest.raises(ValueError, match="not image/png"):
        display.png(b"GIF89a...")
    with pytest.raises(ValueError, match="not image/jpeg"):
        display.jpeg(PNG)
    with pytest.raises(TypeError, match="must be bytes"):
        display.png("iVBORw0KGgo=")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="HTML must be str"):
        display.html(b"<b>")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a MIME type"):
        display.media("png", PNG)
    assert shown == []


def test_outside_a_kernel_display_says_so() -> None:
    with pytest.raises(RuntimeError, match="only in code run by a bai kernel"):
        display.svg("<svg/>")
