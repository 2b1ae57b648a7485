"""/colorize and the "Colorize photo" message menu: thin handlers that turn attachments into tasks.

Both defer at once (Discord wants an answer within 3 s), refuse what they can from what Discord
declares about a file before downloading it, download right away (attachment URLs expire), submit
through the shared intake and edit the "thinking" message to the place in line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord
from discord import app_commands

from backend.errors import Refused
from backend.intake import Intake, Submitted
from backend.oversize import shrink_to_limit
from backend.platform_marks import first_to_defer
from backend.positions import where_lines
from backend.services import Services
from backend.status_line import QUEUED, StatusLines, known_run_s, line_id, queued_text
from backend.texts import text
from backend.workflows import Mode
from bots.discord.messages import cancel_view
from bots.discord.replies import is_admin, lang_of, reply_for, user_key
from bots.discord.translations import localized

log = logging.getLogger(__name__)

MAX_IMAGES_PER_MESSAGE = 4
MIB = 1024 * 1024
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
        if await answered_before(services.intake, interaction, [image]):
            return
        await defer_once(services, interaction, ephemeral=private)
        chosen = mode or await services.intake.default_mode(user_key(interaction.user.id))
        await queue_photos(services, interaction, [image], mode=chosen, private=private)

    @tree.command(name="where", description=localized("Where your photos are in line", "cmd_where"))
    async def where(interaction: discord.Interaction) -> None:
        """The place in line and the wait of each of this user's photos; only they see it."""
        places = await services.queue.of_user(user_key(interaction.user.id))
        await interaction.response.send_message(where_lines(places, lang_of(interaction)), ephemeral=True)

    @tree.context_menu(name=localized("Colorize photo", "cmd_colorize_menu"))
    async def colorize_message(interaction: discord.Interaction, message: discord.Message) -> None:
        """Every image attached to a message (up to four), one task each."""
        photos = [a for a in message.attachments if looks_like_image(a)][:MAX_IMAGES_PER_MESSAGE]
        if await answered_before(services.intake, interaction, photos):
            return
        await defer_once(services, interaction, ephemeral=False)
        mode = await services.intake.default_mode(user_key(interaction.user.id))
        await queue_photos(services, interaction, photos, mode=mode, private=False)


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


async def answered_before(intake: Intake, interaction: discord.Interaction, photos: list[discord.Attachment]) -> bool:
    """An interaction delivered again whose photos are all queued already is answered as the first
    delivery was (its "thinking" message says "Queued" again); it is not deferred a second time,
    which Discord refuses."""
    if not photos:
        return False
    claims = [await intake.claimed(event_key(interaction, photo)) for photo in photos]
    if any(claim is None for claim in claims):
        return False
    first = claims[0]
    log.info("interaction %s delivered again; answered with task %s", interaction.id, first.task_id)
    if all(claim.finished for claim in claims):  # the results are out: nothing to say again
        return True
    eta = first.eta_s if await known_run_s(intake.redis) is not None else None
    sentence = queued_text(lang_of(interaction), first.position, eta, count=len(claims))
    line = line_id(first.reply) or ""
    current = await StatusLines(intake.redis).current(line)
    if current is not None and current.stage > QUEUED:  # it moved on: never back to "Queued"
        return True
    with contextlib.suppress(discord.HTTPException):  # the first answer may be gone already: nothing to redo
        await interaction.edit_original_response(content=sentence)
    return True


