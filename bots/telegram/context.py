"""The typed context every Telegram handler and job gets (PTB's ContextTypes): the bot's shared parts
are attributes of `context`, not string keys in bot_data."""

from __future__ import annotations

import asyncio
from typing import Any

from telegram.ext import CallbackContext, ContextTypes, ExtBot

from backend.services import Services
from bots.telegram.albums import AlbumWindow

BURST_WINDOW_S = 0.6  # photos sent one by one within this moment share one status
MAX_PARALLEL_DOWNLOADS = 8  # photos of up to 20 MB each: bounded, so a burst can't exhaust memory


class BotData:
    """What the handlers share, one per Application (PTB's bot_data, typed); `services` is set by
    build_application before any update is handled."""

    services: Services

    def __init__(self) -> None:
        self.albums = AlbumWindow()
        self.bursts = AlbumWindow(BURST_WINDOW_S)
        self.downloads = asyncio.Semaphore(MAX_PARALLEL_DOWNLOADS)


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotData]):
    """CallbackContext with the bot's parts as typed properties."""

    @property
    def services(self) -> Services:
        return self.bot_data.services

    @property
    def downloads(self) -> asyncio.Semaphore:
        return self.bot_data.downloads

    @property
    def albums(self) -> AlbumWindow:
        return self.bot_data.albums

    @property
    def bursts(self) -> AlbumWindow:
        return self.bot_data.bursts


CONTEXT_TYPES = ContextTypes(context=BotContext, bot_data=BotData)
