"""Telegram's sendPhoto limits, as bots/telegram/photos.py reads them from an image's header: 10 MB,
width + height at most 10000, a side ratio of at most 20; unreadable data is no photo."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from bots.telegram.photos import PHOTO_MAX_BYTES, photo_ok, would_be_compressed

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but carries no pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding any pixel fails the test: the limits are read from the header."""

    def forbidden(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", forbidden)
    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


def test_photo_size_boundary():
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buffer, "PNG")
    data = buffer.getvalue()
    assert photo_ok(data + bytes(PHOTO_MAX_BYTES - len(data)))  # trailing bytes after IEND are ignored
    assert not photo_ok(data + bytes(PHOTO_MAX_BYTES + 1 - len(data)))


@pytest.mark.parametrize(
    ("width", "height", "ok"),
    [
        (5000, 5000, True),
        (5000, 5001, False),
        (9500, 500, True),  # sum 10000, ratio 19
        (2000, 100, True),  # ratio exactly 20
        (2001, 100, False),
        (100, 2001, False),
    ],
)
def test_photo_dimension_boundaries(width: int, height: int, ok: bool, no_decoding: None):
    assert photo_ok(png_header_only(width, height)) is ok


@pytest.mark.parametrize("data", [b"", b"not an image", png_header_only(30000, 30000)])
def test_unreadable_data_is_no_photo(data: bytes):
    assert photo_ok(data) is False


def test_compressed_above_telegrams_photo_side(no_decoding: None):
    assert not would_be_compressed(png_header_only(2560, 1000))
    assert would_be_compressed(png_header_only(2561, 1000))
    assert would_be_compressed(b"not an image")
