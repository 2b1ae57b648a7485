"""/repairbot queue|dlq|retry|purge|pause|resume|stats|mute_alerts for the ids in DISCORD_ADMIN_IDS.

Organised as the photo commands are (commands.py): `add_admin_commands(tree, services)` registers
handlers that close over the services, here under one app_commands.Group. Discord hides the group
from members without the administrator permission (default_member_permissions); the id list is what
actually decides: every subcommand carries the `admins_only` check, and anyone else who gets here is
refused and logged. Answers are ephemeral (queue numbers are not for the channel) and in the admin's
language; descriptions come from the catalog, in Chinese for Chinese clients.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands

from backend import alerts
from backend.admin_texts import format_dead_letters, format_stats, format_status
from backend.charts import stats_chart_png, stats_series
from backend.services import Services
from backend.texts import CATALOG, text
from bots.discord.messages import DEAD_RETRY_PREFIX
from bots.discord.replies import lang_of
from bots.discord.translations import localized

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000


def block(body: str) -> str:
    """Monospace, cut to fit one Discord message."""
    return "```\n" + body[: MESSAGE_LIMIT - 8] + "\n```"


def described(key: str) -> app_commands.locale_str:
    """A description from the catalog: English by default, the catalog's Chinese for Chinese clients."""
    return localized(CATALOG["en"][key], key)


async def answer(interaction: discord.Interaction, content: str, **kw: Any) -> None:
    """Answer at once, or as a follow-up when the command deferred because it may take a while."""
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=True, **kw)
    else:
        await interaction.response.send_message(content, ephemeral=True, **kw)


def add_admin_commands(tree: app_commands.CommandTree, services: Services) -> None:
    group = app_commands.Group(
        name="repairbot",
        description=described("cmd_admin"),
        default_permissions=discord.Permissions(administrator=True),
    )

    async def admins_only(interaction: discord.Interaction) -> bool:
        if interaction.user.id in services.settings.discord_admin_ids:
            return True
        command = interaction.command.qualified_name if interaction.command else "?"
        log.warning("discord:%s (%s) tried /%s and was refused", interaction.user.id, interaction.user, command)
        await interaction.response.send_message(text("not_allowed", lang_of(interaction)), ephemeral=True)
        return False

    def admin(name: str, **kw: Any) -> Callable[[Any], Any]:
        """`@admin("queue")`: a subcommand of /repairbot, described by the catalog's `cmd_<name>`, admins only."""

        def register(handler: Any) -> Any:
            checked = app_commands.check(admins_only)(handler)
            return group.command(name=name, description=described(f"cmd_{name}"), **kw)(checked)

        return register

    @admin("queue")
    async def queue(interaction: discord.Interaction) -> None:
        # Probing a slow or unreachable ComfyUI may outlast Discord's 3 s window to acknowledge.
        await interaction.response.defer(ephemeral=True, thinking=True)
        await answer(interaction, block(format_status(await services.admin.status(), lang_of(interaction))))

    @admin("dlq")
    async def dlq(interaction: discord.Interaction) -> None:
        letters = await services.admin.dead_letters(limit=10)
        lang = lang_of(interaction)
        if not letters:
            await answer(interaction, text("admin_dlq_empty", lang))
            return
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
        await answer(interaction, block(format_dead_letters(letters, lang)), view=view)

    @admin("retry")
    @app_commands.describe(task=described("cmd_retry_task"))
    async def retry(interaction: discord.Interaction, task: str) -> None:
        outcome = await services.admin.retry_dead(task.strip())
        lang = lang_of(interaction)
        if outcome.ok:
            await answer(interaction, text("admin_retried", lang, task_id=outcome.task_id))
        else:
            await answer(interaction, text("admin_retry_missing", lang, task_id=task.strip()))

    @admin("purge")
    async def purge(interaction: discord.Interaction) -> None:
        count = await services.admin.purge_dead()
        await answer(interaction, text("admin_purged", lang_of(interaction), count=count))

    @admin("pause")
    async def pause(interaction: discord.Interaction) -> None:
        await services.admin.pause()
        log.warning("discord:%s paused the queue", interaction.user.id)
        await answer(interaction, text("admin_paused", lang_of(interaction)))

    @admin("resume")
    async def resume(interaction: discord.Interaction) -> None:
        await services.admin.resume()
        log.warning("discord:%s resumed the queue", interaction.user.id)
        await answer(interaction, text("admin_resumed", lang_of(interaction)))

    @admin("stats")
    async def stats(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # the chart takes a moment
        numbers = await services.admin.stats()
        series = await stats_series(services.redis, 3600)
        lang = lang_of(interaction)
        chart = await asyncio.to_thread(stats_chart_png, numbers, series, lang)
        await answer(
            interaction, block(format_stats(numbers, lang)), file=discord.File(io.BytesIO(chart), filename="stats.png")
        )

    @admin("mute_alerts")
    @app_commands.describe(minutes=described("cmd_mute_alerts_minutes"))
    async def mute_alerts(interaction: discord.Interaction, minutes: app_commands.Range[int, 0, 10080]) -> None:
        await alerts.mute(services.redis, minutes)
        lang = lang_of(interaction)
        await answer(
            interaction, text("admin_muted", lang, minutes=minutes) if minutes else text("admin_unmuted", lang)
        )

    tree.add_command(group)
