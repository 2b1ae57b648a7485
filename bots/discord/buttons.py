"""The result's buttons, "Other mode" and "Compare", dispatched by custom_id so they outlive restarts.

A button carries only the task id; the finished task is read back from the stored result the worker
keeps (`keys.result`), which knows the input, the output, the mode and the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import discord

from backend import images, keys
from backend.errors import Refused
from backend.services import Services
from backend.tasks import MalformedRecord, Result
from backend.texts import text
from bots.discord.commands import defer_once, refuse
from bots.discord.messages import COMPARE_PREFIX, OTHER_MODE_PREFIX, ResultImage
from bots.discord.replies import is_admin, lang_of, reply_for, user_key

log = logging.getLogger(__name__)

_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


async def handle_component(services: Services, interaction: discord.Interaction) -> None:
    """Route a button press by its custom_id; presses that aren't ours are left alone."""
    custom_id = str((interaction.data or {}).get("custom_id", ""))
    if custom_id.startswith(OTHER_MODE_PREFIX):
        await other_mode_pressed(services, interaction, custom_id.removeprefix(OTHER_MODE_PREFIX))
    elif custom_id.startswith(COMPARE_PREFIX):
        await compare_pressed(services, interaction, custom_id.removeprefix(COMPARE_PREFIX))


async def stored_result(services: Services, task_id: str) -> Result | None:
    if not _TASK_ID.fullmatch(task_id):
        return None
    fields = await services.redis.hgetall(keys.result(task_id))
    if not fields:
        return None
    try:
        return Result.decode(fields)
    except MalformedRecord as exc:
        log.warning("stored result of %s is unreadable: %s", task_id, exc.reason)
        return None


async def other_mode_pressed(services: Services, interaction: discord.Interaction, pressed: str) -> None:
    """The same photo again in the mode the button names (`<task>:<mode>`; the first other mode users may
    choose for older buttons without one); only its owner may ask."""
    lang, user = lang_of(interaction), user_key(interaction.user.id)
    task_id, _, mode = pressed.partition(":")
    result = await stored_result(services, task_id)
    if result is None or not result.input:
        await refuse(interaction, Refused("input_expired"), lang, deferred_ephemeral=True)
        return
    if result.user != user:
        log.warning("discord:%s pressed Other mode on %s, owned by %s", interaction.user.id, task_id, result.user)
        await refuse(interaction, text("not_allowed", lang), lang, deferred_ephemeral=True)
        return
    private = bool(result.reply.get("private"))
    key = f"discord:{interaction.id}:other"  # a press replayed by the gateway is one task, like a photo
    if (first := await services.intake.claimed(key)) is not None:
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(content=text("queued", lang, position=first.position,
                                                                  eta=first.eta_s))
        return
    await defer_once(services, interaction, ephemeral=private)
    try:
        others = services.workflows.others(result.mode)
        chosen = services.workflows.choosable_mode(mode) if mode else others[0] if others else None
        if chosen is None:
            raise Refused("unknown_mode", modes=services.workflows.labels(lang))
        submitted = await services.intake.resubmit(result.input, mode=chosen.name,
                                                   reply=reply_for(interaction, private=private), user=user,
                                                   exempt=is_admin(interaction, services.settings),
                                                   event_key=key)
    except Refused as refusal:
        await refuse(interaction, refusal, lang, deferred_ephemeral=private)
        return
    await interaction.edit_original_response(
        content=text("queued", lang, position=submitted.position, eta=submitted.eta_s))


async def compare_pressed(services: Services, interaction: discord.Interaction, task_id: str) -> None:
    """Before and after side by side, as one image."""
    lang = lang_of(interaction)
    result = await stored_result(services, task_id)
    if result is None or not result.output:
        await refuse(interaction, text("compare_unavailable", lang), lang, deferred_ephemeral=True)
        return
    private = bool(result.reply.get("private"))
    await interaction.response.defer(thinking=True, ephemeral=private)
    before, after = await services.blobs.get(result.input), await services.blobs.get(result.output)
    if before is None or after is None:
        await refuse(interaction, text("compare_unavailable", lang), lang, deferred_ephemeral=private)
        return
    pair = await asyncio.to_thread(images.side_by_side, before, after)
    image = await ResultImage.fit(pair, interaction.filesize_limit, stem="compare")
    await interaction.edit_original_response(content=text("compare_caption", lang), attachments=[image.file()])
