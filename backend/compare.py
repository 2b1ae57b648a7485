"""Before/after pictures with "Before" and "After" written on them, as large as the platform allows.

The pair itself is images.side_by_side; the labels are drawn here, on a dark band in each half's
top corner, in the user's language when a font for it is installed (English otherwise).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from backend import images
from backend.texts import text

CJK_FONTS = ("NotoSansCJK-Regular.ttc", "NotoSansSC-Regular.otf", "wqy-zenhei.ttc", "SourceHanSansSC-Regular.otf")


def _font(size: int, lang: str) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, str]:
    """A font of `size` px that can write `lang`, and the language it can write."""
    if lang == "zh":
        for root in (Path("/usr/share/fonts"), Path("/usr/local/share/fonts")):
            for name in CJK_FONTS:
                for path in root.rglob(name) if root.exists() else ():
                    return ImageFont.truetype(str(path), size), "zh"
    try:
        from matplotlib import font_manager  # ships DejaVu Sans, a clean scalable font

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size), "en"
    except Exception:  # noqa: BLE001 - no matplotlib or font: Pillow's own scalable default
        return ImageFont.load_default(size=size), "en"


def labelled_side_by_side(before: bytes, after: bytes, lang: str = "en", *, max_side: int = 2560) -> bytes:
    """Before and after side by side (no larger than `max_side`), each half labelled on the picture."""
    pair = images.side_by_side(before, after, max_side=max_side)
    with Image.open(io.BytesIO(pair)) as opened:
        picture = opened.convert("RGB")
    width, height = picture.size
    size = max(14, min(width, height) // 18)
    font, lang = _font(size, lang)
    draw = ImageDraw.Draw(picture, "RGBA")
    pad = max(6, size // 3)
    with Image.open(io.BytesIO(before)) as original:  # where the after half starts: the before's width
        half = min(width - 1, round(height * original.width / max(1, original.height)) + images.COMPARE_GAP)
    for x, key in ((0, "compare_before"), (half, "compare_after")):
        label = text(key, lang)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        box = (x + pad, pad, x + pad + (right - left) + 2 * pad, pad + (bottom - top) + 2 * pad)
        draw.rounded_rectangle(box, radius=pad, fill=(0, 0, 0, 150))
        draw.text((box[0] + pad - left, box[1] + pad - top), label, font=font, fill=(255, 255, 255, 255))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=92, optimize=True)
    return out.getvalue()
