"""What Telegram does to a photo: whether sendPhoto takes it, and when the result must also go as a
file to keep its full resolution. Telegram's limits, so they live here and not in the backend."""

from __future__ import annotations

import io

from PIL import Image

from backend.images import ALLOWED_FORMATS

PHOTO_MAX_SIDE = 2560  # Telegram re-encodes a sent photo to at most this many pixels on its long side
# sendPhoto: "at most 10 MB", "width and height must not exceed 10000 in total",
# "width and height ratio must be at most 20". 10 MB read as decimal: the conservative reading.
PHOTO_MAX_BYTES = 10_000_000
PHOTO_MAX_SIDES_SUM = 10_000
PHOTO_MAX_RATIO = 20


def photo_ok(data: bytes) -> bool:
    """Whether sendPhoto takes these bytes as they are (else send a document or shrink); read from the
    header, no decoding."""
    if not data or len(data) > PHOTO_MAX_BYTES:
        return False
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - unreadable or a bomb: not a photo Telegram would take either
        return False
    if width < 1 or height < 1:
        return False
    return width + height <= PHOTO_MAX_SIDES_SUM and max(width, height) <= PHOTO_MAX_RATIO * min(width, height)


def would_be_compressed(data: bytes) -> bool:
    """True when Telegram would shrink this picture as a photo (read from the header, no decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return max(image.size) > PHOTO_MAX_SIDE
    except Exception:  # noqa: BLE001 - unreadable here means it goes as a file anyway
        return True