async def queue_photos(
    services: Services, interaction: discord.Interaction, photos: list[discord.Attachment], *, mode: str, private: bool
) -> None:
    """Check, download and submit; answer with the place in line (and Cancel), or refuse (only the user
    sees it)."""
    intake = services.intake
    lang, user = lang_of(interaction), user_key(interaction.user.id)
    exempt = is_admin(interaction, intake.settings)
    try:
        if not photos:
            raise Refused("not_an_image")
        for photo in photos:
            check_declared(photo, interaction.filesize_limit, intake)
        # Room for at least one; each photo is then checked on its own.
        await intake.check_open(user, exempt=exempt, event_key=event_key(interaction, photos[0]))
        downloads = [await photo.read() for photo in photos]
        notes = []
        for index, data in enumerate(downloads):  # over the pixel limit: a shrunk copy, with a note
            shrunk = await asyncio.to_thread(
                shrink_to_limit,
                data,
                max_pixels=intake.settings.max_image_pixels,
                ceiling_pixels=intake.settings.max_image_pixels_ceiling,
            )
            if shrunk is not None:
                downloads[index] = shrunk.data
                notes.append(text("shrunk_note", lang, **shrunk.note_values()))
    except Refused as refusal:
        await refuse(interaction, refusal, lang, deferred_ephemeral=private)
        return
    except (discord.HTTPException, aiohttp.ClientError) as exc:  # the attachment could not be fetched
        log.warning("attachment download failed for %s: %s", user, exc)
        await refuse(interaction, text("error_generic", lang), lang, deferred_ephemeral=private)
        return
    queued: list[Submitted] = []
    refusals: list[Refused] = []
    replies: list[dict] = []
    for index, (photo, data) in enumerate(zip(photos, downloads), start=1):
        # Photos of one message share one "thinking" message and come back in one follow-up, numbered.
        part = f"{index}/{len(downloads)}" if len(downloads) > 1 else None
        reply = reply_for(interaction, private=private, part=part)
        try:
            queued.append(
                await intake.submit(
                    data, mode=mode, reply=reply, user=user, exempt=exempt, event_key=event_key(interaction, photo)
                )
            )
            replies.append(reply)
        except Refused as refusal:
            refusals.append(refusal)
    if not queued:
        await refuse(interaction, refusals[0], lang, deferred_ephemeral=private)
        return
    await show_queued(services, interaction, queued, replies, user, note="\n".join(notes))
    for sentence in dict.fromkeys(r.user_message(lang) for r in refusals):
        await interaction.followup.send(sentence, ephemeral=True)


async def show_queued(
    services: Services,
    interaction: discord.Interaction,
    queued: list[Submitted],
    replies: list[dict],
    user: str,
    *,
    note: str = "",
) -> None:
    """The "thinking" message becomes "Queued — #N" with Cancel (unless the worker got there first: the
    status line only moves forward); the announcer keeps the place current from then on."""
    lang = lang_of(interaction)
    line = line_id(replies[0]) or ""
    await services.lines.expect(line, len(queued), user)
    if note:
        await services.lines.keep_note(line, note)
    for submitted, reply in zip(queued, replies):
        await services.lines.add_task(line, submitted.task_id)
        await services.positions.watch(submitted.task_id, reply)
    places = await services.queue.places([s.task_id for s in queued])
    if not places:  # finished already: the result is on its way
        return
    sentence = queued_text(lang, places[0].position, max(p.eta_s for p in places) or None, count=len(queued))
    if note:
        sentence += "\n" + note
    if await services.lines.advance(line, QUEUED, sentence):
        try:
            await interaction.edit_original_response(content=sentence, view=cancel_view(line, lang))
        except discord.HTTPException as exc:
            # The photo is queued and its result will come: a status edit Discord refused (5xx, 429) is
            # no failure of the photo, and the next stage's edit replaces it.
            log.info("queued status for %s not shown: %s", user, exc)


def check_declared(photo: discord.Attachment, upload_limit: int, intake: Intake) -> None:
    """Refuse by what Discord says about the file (size, content type) before downloading it."""
    if photo.size > upload_limit:
        raise Refused("too_large", max_mb=upload_limit // MIB)
    intake.check_size(photo.size)
    if photo.content_type and not photo.content_type.startswith("image/"):
        raise Refused("not_an_image", detail=f"content type {photo.content_type}")


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
