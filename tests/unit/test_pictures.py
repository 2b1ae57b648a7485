"""The /stats chart and the labelled before/after picture are real pictures with what they promise."""

from __future__ import annotations

import io

from PIL import Image, ImageChops, ImageOps

from backend import images
from backend.admin import Stats
from backend.charts import CANCELLED, DONE, FAILED, series_from_log, stats_chart_png
from backend.compare import labelled_side_by_side
from backend.settings import REPO_ROOT

PHOTOS = REPO_ROOT / "tests" / "data" / "photos"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_the_chart_stacks_done_failed_and_cancelled_in_their_colours():
    entries = [
        (f"t{i}:{status}:{3000 + i * 100}", 60000 * (i % 10) + 5)
        for i, status in enumerate(["ok"] * 12 + ["failed"] * 3 + ["cancelled"] * 2)
    ]
    series = series_from_log(entries, start_ms=0, minutes=10)
    assert sum(series.done) == 12 and sum(series.failed) == 3 and sum(series.cancelled) == 2
    assert any(v is not None for v in series.p50) and all(a is None or b >= a for a, b in zip(series.p50, series.p90))
    chart = Image.open(io.BytesIO(stats_chart_png(Stats(600, 12, 3, 2, [], 1.7, 3.5, 4.0, 4.0), series, "en")))
    assert chart.size == (1200, 600)
    colours = {colour for _, colour in chart.convert("RGB").getcolors(1_000_000)}
    assert {_rgb(DONE), _rgb(FAILED), _rgb(CANCELLED)} <= colours


def tinted_png(gray: bytes) -> bytes:
    """A stand-in for a colorized result (the repository keeps no colorized photo): the photo tinted warm."""
    tinted = ImageOps.colorize(Image.open(io.BytesIO(gray)).convert("L"), black="#201008", white="#ffe8c0")
    buffer = io.BytesIO()
    tinted.save(buffer, "PNG")
    return buffer.getvalue()


def test_before_and_after_are_written_on_the_picture():
    before = (PHOTOS / "astronaut_gray.jpg").read_bytes()
    after = tinted_png(before)
    plain = Image.open(io.BytesIO(images.side_by_side(before, after, max_side=2560))).convert("RGB")
    labelled = Image.open(io.BytesIO(labelled_side_by_side(before, after, "en", max_side=2560))).convert("RGB")
    assert labelled.size == plain.size
    corner = (0, 0, plain.width // 4, plain.height // 6)
    after_corner = (plain.width // 2 + 4, 0, plain.width // 2 + plain.width // 4, plain.height // 6)
    for box in (corner, after_corner):
        difference = ImageChops.difference(plain.crop(box), labelled.crop(box)).getbbox()
        assert difference is not None, f"no label in {box}"
    bottom = (0, plain.height // 2, plain.width, plain.height)
    assert max(ImageChops.difference(plain.crop(bottom), labelled.crop(bottom)).convert("L").getextrema()) < 40
