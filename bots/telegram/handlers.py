"""What a user gets from the bot: photos in (single or albums), buttons, /start /help /mode /cancel.

Handlers are thin: they read the chat event, ask the backend (intake, admin) and answer in the
user's language. Limits and image checks are the backend's, so Telegram and Discord agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardMarkup, Message, PhotoSize, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest

from backend import albums, alerts
from backend.compare import labelled_side_by_side
from backend.errors import Refused
from backend.intake import Submitted
from backend.intake_many import Fate, Intook, PhotoOutcome, PhotoSource
from backend.positions import where_lines
from backend.replies import TelegramReply
from backend.services import Services
from backend.status_line import QUEUED, line_id
from backend.texts import pick_lang, text
from bots.telegram.albums import Gathered
from bots.telegram.context import BotContext
from bots.telegram.keyboards import Button, cancel_markup, mode_markup, parse, status_cancel_markup
from bots.telegram.photos import PHOTO_MAX_SIDE

log = logging.getLogger(__name__)

MB = 1024 * 1024
BOT_API_DOWNLOAD_LIMIT = 20 * MB  # getFile refuses bigger files


@dataclass(frozen=True)
class Asker:
    """Who sent an update, as the backend names and treats them."""

    user: str
    lang: str
    exempt: bool


def asker_of(update: Update, context: BotContext) -> Asker:
    sender = update.effective_user
    admins = context.services.settings.telegram_admin_ids
    return Asker(f"telegram:{sender.id}", pick_lang(sender.language_code), sender.id in admins)


# --- photos ------------------------------------------------------------------------------------
def photo_source(message: Message, downloads: asyncio.Semaphore) -> PhotoSource:
    """What intake needs to know of a photo message before downloading it, and how to download it.

    A file whose type is not an image is refused unread; getFile refuses files over the Bot API's
    20 MB, so that is this platform's size cap."""
    if message.photo:
        biggest: PhotoSize = message.photo[-1]
        file_id, size, mime = biggest.file_id, biggest.file_size, None
    elif message.document is not None:
        document = message.document
        file_id, size, mime = document.file_id, document.file_size, document.mime_type
    else:
        file_id, size, mime = "", None, ""  # neither: refused as not an image

    async def fetch() -> bytes:
        return await download(message, file_id, downloads)

    return PhotoSource(
        fetch, event_key=event_key(message), size=size, mime=mime, size_limit=BOT_API_DOWNLOAD_LIMIT, ref=message
    )


