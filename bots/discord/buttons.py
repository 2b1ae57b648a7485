"""The buttons, dispatched by custom_id so they outlive restarts: Cancel under a status, "Other mode"
and "Compare" under a result.

A result button carries only the task id; the finished task is read back from the stored result the
worker keeps (backend.stored_results), which knows the input, the output, the mode and the owner.
Cancel carries its status line, which knows its tasks and owner. Someone else's press is told to
colorize their own photo; a press that no longer applies says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import discord

from backend import stored_results
from backend.compare import labelled_side_by_side
from backend.errors import Refused
from backend.services import Services
from backend.status_line import QUEUED, known_run_s, line_id, queued_text
from backend.tasks import Result
from backend.texts import text
from bots.discord.commands import defer_once, refuse, show_queued
from bots.discord.messages import (
    CANCEL_PREFIX,
    COMPARE_PREFIX,
    DEAD_RETRY_PREFIX,
    OTHER_MODE_PREFIX,
    RETRY_PREFIX,
    ResultImage,
)
from bots.discord.replies import is_admin, lang_of, reply_for, user_key

log = logging.getLogger(__name__)

COMPARE_MAX_SIDE = 4096  # Discord shows big images; the upload limit is kept by ResultImage.fit


async def handle_component(services: Services, interaction: discord.Interaction) -> None:
    """Route a button press by its custom_id; presses that aren't ours are left alone."""
    custom_id = str((interaction.data or {}).get("custom_id", ""))
    if custom_id.startswith(CANCEL_PREFIX):
        await cancel_pressed(services, interaction, custom_id.removeprefix(CANCEL_PREFIX))
    elif custom_id.startswith(DEAD_RETRY_PREFIX):
        await dead_retry_pressed(services, interaction, custom_id.removeprefix(DEAD_RETRY_PREFIX))
    elif custom_id.startswith(RETRY_PREFIX):
        await retry_pressed(services, interaction, custom_id.removeprefix(RETRY_PREFIX))
    elif custom_id.startswith(OTHER_MODE_PREFIX):
        await other_mode_pressed(services, interaction, custom_id.removeprefix(OTHER_MODE_PREFIX))
    elif custom_id.startswith(COMPARE_PREFIX):
        await compare_pressed(services, interaction, custom_id.removeprefix(COMPARE_PREFIX))


async def stored_result(services: Services, task_id: str) -> Result | None:
    return await stored_results.stored_result(services.redis, task_id)


async def not_yours(interaction: discord.Interaction, what: str, owner: str | None) -> None:
    log.info("discord:%s pressed %s of %s", interaction.user.id, what, owner)
    await interaction.response.send_message(text("not_yours", lang_of(interaction)), ephemeral=True)


async def cancel_pressed(services: Services, interaction: discord.Interaction, line: str) -> None:
    """Cancel every photo still queued or running under this status; its owner (or an admin) only."""
    lang, user = lang_of(interaction), user_key(interaction.user.id)
    owner = await services.lines.owner(line)
    admin = is_admin(interaction, services.settings)
    if owner is not None and owner != user and not admin:
        await not_yours(interaction, "Cancel", owner)
        return
    flagged = [
        await services.admin.cancel(task_id, user=None if admin else user)
        for task_id in await services.lines.tasks(line)
    ]
    count = sum(flagged)
    key = "cancelled_count" if count else "button_gone"
    await interaction.response.send_message(text(key, lang, count=count), ephemeral=True)


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
        await not_yours(interaction, "Other mode", result.user)
        return
    others = services.workflows.others(result.mode)
    chosen = next((m for m in others if m.name == mode), None) if mode else (others[0] if others else None)
    if chosen is None:
        await refuse(interaction, text("button_gone", lang), lang, deferred_ephemeral=True)
        return
    private = bool(result.reply.get("private"))
    key = f"discord:{interaction.id}:other"  # a press replayed by the gateway is one task, like a photo
    if (first := await services.intake.claimed(key)) is not None:  # this press, replayed by the gateway
        await say_queued_again(services, interaction, first)
        return
    await defer_once(services, interaction, ephemeral=private)
    reply = reply_for(interaction, private=private)
    submitted = None

    async def queue() -> str:
        nonlocal submitted
        submitted = await services.intake.resubmit(
            result.input,
            mode=chosen.name,
            reply=reply,
            user=user,
            exempt=is_admin(interaction, services.settings),
            event_key=key,
        )
        return submitted.task_id

    try:
        fresh, task_id = await services.reruns.run_once(result.input, chosen.name, queue)
    except Refused as refusal:
        await refuse(interaction, refusal, lang, deferred_ephemeral=private)
        return
    if fresh and submitted is not None:
        await show_queued(services, interaction, [submitted], [reply], user)
        return
    await show_earlier_run(services, interaction, task_id, chosen.label(lang), lang)


