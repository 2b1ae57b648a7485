"""A small PNG chart of the last hour for the admins' /stats: photos finished per minute."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 280
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 16, 36, 30
BAR = (66, 133, 244)
AXIS = (90, 90, 90)
GRID = (225, 225, 225)


def stats_chart_png(stats: dict[str, Any]) -> bytes:
    """Bars of per-minute completions, the run-time percentiles in the title."""
    counts: list[int] = list(stats.get("per_minute") or [0])
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    title = (
        f"Last {max(1, stats.get('window_s', 3600) // 60)} min: {stats.get('completed', 0)} done, "
        f"{stats.get('failed', 0)} failed   p50 {stats.get('p50_s', 0)} s  p90 {stats.get('p90_s', 0)} s"
    )
    draw.text((MARGIN_LEFT, 10), title, fill=AXIS, font=font)
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM
    peak = max(max(counts), 1)
    for step in range(5):
        y = bottom - (bottom - top) * step / 4
        draw.line([(left, y), (right, y)], fill=GRID)
        draw.text((4, y - 6), f"{peak * step / 4:.0f}", fill=AXIS, font=font)
    width = (right - left) / len(counts)
    for index, count in enumerate(counts):
        if count:
            x0 = left + index * width
            y0 = bottom - (bottom - top) * count / peak
            draw.rectangle([x0 + 1, y0, x0 + max(width - 1, 1), bottom], fill=BAR)
    draw.line([(left, bottom), (right, bottom)], fill=AXIS)
    draw.line([(left, top), (left, bottom)], fill=AXIS)
    draw.text((left, bottom + 8), f"-{len(counts)} min", fill=AXIS, font=font)
    draw.text((right - 24, bottom + 8), "now", fill=AXIS, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
