"""/colorize and the "Colorize photo" message menu: thin handlers that turn attachments into tasks.

Both defer at once (Discord wants an answer within 3 s), refuse what they can from what Discord
declares about a file before downloading it, download right away (attachment URLs expire), submit
through the shared intake and edit the "thinking" message to the place in line.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import discord
from discord import app_commands

from backend.errors import Refused
from backend.intake import Submitted
from backend.intake_many import Fate, PhotoSource
from backend.platform_marks import first_to_defer
from backend.positions import where_lines
from backend.replies import DiscordReply, Reply
from backend.services import Services
from backend.status_line import QUEUED, line_id
from backend.workflows import Mode
from bots.discord.messages import cancel_view
from bots.discord.replies import is_admin, lang_of, reply_for, user_key
from bots.discord.translations import localized

log = logging.getLogger(__name__)

MAX_IMAGES_PER_MESSAGE = 4
INTERACTION_LIFETIME_S = 15 * 60
DEFERRED_BEFORE = "deferred by an earlier delivery"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def add_photo_commands(tree: app_commands.CommandTree, services: Services) -> None:
    modes = [app_commands.Choice(name=mode_choice(mode), value=mode.name) for mode in services.workflows.choosable]

    @tree.command(name="colorize", description=localized("Colorize an old black-and-white photo", "cmd_colorize"))
    @app_commands.describe(
        image=localized("The photo to colorize", "cmd_colorize_image"),
        mode=localized("How to colorize it (default: your /mode)", "cmd_colorize_mode"),
        private=localized("Only you see the answer", "cmd_colorize_private"),
    )
    @app_commands.choices(mode=modes)
    async def colorize(
        interaction: discord.Interaction, image: discord.Attachment, mode: str | None = None, private: bool = False
    ) -> None:
        """One photo in; the place in line now, the colorized photo as a follow-up later."""
        await defer_once(services, interaction, ephemeral=private)
        await queue_photos(services, interaction, [image], mode=mode, private=private)

    @tree.command(name="where", description=localized("Where your photos are in line", "cmd_where"))
    async def where(interaction: discord.Interaction) -> None:
        """The place in line and the wait of each of this user's photos; only they see it."""
        places = await services.queue.of_user(user_key(interaction.user.id))
        await interaction.response.send_message(where_lines(places, lang_of(interaction)), ephemeral=True)

    @tree.context_menu(name=localized("Colorize photo", "cmd_colorize_menu"))
    async def colorize_message(interaction: discord.Interaction, message: discord.Message) -> None:
        """Every image attached to a message (up to four), one task each."""
        photos = [a for a in message.attachments if looks_like_image(a)][:MAX_IMAGES_PER_MESSAGE]
        await defer_once(services, interaction, ephemeral=False)
        await queue_photos(services, interaction, photos, mode=None, private=False)


def mode_choice(mode: Mode) -> app_commands.locale_str:
    """A /colorize mode choice named by the manifest in English, and in Chinese for Chinese clients."""
    return app_commands.locale_str(
        f"{mode.label('en')} ({mode.describe('en')})"[:100],
        translated={"zh": f"{mode.label('zh')}（{mode.describe('zh')}）"[:100]},
    )


def event_key(interaction: discord.Interaction, photo: discord.Attachment) -> str:
    """The idempotency key of one photo of an interaction: the gateway may deliver an interaction again
    (a resumed session replays it), and each of its photos must still be one task."""
    return f"discord:{interaction.id}:{photo.id}"


async def defer_once(services: Services, interaction: discord.Interaction, *, ephemeral: bool) -> None:
    """Defer ("thinking…") unless an earlier delivery of this interaction did: Discord takes one
    answer per interaction (a second is refused, 40060). A replay that finds it deferred carries on
    as if it had deferred itself; intake then answers it with the first delivery's task."""
    if not await first_to_defer(services.redis, interaction.id, ttl_s=INTERACTION_LIFETIME_S):
        log.info("interaction %s delivered again while the first delivery is still queueing it", interaction.id)
        interaction.extras[DEFERRED_BEFORE] = True
        return
    await interaction.response.defer(thinking=True, ephemeral=ephemeral)


