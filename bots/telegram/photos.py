"""What Telegram does to a photo: when the result must also go as a file to keep its full resolution."""

from __future__ import annotations

import io

from PIL import Image

PHOTO_MAX_SIDE = 2560  # Telegram re-encodes a sent photo to at most this many pixels on its long side


def would_be_compressed(data: bytes) -> bool:
    """True when Telegram would shrink this picture as a photo (read from the header, no decoding)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return max(image.size) > PHOTO_MAX_SIDE
    except Exception:  # noqa: BLE001 - unreadable here means it goes as a file anyway
        return True
