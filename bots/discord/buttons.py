"""The buttons, as `discord.ui.DynamicItem`s: discord.py routes a press by its custom_id's template, so
a button keeps working after a restart or a deploy. Cancel under a status; Retry, Other mode and
Compare under a result; Retry under an admin's dead letter.

The custom_id formats are the ones messages.py writes (and buttons already posted carry): a result
button carries only the task id, and the finished task is read back from the stored result the worker
keeps (a task handle's finished()), which knows the input, the output, the mode and the owner. Cancel
carries its status line, which knows its tasks and owner. Someone else's press is told to colorize
their own photo; a press that no longer applies says so and the button is disabled on its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import discord

from backend.compare import labelled_side_by_side
from backend.errors import Refused
from backend.intake import Submitted
from backend.replies import DiscordReply
from backend.services import Services
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
from bots.discord.replies import asked_privately, is_admin, lang_of, reply_for, user_key

log = logging.getLogger(__name__)

COMPARE_MAX_SIDE = 4096  # Discord shows big images; the upload limit is kept by ResultImage.fit


def template(prefix: str, rest: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + rest)


class Press:
    """What every button shares: the press is handled with the bot's services, a failure is answered
    and reported as a failed command is, and a button that no longer applies is disabled."""

    item: discord.ui.Button[Any]
    view: discord.ui.View | None

    def __init__(self, item: discord.ui.Button[Any], parts: dict[str, str | None]):
        super().__init__(item)  # type: ignore[call-arg]  # DynamicItem's, next in the MRO
        self.parts = parts  # the custom_id's named groups

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Any:
        return cls(item, match.groupdict())  # type: ignore[arg-type]

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Any = interaction.client
        try:
            await self.pressed(bot.services, interaction)
        except Exception as exc:  # noqa: BLE001 - one bad press must not look like silence
            await bot.on_command_error(interaction, exc)

    async def pressed(self, services: Services, interaction: discord.Interaction) -> None:
        """Each button's own answer to a press."""
        raise NotImplementedError

    async def retire(self, interaction: discord.Interaction, sentence: str) -> None:
        """Say (to the presser only) that the button no longer applies, and disable it on its message
        by answering the press with the message's buttons, this one greyed out."""
        if self.view is not None and not interaction.response.is_done():
            self.item.disabled = True
            self.view.stop()  # only a picture of the message's buttons: discord.py need not keep it to listen
            try:
                await interaction.response.edit_message(view=self.view)
            except discord.HTTPException as exc:  # the message is gone, or can't be edited: just say it
                log.info("could not disable a stale button: %s", exc)
        if interaction.response.is_done():
            await interaction.followup.send(sentence, ephemeral=True)
        else:
            await interaction.response.send_message(sentence, ephemeral=True)


class CancelButton(
    Press, discord.ui.DynamicItem[discord.ui.Button[Any]], template=template(CANCEL_PREFIX, "(?P<line>.+)")
):
    """Cancel every photo still queued or running under this status; its owner (or an admin) only."""

    async def pressed(self, services: Services, interaction: discord.Interaction) -> None:
        lang, user = lang_of(interaction), user_key(interaction.user.id)
        owner = await services.lines.owner(self.parts["line"])
        admin = is_admin(interaction, services.settings)
        if owner is not None and owner != user and not admin:
            await not_yours(interaction, "Cancel", owner)
            return
        flagged = [
            await services.admin.cancel(task_id, user=None if admin else user)
            for task_id in await services.lines.tasks(self.parts["line"])
        ]
        if count := sum(flagged):
            await interaction.response.send_message(text("cancelled_count", lang, count=count), ephemeral=True)
        else:
            await self.retire(interaction, text("button_gone", lang))


class RetryButton(
    Press, discord.ui.DynamicItem[discord.ui.Button[Any]], template=template(RETRY_PREFIX, "(?P<task>.+)")
):
    """A failed photo again, in the same mode; only its owner may ask."""

    async def pressed(self, services: Services, interaction: discord.Interaction) -> None:
        result = await owned_input(self, services, interaction, self.parts["task"], "Retry")
        if result is None:
            return
        key = f"discord:{interaction.id}:retry"
        private = asked_privately(result.reply)
        if not await first_delivery(services, interaction, key, private=private):
            return
        reply = reply_for(interaction, private=private)
        try:
            submitted = await resubmit(services, interaction, result, result.mode, reply, key)
        except Refused as refusal:
            await refuse(interaction, refusal, lang_of(interaction), deferred_ephemeral=private)
            return
        await show_queued(services, interaction, [submitted], [reply], user_key(interaction.user.id))