async def queue_photos(
    services: Services,
    interaction: discord.Interaction,
    photos: list[discord.Attachment],
    *,
    mode: str | None,
    private: bool,
) -> None:
    """One intake call for the interaction's photos; answer with the place in line (and Cancel), or
    refuse (only the user sees it). Photos of one message share one "thinking" message and come back
    in one follow-up, numbered."""
    lang, user = lang_of(interaction), user_key(interaction.user.id)

    async def replies(usable: Sequence[PhotoSource]) -> list[DiscordReply]:
        count = len(usable)
        return [
            reply_for(interaction, private=private, part=f"{index}/{count}" if count > 1 else None)
            for index in range(1, count + 1)
        ]

    intook = await services.intake.submit_many(
        [photo_source(interaction, photo) for photo in photos],
        user=user,
        replies=replies,
        mode=mode,
        exempt=is_admin(interaction, services.settings),
        backlog=False,
    )
    again = intook.of(Fate.AGAIN)
    if again and len(again) == len(photos):
        await answer_again(services, interaction, [p.submitted for p in again if p.submitted is not None])
        return
    queued = intook.of(Fate.QUEUED)
    if not queued:
        refusal = intook.first_refusal
        if refusal is not None:
            await refuse(interaction, refusal, lang, deferred_ephemeral=private)
        return
    await show_queued(
        services,
        interaction,
        [p.submitted for p in queued if p.submitted is not None],
        [p.reply for p in queued if p.reply is not None],
        user,
        note="\n".join(intook.notes),
    )
    for sentence in dict.fromkeys(p.refusal.user_message(lang) for p in intook.of(Fate.REFUSED) if p.refusal):
        await interaction.followup.send(sentence, ephemeral=True)


def photo_source(interaction: discord.Interaction, photo: discord.Attachment) -> PhotoSource:
    """What Discord declares about an attachment (size, content type; the interaction's file cap) and
    how to download it (at once: attachment URLs expire)."""
    return PhotoSource(
        photo.read,
        event_key=event_key(interaction, photo),
        size=photo.size,
        mime=photo.content_type,
        size_limit=interaction.filesize_limit,
        ref=photo,
    )


async def answer_again(services: Services, interaction: discord.Interaction, claims: list[Submitted]) -> None:
    """An interaction delivered again whose photos are all queued already is answered as the first
    delivery was: its "thinking" message says "Queued" again, unless the photos have moved on."""
    log.info("interaction %s delivered again; answered with task %s", interaction.id, claims[0].task_id)
    first = next((claim for claim in claims if not claim.finished), None)  # all finished: nothing to say
    sentence = await services.lines.queued_again(first, lang_of(interaction), count=len(claims)) if first else None
    if sentence is None:
        return
    with contextlib.suppress(discord.HTTPException):  # the first answer may be gone already: nothing to redo
        await interaction.edit_original_response(content=sentence)


async def show_queued(
    services: Services,
    interaction: discord.Interaction,
    queued: list[Submitted],
    replies: list[Reply],
    user: str,
    *,
    note: str = "",
) -> None:
    """The "thinking" message becomes "Queued — #N" with Cancel (unless the worker got there first: the
    status line only moves forward); the announcer keeps the place current from then on."""
    lang = lang_of(interaction)
    line = line_id(replies[0]) or ""
    await services.lines.expect(line, len(queued), user)
    if sentence := await services.positions.announce_queued(queued, replies, lang, note=note):
        try:
            await interaction.edit_original_response(content=sentence, view=cancel_view(line, lang))
            if newer := await services.lines.overtaken(line, QUEUED):  # the notifier's edit may have landed first
                await interaction.edit_original_response(content=newer.text, view=cancel_view(line, lang))
        except discord.HTTPException as exc:
            # The photo is queued and its result will come: a status edit Discord refused (5xx, 429) is
            # no failure of the photo, and the next stage's edit replaces it.
            log.info("queued status for %s not shown: %s", user, exc)


def looks_like_image(attachment: discord.Attachment) -> bool:
    if attachment.content_type:
        return attachment.content_type.startswith("image/")
    return attachment.filename.lower().endswith(IMAGE_EXTENSIONS)


async def refuse(
    interaction: discord.Interaction, refusal: Refused | str, lang: str, *, deferred_ephemeral: bool
) -> None:
    """One polite sentence only the user sees: edit an ephemeral deferral, or swap a public one for an
    ephemeral follow-up (the "thinking" message is deleted so the channel shows nothing)."""
    sentence = refusal.user_message(lang) if isinstance(refusal, Refused) else refusal
    if isinstance(refusal, Refused):
        log.info(
            "refused %s for discord:%s: %s %s",
            interaction.command.name if interaction.command else "component",
            interaction.user.id,
            refusal.code,
            refusal.detail,
        )
    if not interaction.response.is_done() and not interaction.extras.get(DEFERRED_BEFORE):
        await interaction.response.send_message(sentence, ephemeral=True)
    elif deferred_ephemeral:
        await interaction.edit_original_response(content=sentence)
    else:
        await interaction.delete_original_response()
        await interaction.followup.send(sentence, ephemeral=True)
