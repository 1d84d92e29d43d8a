"""pwrite_all: gathered pieces written whole at an offset, whatever their number and kind."""

from __future__ import annotations

import os
from pathlib import Path

from bai.common.fileio import pwrite_all


def test_pieces_land_at_the_offset_in_order(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"=" * 10)
    pieces: list[bytes | bytearray | memoryview] = []
    for n in range(3000):  # more than IOV_MAX (1024): written in groups
        piece = os.urandom(n % 7)  # empty pieces too
        pieces.append(
            piece if n % 3 == 0 else bytearray(piece) if n % 3 == 1 else memoryview(piece)
        )
    expected = b"".join(bytes(piece) for piece in pieces)
    fd = os.open(path, os.O_WRONLY)
    try:
        assert pwrite_all(fd, pieces, 4) == len(expected)
        assert pwrite_all(fd, [], 0) == 0
    finally:
        os.close(fd)
    assert path.read_bytes() == b"====" + expected
