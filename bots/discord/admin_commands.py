"""/repairbot queue|dlq|retry|purge|pause|resume|stats for the ids in DISCORD_ADMIN_IDS.

Discord hides the group from members without the administrator permission (default_member_permissions);
the id list is what actually decides, and anyone else who gets here is refused and logged. Answers are
ephemeral: queue numbers are not for the channel.
"""

from __future__ import annotations

import asyncio
import io
import logging

import discord
from discord import app_commands

from backend import alerts
from backend.admin_texts import format_dead_letters, format_stats, format_status
from backend.charts import stats_chart_png, stats_series
from backend.services import Services
from backend.texts import text
from bots.discord.messages import DEAD_RETRY_PREFIX
from bots.discord.replies import lang_of

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000


def block(body: str) -> str:
    """Monospace, cut to fit one Discord message."""
    return "```\n" + body[: MESSAGE_LIMIT - 8] + "\n```"


class AdminGroup(app_commands.Group):
    """The /repairbot group; every subcommand passes `interaction_check` first."""

    def __init__(self, services: Services):
        super().__init__(
            name="repairbot",
            description="Operate repairbot (admins only)",
            default_permissions=discord.Permissions(administrator=True),
        )
        self.services = services

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id in self.services.settings.discord_admin_ids:
            return True
        command = interaction.command.qualified_name if interaction.command else "?"
        log.warning("discord:%s (%s) tried /%s and was refused", interaction.user.id, interaction.user, command)
        await interaction.response.send_message(text("not_allowed", lang_of(interaction)), ephemeral=True)
        return False

    async def answer(self, interaction: discord.Interaction, content: str, **kw: object) -> None:
        """Answer at once, or as a follow-up when the command deferred because it may take a while."""
        if interaction.response.is_done():
            await interaction.followup.send(content, ephemeral=True, **kw)
        else:
            await interaction.response.send_message(content, ephemeral=True, **kw)

    @app_commands.command(description="Queue, workers and ComfyUI at a glance")
    async def queue(self, interaction: discord.Interaction) -> None:
        # Probing a slow or unreachable ComfyUI may outlast Discord's 3 s window to acknowledge.
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.answer(interaction, block(format_status(await self.services.admin.status(), lang_of(interaction))))

    @app_commands.command(description="The latest dead letters")
    async def dlq(self, interaction: discord.Interaction) -> None:
        letters = await self.services.admin.dead_letters(limit=10)
        if not letters:
            await self.answer(interaction, text("admin_dlq_empty", lang_of(interaction)))
            return
        lang = lang_of(interaction)
        view = discord.ui.View(timeout=None)
        for letter in letters[:25]:
            if letter.task_id:
                view.add_item(
                    discord.ui.Button(
                        label=text("admin_dlq_retry", lang, task=letter.task_id[:8]),
                        style=discord.ButtonStyle.secondary,
                        custom_id=f"{DEAD_RETRY_PREFIX}{letter.task_id}"[:100],
                    )
                )
        await self.answer(interaction, block(format_dead_letters(letters, lang)), view=view)

    @app_commands.command(description="Queue a dead task again")
    @app_commands.describe(task="Task id or dead-letter entry id")
    async def retry(self, interaction: discord.Interaction, task: str) -> None:
        outcome = await self.services.admin.retry_dead(task.strip())
        lang = lang_of(interaction)
        if outcome.ok:
            await self.answer(interaction, text("admin_retried", lang, task_id=outcome.task_id))
        else:
            await self.answer(interaction, text("admin_retry_missing", lang, task_id=task.strip()))

    @app_commands.command(description="Delete every dead letter")
    async def purge(self, interaction: discord.Interaction) -> None:
        count = await self.services.admin.purge_dead()
        await self.answer(interaction, text("admin_purged", lang_of(interaction), count=count))

    @app_commands.command(description="Stop starting new tasks")
    async def pause(self, interaction: discord.Interaction) -> None:
        await self.services.admin.pause()
        log.warning("discord:%s paused the queue", interaction.user.id)
        await self.answer(interaction, text("admin_paused", lang_of(interaction)))

    @app_commands.command(description="Start tasks again")
    async def resume(self, interaction: discord.Interaction) -> None:
        await self.services.admin.resume()
        log.warning("discord:%s resumed the queue", interaction.user.id)
        await self.answer(interaction, text("admin_resumed", lang_of(interaction)))

    @app_commands.command(description="Throughput and run times of the last hour, with a chart")
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the chart takes a moment
        numbers = await self.services.admin.stats()
        series = await stats_series(self.services.redis, 3600)
        chart = await asyncio.to_thread(stats_chart_png, numbers, series, lang_of(interaction))
        await self.answer(
            interaction,
            block(format_stats(numbers, lang_of(interaction))),
            file=discord.File(io.BytesIO(chart), filename="stats.png"),
        )

    @app_commands.command(name="mute_alerts", description="Silence the operations alerts for some minutes (0 lifts)")
    @app_commands.describe(minutes="How long to stay quiet; 0 turns alerts on again")
    async def mute_alerts(self, interaction: discord.Interaction, minutes: app_commands.Range[int, 0, 10080]) -> None:
        await alerts.mute(self.services.redis, minutes)
        lang = lang_of(interaction)
        await self.answer(
            interaction, text("admin_muted", lang, minutes=minutes) if minutes else text("admin_unmuted", lang)
        )


def add_admin_commands(tree: app_commands.CommandTree, services: Services) -> None:
    tree.add_command(AdminGroup(services))
