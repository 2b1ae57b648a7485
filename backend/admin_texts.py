"""Admin answers in the admin's language, from the catalog: dead letters and the /stats caption."""

from __future__ import annotations

import time

from backend.admin import Stats
from backend.tasks import DeadLetter
from backend.texts import text


def dead_letter_lines(letters: list[DeadLetter], lang: str) -> str:
    """The dead letters, one line each."""
    lines = []
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(letter.dead_at / 1000)) if letter.dead_at else "?"
        lines.append(
            text("admin_dlq_line", lang, task=letter.task_id or letter.entry_id, when=when, reason=letter.reason)
        )
    return "\n".join(lines)


def stats_caption(stats: Stats, lang: str) -> str:
    return text(
        "admin_stats",
        lang,
        minutes=stats.window_s // 60,
        done=stats.completed,
        failed=stats.failed,
        cancelled=stats.cancelled,
        per_min=stats.throughput_per_min,
        p50=stats.p50_s,
        p90=stats.p90_s,
        p99=stats.p99_s,
    )
