"""The admin numbers as text, in the admin's language, from the catalog: status, stats, dead letters.

The bots pass the admin's language (Telegram's language_code, Discord's locale); the CLI passes
English. Kept out of backend.admin, which only gathers the numbers.
"""

from __future__ import annotations

import time

from backend.admin import QueueStatus, Stats
from backend.tasks import DeadLetter
from backend.texts import text


def format_status(status: QueueStatus, lang: str) -> str:
    """The status numbers as a few readable lines (`repairbot status`, /queue)."""
    lines = [
        text("admin_status_counts", lang, queued=status.queued, running=status.running, dead=status.dead),
        text(
            "admin_status_flow",
            lang,
            paused=text("admin_yes" if status.paused else "admin_no", lang),
            oldest=status.oldest_pending_s,
            avg=f"{status.avg_run_ms / 1000:.1f}",
            to_notify=status.to_notify,
        ),
    ]
    for platform, count in status.waiting_for_sender.items():
        lines.append(text("admin_status_waiting", lang, platform=platform, count=count))
    if status.workers:
        lines.append(text("admin_status_workers", lang))
        lines += [
            text("admin_status_worker", lang, name=w.name, pending=w.pending, idle=w.idle_s) for w in status.workers
        ]
    else:
        lines.append(text("admin_status_no_workers", lang))
    for c in status.comfyui:
        health = text("admin_up" if c.healthy else "admin_down", lang)
        lines.append(
            text(
                "admin_status_comfyui",
                lang,
                url=c.url,
                health=health,
                running=c.queue_running,
                waiting=c.queue_pending,
            )
        )
    return "\n".join(lines)


def format_dead_letters(letters: list[DeadLetter], lang: str) -> str:
    """The dead letters, one line each (`repairbot dlq list`, /dlq)."""
    if not letters:
        return text("admin_dlq_empty", lang)
    lines = []
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(letter.dead_at / 1000)) if letter.dead_at else "?"
        lines.append(
            text("admin_dlq_line", lang, task=letter.task_id or letter.entry_id, when=when, reason=letter.reason)
        )
    return "\n".join(lines)


def format_stats(stats: Stats, lang: str) -> str:
    """Throughput and run-time percentiles (`repairbot stats`, the /stats caption)."""
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
