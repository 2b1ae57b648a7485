"""The notifier's Telegram side: results and progress back into the chat each photo came from.

It needs only a Bot (no polling in the notifier process). Flood pacing is PTB's AIORateLimiter, but a
429 is not slept through inside it (that would pause every chat): it becomes SendRetry with the
platform's retry-after, which the notifier waits out in that chat's own queue. A chat that is gone
or blocked us is SendPermanent, a network hiccup is SendRetry. Progress edits are lossy: at most one
per chat every few seconds, none while rate-limited; results always go out.

A result is several parts (photo, file, status edit or note). Each is recorded in Redis before its
request and after its reply (`backend.delivery`), so a retry, or a notifier restarted after a kill,
skips what went out and re-sends at most the part whose reply was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio import Redis
from telegram import InlineKeyboardMarkup, InputMediaDocument, InputMediaPhoto, ReplyParameters
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from backend import images
from backend.albums import NOT_QUEUED, album_tasks, finish_album_item
from backend.blobs import BlobStore
from backend.delivery import PartStore, SendParts
from backend.errors import RepairError
from backend.notifier import SendPermanent, SendRetry
from backend.platform_marks import progress_edit_allowed
from backend.redis_conn import connect
from backend.replies import Reply, TelegramReply, user_lang
from backend.reruns import retry_offers
from backend.settings import Settings
from backend.status_line import SENDING, StatusLines, known_run_s, line_id, render_event
from backend.stored_results import stored_results
from backend.tasks import Event, Result
from backend.texts import text
from backend.workflows import Workflows
from bots.telegram.keyboards import album_markup, cancel_markup, failure_markup, result_markup
from bots.telegram.photos import photo_ok, would_be_compressed
from bots.telegram.ratelimit import NO_RETRY, FloodAwareRateLimiter, retry_after_seconds

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 3.0
GROUP_SLOWDOWN = 3  # group chats: one progress edit per 9 s leaves room for the results
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024  # Bot API upload limit for sendDocument
PNG_MAGIC = b"\x89PNG"


def make_bot(settings: Settings, limiter: FloodAwareRateLimiter | None = None) -> ExtBot:
    """A Bot pointed at settings' Bot API, with timeouts that allow big uploads."""
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    return ExtBot(
        token=settings.telegram_bot_token.get_secret_value(),
        base_url=settings.telegram_api_base,
        base_file_url=settings.telegram_file_base,
        request=upload_request(),
        rate_limiter=limiter,
    )


def upload_request() -> HTTPXRequest:
    """Room for many concurrent downloads and uploads; waiting for a free connection is not a failure."""
    return HTTPXRequest(
        connection_pool_size=32, pool_timeout=30, read_timeout=30, write_timeout=120, media_write_timeout=120
    )


async def initialize_bot(initialize: Callable[[], Awaitable[None]]) -> None:
    """`initialize()` (getMe) with the token kept out of the error: PTB's InvalidToken message quotes it."""
    try:
        await initialize()
    except InvalidToken:
        raise InvalidToken("Telegram rejected the bot token: check TELEGRAM_BOT_TOKEN and TELEGRAM_API_BASE") from None


UNREACHABLE = ("chat not found", "user not found", "bot was blocked", "not enough rights", "have no rights")


def chat_unreachable(exc: BadRequest) -> bool:
    """A BadRequest about the chat itself, not about what we sent."""
    return any(phrase in str(exc).lower() for phrase in UNREACHABLE)


@contextlib.contextmanager
def as_send_errors() -> Iterator[None]:
    """Turn PTB's errors into what the notifier should do next."""
    try:
        yield
    except RetryAfter as exc:
        raise SendRetry(f"rate limited: {exc}", after_s=retry_after_seconds(exc)) from exc
    except Forbidden as exc:  # blocked by the user, kicked from the group
        raise SendPermanent(f"forbidden: {exc}") from exc
    except ChatMigrated as exc:
        raise SendPermanent(f"chat moved to {exc.new_chat_id}") from exc
    except BadRequest as exc:  # "chat not found" and every other request Telegram will refuse again
        raise SendPermanent(f"bad request: {exc}") from exc
    except NetworkError as exc:  # includes TimedOut
        raise SendRetry(f"network: {exc}") from exc


