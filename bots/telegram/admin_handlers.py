"""Admin commands in chat: the same numbers and actions as `repairbot status` and friends.

Only ids in TELEGRAM_ADMIN_IDS may use them; anyone else gets "not allowed" and the attempt is
logged with the user id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from backend import alerts
from backend.admin_texts import format_dead_letters, format_stats, format_status
from backend.charts import stats_chart_png, stats_series
from backend.texts import text
from bots.telegram.context import BotContext
from bots.telegram.handlers import asker_of, retire
from bots.telegram.keyboards import dead_retry_data, parse

log = logging.getLogger(__name__)

Handler = Callable[[Update, BotContext], Awaitable[None]]


def admin_only(handler: Handler) -> Handler:
    """Run `handler` for admins; refuse (and log) everyone else."""

    @functools.wraps(handler)
    async def guarded(update: Update, context: BotContext) -> None:
        asker = asker_of(update, context)
        if not asker.exempt:
            command = (update.effective_message.text or "").split()[0] if update.effective_message else "?"
            log.warning("refused admin command %s from %s", command, asker.user)
            await update.effective_message.reply_text(text("not_allowed", asker.lang))
            return
        await handler(update, context)

    return guarded


async def _say(update: Update, message: str) -> None:
    await update.effective_message.reply_text(message)


@admin_only
async def queue_command(update: Update, context: BotContext) -> None:
    """Queue, running, dead letters, workers: the status numbers."""
    lang = asker_of(update, context).lang
    await _say(update, format_status(await context.services.admin.status(), lang))


@admin_only
async def dlq_command(update: Update, context: BotContext) -> None:
    """The latest dead letters with their reasons."""
    letters = await context.services.admin.dead_letters(limit=10)
    lang = asker_of(update, context).lang
    if not letters:
        await _say(update, text("admin_dlq_empty", lang))
        return
    await update.effective_message.reply_text(
        format_dead_letters(letters, lang), reply_markup=dlq_markup(letters, lang)
    )


@admin_only
async def retry_command(update: Update, context: BotContext) -> None:
    """`/retry <task_id>` puts a dead task back in line."""
    lang = asker_of(update, context).lang
    if not context.args:
        await _say(update, text("admin_retry_usage", lang))
        return
    outcome = await context.services.admin.retry_dead(context.args[0])
    if outcome.ok:
        await _say(update, text("admin_retried", lang, task_id=outcome.task_id))
    else:
        await _say(update, text("admin_retry_missing", lang, task_id=context.args[0]))


@admin_only
async def purge_dlq_command(update: Update, context: BotContext) -> None:
    """Drops every dead letter."""
    count = await context.services.admin.purge_dead()
    await _say(update, text("admin_purged", asker_of(update, context).lang, count=count))


@admin_only
async def pause_command(update: Update, context: BotContext) -> None:
    """Stops new photos from being accepted and started."""
    await context.services.admin.pause()
    await _say(update, text("admin_paused", asker_of(update, context).lang))


@admin_only
async def resume_command(update: Update, context: BotContext) -> None:
    await context.services.admin.resume()
    await _say(update, text("admin_resumed", asker_of(update, context).lang))


@admin_only
async def stats_command(update: Update, context: BotContext) -> None:
    """Throughput and run-time percentiles over the last hour, as text and a small chart."""
    services = context.services
    stats = await services.admin.stats(window_s=3600)
    series = await stats_series(services.redis, 3600)
    chart = await asyncio.to_thread(stats_chart_png, stats, series, asker_of(update, context).lang)
    await update.effective_message.reply_photo(chart, caption=format_stats(stats, asker_of(update, context).lang))


@admin_only
async def mute_alerts_command(update: Update, context: BotContext) -> None:
    """Silence the operations alerts for N minutes (`/mute_alerts 60`; 0 lifts the mute)."""
    args = context.args or []
    lang = asker_of(update, context).lang
    if len(args) != 1 or not args[0].isdigit():
        await _say(update, text("admin_mute_usage", lang))
        return
    minutes = int(args[0])
    await alerts.mute(context.services.redis, minutes)
    await _say(update, text("admin_muted", lang, minutes=minutes) if minutes else text("admin_unmuted", lang))


def dlq_markup(letters: list, lang: str) -> InlineKeyboardMarkup | None:
    """A Retry button per dead letter whose task id fits a button."""
    rows = [
        [
            InlineKeyboardButton(
                text("admin_dlq_retry", lang, task=letter.task_id[:8]), callback_data=dead_retry_data(letter.task_id)
            )
        ]
        for letter in letters
        if letter.task_id and dead_retry_data(letter.task_id)
    ]
    return InlineKeyboardMarkup(rows) if rows else None


async def dead_retry_pressed(query, asker, services) -> None:
    """A dead letter's Retry button: admins only; the button goes once it has done its job (or when
    that dead letter is gone), the others of the list stay."""
    if not asker.exempt:
        await query.answer(text("not_allowed", asker.lang))
        return
    button = parse(query.data or "")
    outcome = await services.admin.retry_dead(button.task_id)
    key = "admin_retried" if outcome.ok else "admin_retry_missing"
    await query.answer(text(key, asker.lang, task_id=button.task_id))
    await retire(query)


ADMIN_COMMANDS: dict[str, Handler] = {
    "queue": queue_command,
    "dlq": dlq_command,
    "retry": retry_command,
    "purge_dlq": purge_dlq_command,
    "pause": pause_command,
    "resume": resume_command,
    "stats": stats_command,
    "mute_alerts": mute_alerts_command,
}
