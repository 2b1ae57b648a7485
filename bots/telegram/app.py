"""The Telegram bot in one place: build the Application, wire the handlers, run it.

`serve(settings, stop)` is what `repairbot telegram` (and `repairbot up`) run: long polling, or a
webhook with the secret-token header checked when TELEGRAM_WEBHOOK_URL is set. It runs inside an
already-running event loop, so it uses PTB's initialize/start/updater API rather than run_polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from telegram import BotCommand, BotCommandScopeChat
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from backend.services import Services
from backend.settings import Settings
from backend.texts import text
from bots.telegram import handlers
from bots.telegram.admin_handlers import ADMIN_COMMANDS
from bots.telegram.context import CONTEXT_TYPES
from bots.telegram.ratelimit import FloodAwareRateLimiter
from bots.telegram.sender import initialize_bot, upload_request

log = logging.getLogger(__name__)

PUBLIC_MENU = ("start", "help", "mode", "where", "cancel")
ADMIN_MENU = ("queue", "stats", "dlq", "retry", "purge_dlq", "pause", "resume", "mute_alerts")
NEW = filters.UpdateType.MESSAGE  # not edits (a fixed caption must not queue the photo again), not channel posts
OTHER_MEDIA = (
    filters.VIDEO | filters.ANIMATION | filters.AUDIO | filters.VOICE | filters.VIDEO_NOTE | filters.Sticker.ALL
)


def build_application(
    settings: Settings,
    services: Services,
    *,
    rate_limiter: FloodAwareRateLimiter | None = None,
    with_updater: bool = True,
) -> Application:
    """The Application with every handler; `services` reach the handlers as `context.services`
    (bots.telegram.context), and the album window runs on the Application's JobQueue."""
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.telegram_api_base)
        .base_file_url(settings.telegram_file_base)
        .request(upload_request())
        .rate_limiter(rate_limiter or FloodAwareRateLimiter())
        .context_types(CONTEXT_TYPES)
        .concurrent_updates(True)  # a slow download must not hold up other users (and albums need it)
    )
    if not with_updater:
        builder = builder.updater(None)
    app = builder.build()
    app.bot_data.services = services

    app.add_handler(CommandHandler("start", handlers.start, filters=NEW))
    app.add_handler(CommandHandler("help", handlers.help_command, filters=NEW))
    app.add_handler(CommandHandler("mode", handlers.mode_command, filters=NEW))
    app.add_handler(CommandHandler("cancel", handlers.cancel_command, filters=NEW))
    app.add_handler(CommandHandler(["where", "status"], handlers.where_command, filters=NEW))
    for name, command in ADMIN_COMMANDS.items():
        app.add_handler(CommandHandler(name, command, filters=NEW))
    app.add_handler(MessageHandler(NEW & (filters.PHOTO | filters.Document.ALL), handlers.on_image))
    app.add_handler(MessageHandler(NEW & OTHER_MEDIA, handlers.on_other_media))
    app.add_handler(MessageHandler(NEW & filters.TEXT & ~filters.COMMAND, handlers.on_text))
    app.add_handler(MessageHandler(NEW & filters.COMMAND, handlers.unknown_command))  # after every command
    app.add_handler(CallbackQueryHandler(handlers.on_button))
    app.add_error_handler(handlers.on_error)
    return app


def menu(commands: tuple[str, ...], lang: str) -> list[BotCommand]:
    """The command menu in `lang`, each command described by the catalog's `cmd_<name>`."""
    return [BotCommand(name, text(f"cmd_{name}", lang)) for name in commands]


@contextlib.asynccontextmanager
async def running(app: Application, settings: Settings) -> AsyncIterator[Application]:
    """Start the bot (webhook or long polling) and stop it cleanly on the way out."""
    await initialize_bot(app.initialize)
    try:
        await app.bot.set_my_commands(menu(PUBLIC_MENU, "en"))
        await app.bot.set_my_commands(menu(PUBLIC_MENU, "zh"), language_code="zh")
        for admin in settings.telegram_admin_ids:  # admins see their commands too, in their own chat only
            with contextlib.suppress(TelegramError):  # an admin who never opened the chat: no menu yet
                scope = BotCommandScopeChat(admin)
                await app.bot.set_my_commands(menu(PUBLIC_MENU + ADMIN_MENU, "en"), scope=scope)
                await app.bot.set_my_commands(menu(PUBLIC_MENU + ADMIN_MENU, "zh"), scope=scope, language_code="zh")
        if settings.telegram_webhook_url:
            await start_webhook(app, settings)
        else:
            await app.updater.start_polling(poll_interval=0, timeout=10, drop_pending_updates=False)
        await app.start()
        stop_announcing = asyncio.Event()
        announcer = asyncio.create_task(app.bot_data.services.positions.run(stop_announcing))
        try:
            yield app
        finally:
            stop_announcing.set()
            await announcer
            if app.updater.running:
                await app.updater.stop()
            await app.stop()  # handles the updates already fetched; drops jobs not yet run
            for window in (app.bot_data.albums, app.bot_data.bursts):
                await window.drain(app)
    finally:
        await app.shutdown()


async def start_webhook(app: Application, settings: Settings) -> None:
    """Listen for Telegram's POSTs; requests without the right secret-token header get 403."""
    secret = settings.telegram_webhook_secret.get_secret_value() if settings.telegram_webhook_secret else None
    if not secret:
        secret = secrets.token_urlsafe(32)  # Telegram repeats whatever setWebhook told it
        log.warning("TELEGRAM_WEBHOOK_SECRET is unset; using a random secret for this run")
    url = settings.telegram_webhook_url
    await app.updater.start_webhook(
        listen=settings.telegram_webhook_listen,
        port=settings.telegram_webhook_port,
        url_path=urlsplit(url).path.lstrip("/"),
        webhook_url=url,
        secret_token=secret,
    )


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the bot until `stop` is set (what `repairbot telegram` calls)."""
    services = Services.create(settings)
    try:
        app = build_application(settings, services)
        async with running(app, settings):
            log.info("telegram bot running (%s)", "webhook" if settings.telegram_webhook_url else "long polling")
            await stop.wait()
    finally:
        await services.close()