class TelegramSender:
    """Sends a Result as the photo (the file as well when needed), an album's as one media group, a
    failure as a sentence with Retry; Events as status-message edits through the status line.

    :param bot: an ExtBot with a FloodAwareRateLimiter
    :param redis: where the bot keeps which tasks share an album's status message
    :param parts: where each result's sent parts are recorded (default: in `redis`)
    :param progress_every_s: the least time between two progress edits in one chat
    """

    def __init__(
        self,
        bot: ExtBot,
        blobs: BlobStore,
        redis: Redis,
        *,
        progress_every_s: float = PROGRESS_EVERY_S,
        owns_redis: bool = False,
        workflows: Workflows | None = None,
        parts: PartStore | None = None,
    ):
        self.bot = bot
        self.workflows = workflows  # mode labels and the other modes to offer; names only when absent
        self.lines = StatusLines(redis)
        self.blobs = blobs
        self.redis = redis
        self.parts = parts or PartStore(redis)
        self.progress_every_s = progress_every_s
        self._owns_redis = owns_redis

    async def start(self) -> None:
        await initialize_bot(self.bot.initialize)

    async def close(self) -> None:
        await self.bot.shutdown()
        if self._owns_redis:
            await self.redis.aclose()

    async def send_admin_alert(self, message: str, admin_ids: list[int]) -> int:
        """An operations alert (backend.alerts) to each admin's private chat; how many got it."""
        reached = 0
        for admin in admin_ids:
            try:
                await self.bot.send_message(admin, message)
                reached += 1
            except TelegramError as exc:
                log.warning("alert not delivered to Telegram admin %s: %s", admin, exc)
        return reached

    # --- results -------------------------------------------------------------------------------
    async def send_result(self, result: Result) -> None:
        parts = await self.parts.parts(result.task_id)
        try:
            await self._send_result(result, parts)
        except SendPermanent:
            await parts.forget()  # not retried as it stands; a DLQ retry starts afresh
            raise

    async def _send_result(self, result: Result, parts: SendParts) -> None:
        reply = telegram_reply(result.reply)
        lang = user_lang(reply)
        with as_send_errors():
            note = ""
            if reply.album and reply.status_message_id:
                await self._album_result(result, lang, parts)
                return
            if reply.burst and reply.status_message_id:
                await self._burst_result(result, lang, parts)
                return
            if result.status == "ok":
                data = await self.blobs.get(result.output)
                if data is None:
                    note = text("output_expired", lang)
                else:
                    await self._show_sending(reply, lang)
                    try:
                        await self._post_image(result, data, lang, parts)
                    except RepairError:  # the image could not be made to fit an upload
                        note = text("output_invalid", lang)
            elif result.status == "cancelled":
                note = text("cancelled", lang)
            else:
                note = result.message or text(result.error or "internal", lang)  # the worker's, in this language
            await self._settle_status(result, note, lang, parts)

    def _caption(self, result: Result, lang: str, *, count: int = 1) -> str:
        """ "Colorized (person) in 13 s": the time the user waited, not only the colorizing."""
        known = self.workflows is not None and result.mode in self.workflows
        mode_name = self.workflows.get(result.mode).label(lang) if known else result.mode
        total = round((result.queued_ms + result.run_ms) / 1000, 1)
        key = "result_caption_album" if count > 1 else "result_caption"
        return text(key, lang, mode=mode_name, seconds=total, run=round(result.run_ms / 1000, 1), count=count)

    async def _post_image(self, result: Result, data: bytes, lang: str, parts: SendParts) -> None:
        """The colorized photo with caption and buttons; the full-resolution file as well only when the
        photo came as a file or Telegram would compress (or refuse) the picture as a photo."""
        reply = telegram_reply(result.reply)
        caption = self._caption(result, lang)
        others = self.workflows.others(result.mode) if self.workflows is not None else []
        markup = result_markup(result.input, result.output, lang, others)
        replying = _reply_to(reply)
        fits = await asyncio.to_thread(photo_ok, data)
        as_file = bool(reply.as_file) or not fits or await asyncio.to_thread(would_be_compressed, data)
        photo_sent = parts.sent("photo")
        if not photo_sent and not parts.sent("photo-refused") and fits:
            await parts.sending("photo")
            try:
                await self.bot.send_photo(
                    reply.chat_id, data, caption=caption, reply_markup=markup, reply_parameters=replying
                )
                await parts.done("photo")
                photo_sent = True
            except BadRequest as exc:  # Telegram would not take it as a photo after all
                if chat_unreachable(exc):
                    raise
                log.info("photo for %s refused (%s); sending the file only", result.task_id, exc)
                await parts.done("photo-refused")
        if parts.sent("photo-refused"):
            as_file = True
        if parts.sent("document") or not as_file:
            return
        document, filename, shrunk_note = await self._as_document(result, data, lang)
        await parts.sending("document")
        if photo_sent:
            await self.bot.send_document(reply.chat_id, document, filename=filename, caption=shrunk_note)
        else:
            full_caption = caption if shrunk_note is None else f"{caption}\n{shrunk_note}"
            await self.bot.send_document(
                reply.chat_id,
                document,
                filename=filename,
                caption=full_caption,
                reply_markup=markup,
                reply_parameters=replying,
            )
        await parts.done("document")

    async def _as_document(self, result: Result, data: bytes, lang: str) -> tuple[bytes, str, str | None]:
        """The file to upload (shrunk only past the Bot API's 50 MB), its name, and a note if shrunk."""
        document = await asyncio.to_thread(images.fit_for_upload, data, max_bytes=DOCUMENT_MAX_BYTES)
        shrunk_note = text("downscaled_note", lang) if document is not data else None
        extension = "png" if document.startswith(PNG_MAGIC) else "jpg"
        return document, f"colorized-{result.task_id[:8]}.{extension}", shrunk_note

    async def _album_result(self, result: Result, lang: str, parts: SendParts) -> None:
        """A failure in an album gets its own message (with Retry) at once; the photos wait for the
        album's last result and go out together as one media group, then the status goes."""
        reply = telegram_reply(result.reply)
        chat_id, status_id = reply.chat_id, reply.status_message_id
        if result.status == "failed":
            await self._post_note(result, result.message or text(result.error or "internal", lang), lang, parts)
        if await finish_album_item(self.redis, chat_id, status_id, result.task_id) != 0:
            return
        await self._show_sending(reply, lang)
        posted = 0
        try:
            posted = await self._post_album(result, lang, parts)
        except RepairError:
            await self._once(
                parts,
                "note-invalid",
                self.bot.send_message(chat_id, text("output_invalid", lang), reply_parameters=_reply_to(reply)),
            )
        await self.lines.finish(line_id(reply) or "")
        cancelled = not posted and result.status == "cancelled" and result.error != NOT_QUEUED
        await self._once(
            parts,
            "status",
            self._close_status(chat_id, status_id, text("cancelled", lang) if cancelled else None, lang),
        )

    async def _burst_result(self, result: Result, lang: str, parts: SendParts) -> None:
        """One of several photos sent one by one under one status: its result (or failure) at once, as
        its own reply; the shared status goes with the last."""
        reply = telegram_reply(result.reply)
        chat_id, status_id = reply.chat_id, reply.status_message_id
        note = ""
        if result.status == "ok":
            data = await self.blobs.get(result.output)
            if data is None:
                note = text("output_expired", lang)
            else:
                try:
                    await self._post_image(result, data, lang, parts)
                except RepairError:
                    note = text("output_invalid", lang)
        elif result.status == "failed":
            note = result.message or text(result.error or "internal", lang)
        if note:
            await self._post_note(result, note, lang, parts)
        if await finish_album_item(self.redis, chat_id, status_id, result.task_id) != 0:
            return
        await self.lines.finish(line_id(reply) or "")
        final = text("cancelled", lang) if result.status == "cancelled" and result.error != NOT_QUEUED else None
        await self._once(parts, "status", self._close_status(chat_id, status_id, final, lang))

    async def _post_note(self, result: Result, note: str, lang: str, parts: SendParts) -> None:
        """Why one photo of several has no image, as its own reply (with Retry under a failure)."""
        reply = telegram_reply(result.reply)
        markup = self._failure_markup(result, lang)
        request = self.bot.send_message(reply.chat_id, note, reply_parameters=_reply_to(reply), reply_markup=markup)
        await self._once(parts, "note", request)

    async def _post_album(self, last: Result, lang: str, parts: SendParts) -> int:
        """Every colorized photo of the album as ONE media group, in the order they were sent, one caption;
        the full-resolution files as a second group when the photos came as files or would be compressed."""
        reply = telegram_reply(last.reply)
        task_ids = sorted(
            {
                *await album_tasks(self.redis, reply.chat_id, reply.status_message_id),
                *await self.lines.tasks(line_id(reply) or ""),
            }
        )  # the latter has backlogged ones
        results = {r.task_id: r for r in await stored_results(self.redis, task_ids)}
        results[last.task_id] = last
        pictures: list[tuple[Result, bytes]] = []
        for result in sorted(results.values(), key=lambda r: int(telegram_reply(r.reply).message_id or 0)):
            data = await self.blobs.get(result.output) if result.status == "ok" else None
            if data is not None:
                pictures.append((result, data))
        pictures = pictures[:10]  # a media group holds at most ten; an album has at most ten anyway
        if len(pictures) <= 1:
            if pictures:
                await self._post_image(pictures[0][0], pictures[0][1], lang, parts)
            return len(pictures)
        slowest = max(pictures, key=lambda p: p[0].queued_ms + p[0].run_ms)[0]
        caption = self._caption(slowest, lang, count=len(pictures))
        fits = [await asyncio.to_thread(photo_ok, data) for _, data in pictures]
        compressed = [await asyncio.to_thread(would_be_compressed, data) for _, data in pictures]
        as_files = bool(reply.as_file) or not all(fits) or any(compressed)
        if all(fits) and not parts.sent("album"):
            media = [InputMediaPhoto(data, caption=caption if i == 0 else None) for i, (_, data) in enumerate(pictures)]
            await parts.sending("album")
            await self.bot.send_media_group(reply.chat_id, media, reply_parameters=_reply_to(pictures[0][0].reply))
            await parts.done("album")
        if as_files and not parts.sent("album-files"):
            await self._post_album_files(pictures, caption if not all(fits) else None, lang, parts)
        await self._post_album_buttons(pictures, lang, parts)
        return len(pictures)

    async def _post_album_files(
        self, pictures: list[tuple[Result, bytes]], caption: str | None, lang: str, parts: SendParts
    ) -> None:
        """The album's full-resolution files as a second media group."""
        documents = []
        for i, (result, data) in enumerate(pictures):
            document, filename, _ = await self._as_document(result, data, lang)
            documents.append(InputMediaDocument(document, filename=filename, caption=caption if i == 0 else None))
        await parts.sending("album-files")
        await self.bot.send_media_group(telegram_reply(pictures[0][0].reply).chat_id, documents)
        await parts.done("album-files")

    async def _post_album_buttons(self, pictures: list[tuple[Result, bytes]], lang: str, parts: SendParts) -> None:
        """Other mode and Compare for each photo of the album, numbered, in one message after the group
        (a media group can't carry buttons)."""
        numbered = [
            (n, result.input, result.output, self.workflows.others(result.mode) if self.workflows is not None else [])
            for n, (result, _) in enumerate(pictures, start=1)
        ]
        markup = album_markup(numbered, lang)
        if markup is None:
            return
        first = telegram_reply(pictures[0][0].reply)
        await self._once(
            parts,
            "album-buttons",
            self.bot.send_message(
                first.chat_id, text("album_buttons", lang), reply_markup=markup, reply_parameters=_reply_to(first)
            ),
        )

    async def _settle_status(self, result: Result, note: str, lang: str, parts: SendParts) -> None:
        """Delete the status message, or say in it why there is no image (with Retry under a failure)."""
        reply = telegram_reply(result.reply)
        chat_id, status_id = reply.chat_id, reply.status_message_id
        markup = self._failure_markup(result, lang)
        if status_id:
            await self.lines.finish(line_id(reply) or "")  # no progress edit after this one
            await self._once(parts, "status", self._close_status(chat_id, status_id, note or None, lang, markup=markup))
        elif note:
            await self._once(
                parts,
                "note",
                self.bot.send_message(chat_id, note, reply_parameters=_reply_to(reply), reply_markup=markup),
            )

    def _failure_markup(self, result: Result, lang: str) -> InlineKeyboardMarkup | None:
        """Retry under a failure, and the other modes when another mode could help."""
        if result.status != "failed" or not result.input:
            return None
        retry, other_modes = retry_offers(result.error)
        others = self.workflows.others(result.mode) if other_modes and self.workflows is not None else []
        return failure_markup(result.input, result.mode if retry else "", lang, others)

    async def _show_sending(self, reply: TelegramReply, lang: str) -> None:
        """ "Sending your photo…" while the upload runs (forward only: never over a finished status)."""
        line = line_id(reply)
        message = text("sending", lang)
        if line is None or not await self.lines.advance(line, SENDING, message):
            return
        with contextlib.suppress(TelegramError):  # lossy, like progress
            await self.bot.edit_message_text(
                message, chat_id=reply.chat_id, message_id=reply.status_message_id, rate_limit_args=NO_RETRY
            )

    @staticmethod
    async def _once(parts: SendParts, part: str, request: Awaitable[Any]) -> None:
        """Run `request` unless this part went out in an earlier try, recording it around the call."""
        if parts.sent(part):
            request.close()  # type: ignore[attr-defined]  # a coroutine never awaited
            return
        await parts.sending(part)
        await request
        await parts.done(part)

    async def _close_status(
        self, chat_id: Any, status_id: Any, note: str | None, lang: str, *, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        """Replace the status with `note`, or delete it (turning it into "Done." if it can't go)."""
        if note is None:
            try:
                await self.bot.delete_message(chat_id, status_id)
            except BadRequest as exc:
                if "not found" in str(exc).lower():  # the user deleted it already: nothing left to tidy
                    return
                with contextlib.suppress(BadRequest):
                    await self.bot.edit_message_text(text("done", lang), chat_id=chat_id, message_id=status_id)
            return
        try:
            await self.bot.edit_message_text(note, chat_id=chat_id, message_id=status_id, reply_markup=markup)
        except BadRequest as exc:  # the status is gone: say it in a new message
            if "not modified" not in str(exc).lower():
                await self.bot.send_message(chat_id, note, reply_markup=markup)

    # --- progress ------------------------------------------------------------------------------
    async def send_event(self, event: Event) -> None:
        """Edit the status message, only forward and only when its text changes. A new stage shows at
        once; a refresh within the stage (place in line, elapsed time) waits for this chat's turn.
        Nothing while rate-limited: the next event or refresh brings the status up to date."""
        reply = telegram_reply(event.reply)
        line = line_id(reply)
        if line is None or self._rate_limited():
            return
        chat_id = reply.chat_id
        lang = user_lang(reply)
        current = await self.lines.current(line)
        stage, message = render_event(event, current, await known_run_s(self.redis), lang)
        if current is not None and (stage < current.stage or message == current.text):
            return
        allowed = await self._edit_allowed(chat_id)  # a new stage shows anyway, and starts the interval
        if current is not None and stage == current.stage and not allowed:
            return
        if not await self.lines.advance(line, stage, message):  # another notifier moved it meanwhile
            return
        markup: InlineKeyboardMarkup = cancel_markup(reply, event.task_id, lang)
        try:
            await self.bot.edit_message_text(
                message,
                chat_id=chat_id,
                message_id=reply.status_message_id,
                reply_markup=markup,
                rate_limit_args=NO_RETRY,
            )
        except BadRequest as exc:  # the status is gone (the user deleted it)
            log.debug("progress edit for %s skipped: %s", event.task_id, exc)
        except TelegramError as exc:
            log.info("progress edit for %s not shown: %s", event.task_id, exc)

    def _rate_limited(self) -> bool:
        limiter = self.bot.rate_limiter
        return isinstance(limiter, FloodAwareRateLimiter) and limiter.is_limited()

    async def _edit_allowed(self, chat_id: Any) -> bool:
        """At most one progress edit per chat per interval, shared by every notifier process (a Redis key
        that expires). Groups get a longer interval: Telegram allows a bot about 20 messages a minute there."""
        interval = self.progress_every_s * (GROUP_SLOWDOWN if int(chat_id) < 0 else 1)
        return await progress_edit_allowed(self.redis, chat_id, interval_s=interval)


def telegram_reply(reply: Reply) -> TelegramReply:
    """The notifier routes by platform, so anything else here is a wiring mistake: never retried."""
    if not isinstance(reply, TelegramReply):
        raise SendPermanent(f"a {reply.platform} reply channel reached the Telegram sender")
    return reply


def _reply_to(reply: Reply) -> ReplyParameters | None:
    message_id = telegram_reply(reply).message_id
    return ReplyParameters(int(message_id), allow_sending_without_reply=True) if message_id else None


def build_sender(
    settings: Settings,
    blobs: BlobStore,
    *,
    overall_max_rate: float = 30,
    group_max_rate: float = 20,
    max_retries: int = 0,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> TelegramSender:
    """The sender `repairbot notifier` registers for platform "telegram".

    `max_retries` 0: a 429 goes back to the notifier as SendRetry at once. PTB's own retry would sleep
    inside the send and hold every other chat's requests meanwhile."""
    limiter = FloodAwareRateLimiter(
        overall_max_rate=overall_max_rate, group_max_rate=group_max_rate, max_retries=max_retries
    )
    redis = connect(settings)
    return TelegramSender(
        make_bot(settings, limiter),
        blobs,
        redis,
        progress_every_s=progress_every_s,
        owns_redis=True,
        workflows=Workflows.load(settings.workflows_dir),
        parts=PartStore(redis, ttl_s=settings.delivered_ttl_s),
    )
