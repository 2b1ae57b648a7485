"""Images over the pixel limit are shrunk to it (with a note for the user) rather than refused, up to
a hard ceiling (MAX_IMAGE_PIXELS_CEILING) past which decoding them would cost too much: refused,
with the image's size in the sentence.

Only the header is read to decide; a JPEG is decoded at a reduced scale (Pillow's draft mode), so a
large photo never needs its full size in memory.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from backend.errors import Refused


@dataclass(frozen=True)
class Shrunk:
    data: bytes
    original: tuple[int, int]
    size: tuple[int, int]

    def note_values(self) -> dict[str, object]:
        w, h = self.original
        return {
            "width": w,
            "height": h,
            "mp": round(w * h / 1e6, 1),
            "new_width": self.size[0],
            "new_height": self.size[1],
            "new_mp": round(self.size[0] * self.size[1] / 1e6, 1),
        }


def _header_size(data: bytes) -> tuple[int, int] | None:
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # a header read decodes nothing; the ceiling below decides
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - not an image we can read: intake says which refusal it is
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def shrink_to_limit(data: bytes, *, max_pixels: int, ceiling_pixels: int) -> Shrunk | None:
    """None when the image is within the limit (or unreadable: intake refuses it precisely); a copy
    shrunk to the limit when it is over it; Refused("too_many_pixels_ceiling") past the ceiling."""
    size = _header_size(data)
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    width, height = size
    if width * height > ceiling_pixels:
        raise Refused(
            "too_many_pixels_ceiling",
            detail=f"{width}x{height}",
            width=width,
            height=height,
            mp=round(width * height / 1e6, 1),
            max_mp=max(1, ceiling_pixels // 1_000_000),
        )
    scale = math.sqrt(max_pixels / (width * height))
    target = (max(1, int(width * scale)), max(1, int(height * scale)))
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # within our own ceiling, checked above
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", target)  # JPEG: decode at a reduced scale already
            rgb = image.convert("RGB")
            rgb.thumbnail(target, Image.Resampling.LANCZOS)
            out = io.BytesIO()
            rgb.save(out, "PNG")
            return Shrunk(out.getvalue(), size, rgb.size)
    except Exception as exc:  # noqa: BLE001 - a damaged big file: intake gives the precise refusal
        raise Refused("image_broken", detail=f"{type(exc).__name__}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved
