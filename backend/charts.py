"""The admins' /stats chart: the last hour, minute by minute, drawn with matplotlib.

Done, failed and cancelled photos are stacked bars in their own colours, so failures stand out;
the run-time median and 90th percentile of each minute are lines on a second axis. Texts come
from the catalog, in the admin's language when a font for it is installed (English otherwise).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from backend import keys
from backend.tasks import now_ms
from backend.texts import text

if TYPE_CHECKING:
    from backend.admin import Stats

DONE, FAILED, CANCELLED = "#2e9d5b", "#d64541", "#9aa0a6"
P50, P90 = "#1f5fbf", "#e08a00"


@dataclass
class Series:
    """Per minute, oldest first: finished photos by status and run-time percentiles (s, None if none)."""

    minutes: int
    done: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    p50: list[float | None] = field(default_factory=list)
    p90: list[float | None] = field(default_factory=list)


def _percentile(values: list[int], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank] / 1000.0


def series_from_log(entries: list[tuple[Any, float]], *, start_ms: int, minutes: int) -> Series:
    """Bucket the done log's `task:status:run_ms` members (scored by finish time) into minutes."""
    counts = {status: [0] * minutes for status in ("ok", "failed", "cancelled")}
    runs: list[list[int]] = [[] for _ in range(minutes)]
    for member, score in entries:
        raw = member.decode() if isinstance(member, bytes) else str(member)
        _, status, run_ms = raw.rsplit(":", 2)
        index = min(minutes - 1, max(0, int((score - start_ms) // 60000)))
        counts.setdefault(status, [0] * minutes)[index] += 1
        if status == "ok":
            runs[index].append(int(run_ms))
    return Series(
        minutes,
        counts["ok"],
        counts["failed"],
        counts["cancelled"],
        [_percentile(r, 50) for r in runs],
        [_percentile(r, 90) for r in runs],
    )


async def stats_series(redis: Redis, window_s: int = 3600) -> Series:
    now = now_ms()
    start = now - window_s * 1000
    entries = await redis.zrangebyscore(keys.DONE_LOG, start, "+inf", withscores=True)
    return series_from_log(entries, start_ms=start, minutes=max(1, window_s // 60))


def _font_for(lang: str) -> tuple[str, list[str]]:
    """The language to draw in and matplotlib font families that can show it."""
    if lang != "zh":
        return "en", ["DejaVu Sans"]
    from matplotlib import font_manager

    for family in ("Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "Source Han Sans SC", "SimHei"):
        try:
            font_manager.findfont(family, fallback_to_default=False)
            return "zh", [family, "DejaVu Sans"]
        except ValueError:
            continue
    return "en", ["DejaVu Sans"]


def stats_chart_png(stats: Stats, series: Series | None = None, lang: str = "en") -> bytes:
    """A 1200×600 PNG: stacked per-minute bars by status, p50/p90 run-time lines, legend and axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if series is None:  # only totals known: one bar per minute of everything finished
        per_minute = list(stats.per_minute or [0])
        series = Series(
            len(per_minute),
            per_minute,
            [0] * len(per_minute),
            [0] * len(per_minute),
            [None] * len(per_minute),
            [None] * len(per_minute),
        )
    lang, families = _font_for(lang)
    minutes = series.minutes
    x = [i - minutes + 1 for i in range(minutes)]  # minutes ago, now at 0
    with plt.rc_context(
        {"font.family": families, "font.size": 13, "axes.titlesize": 17, "axes.labelsize": 14, "legend.fontsize": 12}
    ):
        figure, bars = plt.subplots(figsize=(12, 6), dpi=100)
        bars.bar(x, series.done, width=0.85, color=DONE, label=text("chart_done", lang))
        bars.bar(x, series.failed, width=0.85, bottom=series.done, color=FAILED, label=text("chart_failed", lang))
        stacked = [d + f for d, f in zip(series.done, series.failed)]
        bars.bar(x, series.cancelled, width=0.85, bottom=stacked, color=CANCELLED, label=text("chart_cancelled", lang))
        bars.set_xlabel(text("chart_x", lang))
        bars.set_ylabel(text("chart_y", lang))
        bars.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        peak = max((s + c for s, c in zip(stacked, series.cancelled)), default=0)
        bars.set_ylim(0, max(1, peak) * 1.3)  # room for the legend
        bars.set_xlim(x[0] - 0.5, 0.5)
        bars.grid(axis="y", color="#e6e6e6")
        bars.set_axisbelow(True)
        times = bars.twinx()
        times.plot(
            x,
            [v if v is not None else float("nan") for v in series.p50],
            color=P50,
            linewidth=2.2,
            marker="o",
            markersize=3,
            label=text("chart_p50", lang),
        )
        times.plot(
            x,
            [v if v is not None else float("nan") for v in series.p90],
            color=P90,
            linewidth=2.2,
            linestyle="--",
            marker="o",
            markersize=3,
            label=text("chart_p90", lang),
        )
        times.set_ylabel(text("chart_run_time", lang))
        slowest = max((v for v in series.p90 if v is not None), default=0)
        times.set_ylim(0, max(1.0, slowest) * 1.35)
        bars.set_title(
            text(
                "chart_title",
                lang,
                minutes=minutes,
                done=stats.completed,
                failed=stats.failed,
                cancelled=stats.cancelled,
                p50=stats.p50_s,
                p90=stats.p90_s,
            )
        )
        handles, labels = bars.get_legend_handles_labels()
        more_handles, more_labels = times.get_legend_handles_labels()
        bars.legend(handles + more_handles, labels + more_labels, loc="upper left", ncol=5, frameon=False)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
    return buffer.getvalue()