class OtherModeButton(
    Press,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=template(OTHER_MODE_PREFIX, "(?P<task>[^:]+)(?::(?P<mode>.+))?"),
):
    """The same photo again in the mode the button names (`<task>:<mode>`; older buttons without one
    mean the first other mode users may choose). Only its owner may ask, and it runs once per photo
    and mode: pressed again, it shows the first run's result."""

    async def pressed(self, services: Services, interaction: discord.Interaction) -> None:
        lang = lang_of(interaction)
        result = await owned_input(self, services, interaction, self.parts["task"], "Other mode")
        if result is None:
            return
        others = services.workflows.others(result.mode)
        named = self.parts["mode"]
        chosen = next((m for m in others if m.name == named), None) if named else next(iter(others), None)
        if chosen is None:
            await self.retire(interaction, text("button_gone", lang))
            return
        key = f"discord:{interaction.id}:other"  # a press replayed by the gateway is one task, like a photo
        private = asked_privately(result.reply)
        if not await first_delivery(services, interaction, key, private=private):
            return
        reply = reply_for(interaction, private=private)
        submitted: Submitted | None = None

        async def queue() -> str:
            nonlocal submitted
            submitted = await resubmit(services, interaction, result, chosen.name, reply, key)
            return submitted.task_id

        try:
            fresh, task_id = await services.reruns.run_once(result.input, chosen.name, queue)
        except Refused as refusal:
            await refuse(interaction, refusal, lang, deferred_ephemeral=private)
            return
        if fresh and submitted is not None:
            await show_queued(services, interaction, [submitted], [reply], user_key(interaction.user.id))
            return
        await show_earlier_run(services, interaction, task_id, chosen.label(lang), lang)


class CompareButton(
    Press, discord.ui.DynamicItem[discord.ui.Button[Any]], template=template(COMPARE_PREFIX, "(?P<task>.+)")
):
    """Before and after side by side, as one image."""

    async def pressed(self, services: Services, interaction: discord.Interaction) -> None:
        lang = lang_of(interaction)
        result = await stored_result(services, self.parts["task"])
        if result is None or not result.output:
            await self.retire(interaction, text("compare_unavailable", lang))
            return
        private = asked_privately(result.reply)
        await interaction.response.defer(thinking=True, ephemeral=private)
        before, after = await services.blobs.get(result.input), await services.blobs.get(result.output)
        if before is None or after is None:
            await refuse(interaction, text("compare_unavailable", lang), lang, deferred_ephemeral=private)
            return
        pair = await asyncio.to_thread(labelled_side_by_side, before, after, lang, max_side=COMPARE_MAX_SIDE)
        image = await ResultImage.fit(pair, interaction.filesize_limit, stem="compare")
        await interaction.edit_original_response(content=text("compare_caption", lang), attachments=[image.file()])


class DeadRetryButton(
    Press, discord.ui.DynamicItem[discord.ui.Button[Any]], template=template(DEAD_RETRY_PREFIX, "(?P<task>.+)")
):
    """An admin's Retry under a dead letter: the task goes back in line, and the button has done its job."""

    async def pressed(self, services: Services, interaction: discord.Interaction) -> None:
        lang = lang_of(interaction)
        if not is_admin(interaction, services.settings):
            await interaction.response.send_message(text("not_allowed", lang), ephemeral=True)
            return
        outcome = await services.admin.retry_dead(self.parts["task"])
        key = "admin_retried" if outcome.ok else "admin_retry_missing"
        await self.retire(interaction, text(key, lang, task_id=self.parts["task"]))


BUTTONS = (CancelButton, RetryButton, OtherModeButton, CompareButton, DeadRetryButton)


# --- what the presses share ------------------------------------------------------------------------
async def stored_result(services: Services, task_id: str) -> Result | None:
    return await services.task(task_id).finished()


async def not_yours(interaction: discord.Interaction, what: str, owner: str | None) -> None:
    log.info("discord:%s pressed %s of %s", interaction.user.id, what, owner)
    await interaction.response.send_message(text("not_yours", lang_of(interaction)), ephemeral=True)


async def owned_input(
    button: Press, services: Services, interaction: discord.Interaction, task_id: str, what: str
) -> Result | None:
    """The finished task behind a Retry or Other mode press, when its photo is still kept and the
    presser owns it; otherwise the press is answered (an expired photo retires the button) and None."""
    result = await stored_result(services, task_id)
    if result is None or not result.input:
        await button.retire(interaction, Refused("input_expired").user_message(lang_of(interaction)))
        return None
    if result.user != user_key(interaction.user.id):
        await not_yours(interaction, what, result.user)
        return None
    return result


async def first_delivery(services: Services, interaction: discord.Interaction, key: str, *, private: bool) -> bool:
    """Defer the press (True), or answer a press the gateway delivered again as its first delivery was
    (False): pressed once, it is one task, like a photo."""
    if (first := await services.intake.claimed(key)) is not None:
        await say_queued_again(services, interaction, first)
        return False
    await defer_once(services, interaction, ephemeral=private)
    return True


async def resubmit(
    services: Services, interaction: discord.Interaction, result: Result, mode: str, reply: DiscordReply, key: str
) -> Submitted:
    """The stored photo queued again in `mode`, answered through this press's interaction."""
    return await services.intake.resubmit(
        result.input,
        mode=mode,
        reply=reply,
        user=user_key(interaction.user.id),
        exempt=is_admin(interaction, services.settings),
        event_key=key,
    )


async def say_queued_again(services: Services, interaction: discord.Interaction, first: Any) -> None:
    """A replayed press is answered as the first delivery was, unless its status has moved on."""
    sentence = await services.lines.queued_again(first, lang_of(interaction))
    if sentence is None:
        return
    with contextlib.suppress(discord.HTTPException):
        await interaction.edit_original_response(content=sentence)


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
