"""The Discord bot in one place: the client, its command tree, and `serve` for `repairbot discord|up`.

Reading this file tells you the whole bot: /colorize and the "Colorize photo" menu (commands.py),
/repairbot for admins (admin_commands.py), the buttons (buttons.py: DynamicItems that discord.py
routes by their custom_id's template, so they work after a restart), commands synced at start-up
only when they changed (sync.py).
Results are delivered by the notifier through sender.py, not by this process's gateway connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import discord
from discord import app_commands

from backend import alerts
from backend.services import Services
from backend.settings import Settings
from backend.texts import text
from bots.discord.admin_commands import add_admin_commands
from bots.discord.buttons import BUTTONS
from bots.discord.commands import add_photo_commands
from bots.discord.endpoints import bot_token, point_at
from bots.discord.replies import lang_of
from bots.discord.sync import sync_if_changed
from bots.discord.translations import CatalogTranslator

log = logging.getLogger(__name__)

# We keep no guild cache, so there is nothing to wait for before READY counts.
GUILD_READY_TIMEOUT_S = 0.5

# The bot never joins voice: don't warn operators at every start that voice libraries are missing.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class RepairBot(discord.Client):
    """A discord.Client with the app-command tree; everything it does goes through `services`."""

    def __init__(self, services: Services, *, guild_ready_timeout: float = GUILD_READY_TIMEOUT_S):
        super().__init__(intents=discord.Intents(guilds=True), guild_ready_timeout=guild_ready_timeout)
        self.services = services
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self.on_command_error
        self.command_errors: deque[BaseException] = deque(maxlen=50)  # the latest, for tests and debugging
        add_photo_commands(self.tree, services)
        add_admin_commands(self.tree, services)
        self.add_dynamic_items(*BUTTONS)

    async def setup_hook(self) -> None:
        settings = self.services.settings
        self._stop_announcing = asyncio.Event()
        self._announcer = asyncio.create_task(self.services.positions.run(self._stop_announcing))
        await self.tree.set_translator(CatalogTranslator())
        await sync_if_changed(
            self.tree,
            self.services.redis,
            application_id=self.application_id or 0,
            guild_ids=settings.discord_guild_ids,
        )

    async def close(self) -> None:
        """Stop refreshing waiting photos' places, then close the connection."""
        if getattr(self, "_announcer", None) is not None:
            self._stop_announcing.set()
            await self._announcer
            self._announcer = None
        await super().close()

    async def on_ready(self) -> None:
        log.info("Discord bot ready as %s", self.user)

    async def on_command_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        """Log it and tell the user something went wrong; a refused admin check has already answered."""
        if isinstance(error, app_commands.CheckFailure):
            return
        self.command_errors.append(error)
        log.error("Discord interaction %s failed", interaction.data, exc_info=error)
        await alerts.report_bot_error(self.services.redis, "discord", error)
        sentence = text("error_generic", lang_of(interaction))
        try:
            if interaction.response.is_done():
                await interaction.followup.send(sentence, ephemeral=True)
            else:
                await interaction.response.send_message(sentence, ephemeral=True)
        except discord.HTTPException as exc:
            log.info("could not tell the user about the failure: %s", exc)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run the bot until `stop` is set (the CLI sets it on SIGINT/SIGTERM), then close cleanly."""
    token = bot_token(settings)
    point_at(settings)
    services = Services.create(settings)
    try:
        await run_until_stopped(RepairBot(services), token, stop)
    finally:
        await services.close()


async def run_until_stopped(client: discord.Client, token: str, stop: asyncio.Event) -> None:
    runner = asyncio.create_task(client.start(token))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not runner.done() and client.ws is not None:
            # discord.py fails with a traceback when closed while it is still delaying READY
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(client.wait_until_ready(), timeout=GUILD_READY_TIMEOUT_S + 2)
        await client.close()
        await runner  # start() failing (bad token, no network) surfaces here