async def download(message: Message, file_id: str, downloads: asyncio.Semaphore) -> bytes:
    """getFile and the download, a bounded number at a time (each may be 20 MB).

    A message need not declare its file's size; then only getFile tells us the file is over 20 MB."""
    async with downloads:
        try:
            file = await message.get_bot().get_file(file_id)
        except BadRequest as exc:
            if "file is too big" in str(exc).lower():
                raise Refused("too_large", max_mb=BOT_API_DOWNLOAD_LIMIT // MB) from exc
            raise
        return bytes(await file.download_as_bytearray())


async def on_image(update: Update, context: BotContext) -> None:
    """A photo or an image file joins its album, or the burst of photos sent one by one within a
    moment; the window's job (`queue_gathered`) queues them under one status message."""
    window = context.albums if update.effective_message.media_group_id else context.bursts
    window.add(update, context.job_queue, queue_gathered)


async def queue_gathered(context: BotContext, gathered: Gathered) -> None:
    """Queue an album, a burst, or a single photo, with a status message that follows it to the result."""
    group, first = gathered.messages, gathered.first.effective_message
    together = None if len(group) == 1 and not first.media_group_id else ("album" if first.media_group_id else "burst")
    await queue_photos(group, asker_of(gathered.first, context), context.services, context.downloads, together=together)


def event_key(message: Message) -> str:
    """The idempotency key of a photo message: the same message delivered again (a webhook retry,
    polling after a crash) maps to the same key whatever its update_id.

    An album photo also names its media group. Its place in the album is its own message id (Telegram
    gives every photo of an album its own): a position counted in the collected group would shift
    when a redelivery brings only the part of the album that was not confirmed, and queue it twice."""
    key = f"telegram:{message.chat_id}:{message.message_id}"
    if message.media_group_id:
        key += f":album:{message.media_group_id}"
    return key


async def answer_again(bot: Any, first: Submitted, lang: str, services: Services, *, count: int = 1) -> None:
    """A redelivered message is answered as the first delivery was: that task's status message says
    "Queued" again (unless it has moved on: the status line only goes forward); no second status, no refusal."""
    reply = first.reply
    log.info("telegram message delivered again; answered with task %s", first.task_id)
    sentence = await services.lines.queued_again(first, lang, count=count)
    if sentence is None or not isinstance(reply, TelegramReply) or reply.status_message_id is None:
        return
    # Said again even if recorded: a crash may have come between the record and the edit (a refused
    # "not modified" is the price of this rare path).
    await services.lines.advance(line_id(reply) or "", QUEUED, sentence)
    with contextlib.suppress(BadRequest):  # unchanged, or the status is gone
        await bot.edit_message_text(
            sentence,
            chat_id=reply.chat_id,
            message_id=reply.status_message_id,
            reply_markup=cancel_markup(reply, first.task_id, lang),
        )


async def queue_photos(
    group: list[Message], asker: Asker, services: Services, downloads: asyncio.Semaphore, *, together: str | None
) -> None:
    """One photo, or an album or a burst of photos sent one by one (`together`), all under one status
    message, one task per photo. Photos beyond the user's concurrent cap wait in the backlog; past
    the backlog, ONE reply says how many were taken and how many to send again."""
    status: Message | None = None
    made: list[TelegramReply] = []
    queued_any = False

    async def replies(usable: Sequence[PhotoSource]) -> list[TelegramReply]:
        nonlocal status
        messages: list[Message] = [photo.ref for photo in usable]
        count = len(messages)
        status = await messages[0].reply_text(
            text("received_many" if count > 1 else "received", asker.lang, count=count), do_quote=True
        )
        if together:
            await albums.open_album(
                services.redis, messages[0].chat_id, status.message_id, count, services.settings.blob_ttl_s
            )
        made.extend(photo_reply(message, status, asker.lang, together) for message in messages)
        return made

    async def counted(photo: PhotoOutcome) -> None:
        """The album's sender waits for every photo: the ones that will bring no result count now."""
        nonlocal queued_any
        message: Message = photo.source.ref
        if status is None:
            return
        if photo.fate is Fate.QUEUED and photo.submitted is not None:
            queued_any = True
            await albums.add_album_task(
                services.redis,
                message.chat_id,
                status.message_id,
                photo.submitted.task_id,
                services.settings.blob_ttl_s,
            )
        elif photo.fate in (Fate.REFUSED, Fate.DROPPED, Fate.AGAIN):
            left = await albums.finish_album_item(
                services.redis, message.chat_id, status.message_id, f"{FINISHED_AS[photo.fate]}:{message.message_id}"
            )
            if left == 0 and queued_any and photo.reply is not None:  # the queued ones' results are all in
                await albums.hand_over_last(services.redis, services.settings.results_stream, photo.reply)

    caption_mode = next(filter(None, (services.workflows.from_words(m.caption) for m in group)), None)
    try:
        intook = await services.intake.submit_many(
            [photo_source(message, downloads) for message in group],
            user=asker.user,
            replies=replies,
            mode=caption_mode,
            exempt=asker.exempt,
            on_each=counted if together else None,
        )
    except Exception:  # noqa: BLE001 - Telegram or Redis failed mid-way: the status must not say "putting in line"
        if status is None:
            raise
        log.exception("photos from %s could not be queued", asker.user)
        with contextlib.suppress(Exception):
            await settle(status, made[0], services, text("error_generic", asker.lang))
        return
    await answer_intook(intook, group, status, made, asker, services, together=together)


FINISHED_AS = {Fate.REFUSED: "refused", Fate.DROPPED: "dropped", Fate.AGAIN: "again"}


def photo_reply(message: Message, status: Message, lang: str, together: str | None) -> TelegramReply:
    """Where this photo's result goes: a reply to it, under the shared status message. A flag that is
    off is left out rather than written as false (the entries stay as they were)."""
    flags: dict[str, Any] = {}
    if together == "burst":
        flags["burst"] = True
    elif together == "album":
        flags["album"] = str(message.media_group_id)
    if message.document is not None:
        flags["as_file"] = True
    return TelegramReply(
        chat_id=message.chat_id,
        message_id=message.message_id,
        status_message_id=status.message_id,
        lang=lang,
        **flags,
    )


async def answer_intook(
    intook: Intook,
    group: list[Message],
    status: Message | None,
    made: list[TelegramReply],
    asker: Asker,
    services: Services,
    *,
    together: str | None,
) -> None:
    """Turn intake's outcome into messages: the status says where the photos stand; each distinct
    refusal is said once, under the first photo it hit."""
    lang = asker.lang
    bot = group[0].get_bot()
    before = [p for p in intook.of(Fate.AGAIN) if p.reply is None and p.submitted is not None]
    if before:  # the event was delivered before (all of it, or the part that was queued then)
        await answer_again(bot, before[0].submitted, lang, services, count=len(before))
    for photo in intook.of(Fate.REFUSED):
        if photo.reply is None and photo.refusal not in (None, intook.refusal):  # from what Telegram declared
            await photo.source.ref.reply_text(photo.refusal.user_message(lang))
    if intook.refusal is not None:
        fresh = next((p.source.ref for p in intook.photos if p.fate is not Fate.AGAIN), group[0])
        await fresh.reply_text(intook.refusal.user_message(lang))
    if status is None:
        return
    reply = made[0]
    taken = [p for p in intook.photos if p.reply is not None]
    raced = [p for p in taken if p.fate is Fate.AGAIN and p.submitted is not None]
    if raced and len(raced) == len(taken):  # delivered twice at once: the other delivery's status stays
        with contextlib.suppress(BadRequest):
            await status.delete()
        await answer_again(bot, raced[0].submitted, lang, services, count=len(raced))
        return
    queued, waiting, dropped = intook.queued, intook.held, intook.dropped
    refused: dict[str, Message] = {}
    for photo in taken:
        if photo.fate is Fate.REFUSED and photo.refusal is not None:
            refused.setdefault(photo.refusal.user_message(lang), photo.source.ref)
    if not queued and not waiting and not dropped and refused:  # nothing taken: the status says why
        sentence = next(iter(refused))
        del refused[sentence]
        await settle(status, reply, services, sentence)
    for sentence, message in refused.items():
        await message.reply_text(sentence)
    if dropped and together:  # one reply for the whole burst: how many were taken, how many to send again
        await group[0].reply_text(
            text("backlog_full", lang, taken=intook.taken, sent=intook.taken + dropped, count=dropped)
        )
    note = "\n".join(intook.notes)
    if queued:
        await show_queued(status, queued, reply, lang, services, waiting=waiting, note=note)
    elif waiting:
        await show_backlogged(status, reply, lang, services, count=waiting)
    elif dropped:
        sentence = (intook.of(Fate.DROPPED)[0].refusal or Refused("too_many_active")).user_message(lang)
        await settle(status, reply, services, sentence)


async def show_backlogged(status: Message, reply: TelegramReply, lang: str, services: Services, *, count: int) -> None:
    """Everything of this status waits in the backlog: say so (it starts by itself; Cancel drops it)."""
    sentence = text("backlog_only", lang, count=count)
    if await services.lines.advance(line_id(reply) or "", QUEUED, sentence):
        with contextlib.suppress(BadRequest):
            await status.edit_text(sentence, reply_markup=status_cancel_markup(status.message_id, lang))


async def settle(status: Message, reply: TelegramReply, services: Services, sentence: str) -> None:
    """The status ends with `sentence` (a refusal): nothing edits it afterwards."""
    await services.lines.finish(line_id(reply) or "")
    with contextlib.suppress(BadRequest):
        await status.edit_text(sentence)


async def show_queued(
    status: Message,
    queued: list[Submitted],
    reply: TelegramReply,
    lang: str,
    services: Services,
    *,
    waiting: int = 0,
    note: str = "",
) -> None:
    """Turn the status into "Queued — #N" with a Cancel button (positions.announce_queued)."""
    sentence = await services.positions.announce_queued(queued, [reply] * len(queued), lang, waiting=waiting, note=note)
    if sentence is None:
        return
    markup = cancel_markup(reply, queued[0].task_id, lang)
    with contextlib.suppress(BadRequest):
        await status.edit_text(sentence, reply_markup=markup)
        if newer := await services.lines.overtaken(line_id(reply) or "", QUEUED):  # the notifier's edit landed first
            await status.edit_text(newer.text, reply_markup=markup)


async def on_other_media(update: Update, context: BotContext) -> None:
    """Videos, stickers, voice notes…: say what we take instead."""
    await update.effective_message.reply_text(text("not_an_image", asker_of(update, context).lang))


async def on_text(update: Update, context: BotContext) -> None:
    """Plain text: remind the user what to send."""
    await update.effective_message.reply_text(text("start", asker_of(update, context).lang))


# --- buttons -----------------------------------------------------------------------------------
async def on_button(update: Update, context: BotContext) -> None:
    """Cancel, Other mode and Compare."""
    query = update.callback_query
    button = parse(query.data or "")
    asker = asker_of(update, context)
    services = context.services
    if button is None or query.message is None:
        await query.answer()
        return
    if button.action in ("cancel", "cancel_album"):
        count = await cancel_from_button(button, query.message.chat_id, asker, services)
        await query.answer(text("cancelled_count" if count else "button_gone", asker.lang, count=count))
        if not count:  # finished, cancelled already, or not this user's: the button no longer applies here
            await retire(query)
    elif button.action == "other_mode":
        await run_other_mode(query, button, asker, services)
    elif button.action == "retry":
        await query.answer()
        await run_again(query.message, button, asker, services, press_id=query.id)
    elif button.action == "compare":
        await query.answer()
        await send_comparison(query.message, button, asker, services)
    elif button.action == "set_mode":
        await choose_mode(query.message, button.mode, asker, services, query=query)
    elif button.action == "dead_retry":
        from bots.telegram.admin_handlers import dead_retry_pressed  # admin_handlers imports this module

        await dead_retry_pressed(query, asker, services)


async def retire(query: Any) -> None:
    """Take the pressed button off its message (Telegram can't grey one out); the others stay."""
    markup = query.message.reply_markup if query.message is not None else None
    if markup is None:
        return
    rows = [[b for b in row if b.callback_data != query.data] for row in markup.inline_keyboard]
    kept = [row for row in rows if row]
    with contextlib.suppress(BadRequest):  # the message is gone, or already without it
        await query.message.edit_reply_markup(reply_markup=InlineKeyboardMarkup(kept) if kept else None)


async def cancel_from_button(button: Button, chat_id: int, asker: Asker, services: Services) -> int:
    """One task, or everything under a status message: its tasks and its photos still in the backlog."""
    if button.action == "cancel":
        return int(await services.admin.cancel(button.task_id, user=None if asker.exempt else asker.user))
    line = f"telegram:{chat_id}:{button.status_message_id}"  # what status_line.line_id names it
    task_ids = {
        *await albums.album_tasks(services.redis, chat_id, button.status_message_id),
        *await services.lines.tasks(line),
    }
    owner = (await services.lines.owner(line) if asker.exempt else None) or asker.user
    return await services.cancelling.under_status(line, task_ids, owner=owner, by_admin=asker.exempt)


async def run_again(
    result_message: Message, button: Button, asker: Asker, services: Services, press_id: str | None = None
) -> Submitted | None:
    """Queue the stored input again (Retry, or a mode chosen by Other mode), with its own status message.
    The press is an event like a photo: delivered twice, it is one task (keyed by the callback query's id)."""
    key = f"telegram:press:{press_id}" if press_id else None
    if key and (first := await services.intake.claimed(key)) is not None:
        await answer_again(result_message.get_bot(), first, asker.lang, services)
        return first
    status = await result_message.reply_text(text("received", asker.lang), do_quote=True)
    reply = TelegramReply(
        chat_id=result_message.chat_id,
        message_id=result_message.message_id,
        status_message_id=status.message_id,
        lang=asker.lang,
    )
    try:
        submitted = await services.intake.resubmit(
            button.input_key, mode=button.mode, reply=reply, user=asker.user, exempt=asker.exempt, event_key=key
        )
    except Refused as refusal:
        await settle(status, reply, services, refusal.user_message(asker.lang))
        raise
    if submitted.duplicate:
        with contextlib.suppress(BadRequest):
            await status.delete()
        await answer_again(result_message.get_bot(), submitted, asker.lang, services)
        return submitted
    await show_queued(status, [submitted], reply, asker.lang, services)
    return submitted


async def run_other_mode(query: Any, button: Button, asker: Asker, services: Services) -> None:
    """Other mode runs once per photo and mode: pressed again, it shows the first run's result."""
    try:
        mode = services.workflows.choosable_mode(button.mode)
    except Refused:  # a mode no longer offered
        await query.answer(text("button_gone", asker.lang))
        await retire(query)
        return
    await query.answer()
    if (first := await services.intake.claimed(f"telegram:press:{query.id}")) is not None:
        await answer_again(query.message.get_bot(), first, asker.lang, services)  # this press, delivered again
        return

    async def queue() -> str:
        submitted = await run_again(query.message, button, asker, services, press_id=query.id)
        return submitted.task_id if submitted else ""

    with contextlib.suppress(Refused):  # already said in its status message
        fresh, task_id = await services.reruns.run_once(button.input_key, mode.name, queue)
        if not fresh:
            await show_earlier_run(query.message, task_id, mode.label(asker.lang), asker, services)


async def show_earlier_run(message: Message, task_id: str, mode: str, asker: Asker, services: Services) -> None:
    earlier = await services.task(task_id).finished()
    data = await services.blobs.get(earlier.output) if earlier is not None and earlier.output else None
    if data is None:
        await message.reply_text(text("other_mode_running", asker.lang, mode=mode))
        return
    await message.reply_photo(
        data,
        caption=text("other_mode_done", asker.lang, mode=mode),
        reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
    )


async def send_comparison(result_message: Message, button: Button, asker: Asker, services: Services) -> None:
    """Before and after side by side, made from the stored input and output."""
    before, after = await asyncio.gather(services.blobs.get(button.input_key), services.blobs.get(button.output_key))
    if before is None or after is None:
        await result_message.reply_text(text("compare_unavailable", asker.lang))
        return
    await result_message.get_bot().send_chat_action(result_message.chat_id, ChatAction.UPLOAD_PHOTO)
    picture = await asyncio.to_thread(labelled_side_by_side, before, after, asker.lang, max_side=PHOTO_MAX_SIDE)
    await result_message.reply_photo(
        picture,
        caption=text("compare_caption", asker.lang),
        reply_parameters=ReplyParameters(result_message.message_id, allow_sending_without_reply=True),
    )


# --- commands ----------------------------------------------------------------------------------
async def start(update: Update, context: BotContext) -> None:
    """Greets the user and says what to send."""
    await update.effective_message.reply_text(text("start", asker_of(update, context).lang))


async def help_command(update: Update, context: BotContext) -> None:
    """The modes and the limits, from the settings."""
    services, asker = context.services, asker_of(update, context)
    s = services.settings
    modes = "\n".join(
        f"• {mode.label(asker.lang)}: {mode.describe(asker.lang)}" for mode in services.workflows.choosable
    )
    await update.effective_message.reply_text(
        text(
            "help",
            asker.lang,
            modes=modes,
            max_mb=min(s.max_image_bytes, BOT_API_DOWNLOAD_LIMIT) // MB,
            max_mp=max(1, s.max_image_pixels // 1_000_000),
            active=s.user_max_active,
            hourly=s.user_max_per_hour,
        )
        + ("\n\n" + text("help_admin", asker.lang) if asker.exempt else "")
    )


async def where_command(update: Update, context: BotContext) -> None:
    """/where (or /status): the place in line and the wait of each of this user's photos."""
    asker, services = asker_of(update, context), context.services
    places = await services.queue.of_user(asker.user)
    await update.effective_message.reply_text(where_lines(places, asker.lang))


async def unknown_command(update: Update, context: BotContext) -> None:
    """A command we don't have gets a short hint instead of silence."""
    command = (update.effective_message.text or "/?").split()[0].split("@")[0]
    await update.effective_message.reply_text(text("unknown_command", asker_of(update, context).lang, command=command))


async def cancel_command(update: Update, context: BotContext) -> None:
    """Cancels every queued or running photo of this user."""
    asker = asker_of(update, context)
    count = await context.services.cancelling.everything_of(asker.user)
    key = "cancelled_count" if count else "nothing_to_cancel"
    await update.effective_message.reply_text(text(key, asker.lang, count=count))


async def mode_command(update: Update, context: BotContext) -> None:
    """`/mode <name>` sets the user's default mode; `/mode` alone (or an unknown name) shows the current
    one with a button per mode users may choose, all from the manifest."""
    asker, services = asker_of(update, context), context.services
    words = " ".join(context.args or ())
    mode = services.workflows.from_words(words)
    if mode is not None:
        await choose_mode(update.effective_message, mode, asker, services)
        return
    current = services.workflows.get(await services.intake.default_mode(asker.user))
    lines = [] if not words else [text("unknown_mode", asker.lang, modes=services.workflows.labels(asker.lang))]
    lines.append(
        text("mode_usage", asker.lang, mode=current.label(asker.lang), modes=services.workflows.labels(asker.lang))
    )
    await update.effective_message.reply_text(
        "\n".join(lines), reply_markup=mode_markup(services.workflows.choosable, current.name, asker.lang)
    )


async def choose_mode(message: Message, mode: str, asker: Asker, services: Services, *, query: Any = None) -> None:
    """Set the default mode (typed or pressed); a pressed keyboard is updated to show the new choice."""
    try:
        chosen = services.workflows.choosable_mode(mode)
    except Refused as refusal:
        sentence = text(refusal.code, asker.lang, modes=services.workflows.labels(asker.lang))
        if query is not None:
            await query.answer(sentence)
        else:
            await message.reply_text(sentence)
        return
    await services.intake.set_default_mode(asker.user, chosen.name)
    sentence = text("mode_set", asker.lang, mode=chosen.label(asker.lang))
    if query is None:
        await message.reply_text(sentence)
        return
    await query.answer(sentence)
    with contextlib.suppress(BadRequest):  # unchanged when the same mode was pressed again
        await message.edit_text(
            sentence, reply_markup=mode_markup(services.workflows.choosable, chosen.name, asker.lang)
        )


# --- errors ------------------------------------------------------------------------------------
async def on_error(update: object, context: BotContext) -> None:
    """Log what failed with the update that caused it, tell the user to try again, and report it for
    the admins' alert, which carries its short, scrubbed traceback to their chats (PTB's
    errorhandlerbot pattern, rate-limited by backend.alerts)."""
    where = ""
    if isinstance(update, Update):
        user = update.effective_user
        where = f" (update {update.update_id}, user {user.id if user else '?'})"
    log.error("handler failed%s: %s", where, context.error, exc_info=context.error)
    await alerts.report_bot_error(context.services.redis, "telegram", context.error)
    if isinstance(update, Update) and update.callback_query is not None:
        with contextlib.suppress(Exception):  # stop the button's spinner
            await update.callback_query.answer()
    if isinstance(update, Update) and update.effective_chat is not None:
        lang = pick_lang(update.effective_user.language_code if update.effective_user else None)
        with contextlib.suppress(Exception):
            await context.bot.send_message(update.effective_chat.id, text("error_generic", lang))