async def dead_retry_pressed(services: Services, interaction: discord.Interaction, task_id: str) -> None:
    """An admin's Retry under a dead letter: the task goes back in line."""
    lang = lang_of(interaction)
    if not is_admin(interaction, services.settings):
        await interaction.response.send_message(text("not_allowed", lang), ephemeral=True)
        return
    outcome = await services.admin.retry_dead(task_id)
    key = "admin_retried" if outcome.ok else "admin_retry_missing"
    await interaction.response.send_message(text(key, lang, task_id=task_id), ephemeral=True)


async def retry_pressed(services: Services, interaction: discord.Interaction, task_id: str) -> None:
    """A failed photo again, in the same mode; only its owner may ask."""
    lang, user = lang_of(interaction), user_key(interaction.user.id)
    result = await stored_result(services, task_id)
    if result is None or not result.input:
        await refuse(interaction, Refused("input_expired"), lang, deferred_ephemeral=True)
        return
    if result.user != user:
        await not_yours(interaction, "Retry", result.user)
        return
    private = bool(result.reply.get("private"))
    key = f"discord:{interaction.id}:retry"
    if (first := await services.intake.claimed(key)) is not None:
        await say_queued_again(services, interaction, first)
        return
    await defer_once(services, interaction, ephemeral=private)
    reply = reply_for(interaction, private=private)
    try:
        submitted = await services.intake.resubmit(
            result.input,
            mode=result.mode,
            reply=reply,
            user=user,
            exempt=is_admin(interaction, services.settings),
            event_key=key,
        )
    except Refused as refusal:
        await refuse(interaction, refusal, lang, deferred_ephemeral=private)
        return
    await show_queued(services, interaction, [submitted], [reply], user)


async def say_queued_again(services: Services, interaction: discord.Interaction, first: Any) -> None:
    """A replayed press is answered as the first delivery was, unless its status has moved on."""
    if first.finished:
        return
    current = await services.lines.current(line_id(first.reply) or "")
    if current is not None and current.stage > QUEUED:
        return
    eta = first.eta_s if await known_run_s(services.redis) is not None else None
    with contextlib.suppress(discord.HTTPException):
        await interaction.edit_original_response(content=queued_text(lang_of(interaction), first.position, eta))


async def show_earlier_run(
    services: Services, interaction: discord.Interaction, task_id: str, mode: str, lang: str
) -> None:
    """Other mode pressed again: the result of the first press (or word that it is on its way)."""
    earlier = await stored_result(services, task_id)
    data = await services.blobs.get(earlier.output) if earlier is not None and earlier.output else None
    if data is None:
        await interaction.edit_original_response(content=text("other_mode_running", lang, mode=mode))
        return
    image = await ResultImage.fit(data, interaction.filesize_limit)
    await interaction.edit_original_response(
        content=text("other_mode_done", lang, mode=mode), attachments=[image.file()]
    )


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
    pair = await asyncio.to_thread(labelled_side_by_side, before, after, lang, max_side=COMPARE_MAX_SIDE)
    image = await ResultImage.fit(pair, interaction.filesize_limit, stem="compare")
    await interaction.edit_original_response(content=text("compare_caption", lang), attachments=[image.file()])
