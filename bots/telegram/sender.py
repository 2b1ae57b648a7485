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
from typing import Any, Awaitable, Callable, Iterator

from redis.asyncio import Redis
from telegram import InlineKeyboardMarkup, ReplyParameters
from telegram.error import (
    BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError,
)
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from backend import images
from backend.blobs import BlobStore
from backend.delivery import PartStore, SendParts
from backend.errors import RepairError
from backend.notifier import SendPermanent, SendRetry
from backend.redis_conn import connect
from backend.settings import Settings
from backend.tasks import Event, Result, user_lang
from backend.texts import text
from backend.workflows import Workflows
from bots.telegram.albums import finish_album_item
from bots.telegram.keyboards import cancel_markup, result_markup
from bots.telegram.ratelimit import NO_RETRY, FloodAwareRateLimiter, retry_after_seconds

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 3.0
GROUP_SLOWDOWN = 3  # group chats: one progress edit per 9 s leaves room for the results
DOCUMENT_MAX_BYTES = 50 * 1024 * 1024  # Bot API upload limit for sendDocument
PNG_MAGIC = b"\x89PNG"
EVENT_TEXT_KEYS = {"started": "started", "progress": "progress", "retrying": "retrying"}


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
    return HTTPXRequest(connection_pool_size=32, pool_timeout=30, read_timeout=30, write_timeout=120,
                        media_write_timeout=120)


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
    """Sends a Result as photo + document (or a sentence), and Events as status-message edits.

    :param bot: an ExtBot with a FloodAwareRateLimiter
    :param redis: where the bot keeps which tasks share an album's status message
    :param parts: where each result's sent parts are recorded (default: in `redis`)
    :param progress_every_s: the least time between two progress edits in one chat
    """

    def __init__(self, bot: ExtBot, blobs: BlobStore, redis: Redis, *, progress_every_s: float = PROGRESS_EVERY_S,
                 owns_redis: bool = False, workflows: Workflows | None = None, parts: PartStore | None = None):
        self.bot = bot
        self.workflows = workflows  # mode labels and the other modes to offer; names only when absent
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
        reply = result.reply
        lang = user_lang(reply)
        with as_send_errors():
            note = ""
            if result.status == "ok":
                data = await self.blobs.get(result.output)
                if data is None:
                    note = text("output_expired", lang)
                else:
                    try:
                        await self._post_image(result, data, lang, parts)
                    except RepairError:  # the image could not be made to fit an upload
                        note = text("output_invalid", lang)
            elif result.status == "cancelled":
                note = text("cancelled", lang)
            else:
                note = result.message or text(result.error or "internal", lang)  # the worker's, in this language
            await self._settle_status(result, note, lang, parts)

    async def _post_image(self, result: Result, data: bytes, lang: str, parts: SendParts) -> None:
        """The colorized photo with caption and buttons, then the full-resolution file."""
        reply = result.reply
        known = self.workflows is not None and result.mode in self.workflows
        mode_name = self.workflows.get(result.mode).label(lang) if known else result.mode
        caption = text("result_caption", lang, mode=mode_name, seconds=round(result.run_ms / 1000, 1))
        others = self.workflows.others(result.mode) if self.workflows is not None else []
        markup = result_markup(result.input, result.output, lang, others)
        document = await asyncio.to_thread(images.fit_for_upload, data, max_bytes=DOCUMENT_MAX_BYTES)
        shrunk_note = text("downscaled_note", lang) if document is not data else None
        extension = "png" if document.startswith(PNG_MAGIC) else "jpg"
        filename = f"colorized-{result.task_id[:8]}.{extension}"
        replying = _reply_to(reply)
        photo_sent = parts.sent("photo")
        if not photo_sent and not parts.sent("photo-refused") and await asyncio.to_thread(images.telegram_photo_ok,
                                                                                           data):
            await parts.sending("photo")
            try:
                await self.bot.send_photo(reply["chat_id"], data, caption=caption, reply_markup=markup,
                                          reply_parameters=replying)
                await parts.done("photo")
                photo_sent = True
            except BadRequest as exc:  # Telegram would not take it as a photo after all
                if chat_unreachable(exc):
                    raise
                log.info("photo for %s refused (%s); sending the file only", result.task_id, exc)
                await parts.done("photo-refused")
        if parts.sent("document"):
            return
        await parts.sending("document")
        if photo_sent:
            await self.bot.send_document(reply["chat_id"], document, filename=filename, caption=shrunk_note)
        else:
            full_caption = caption if shrunk_note is None else f"{caption}\n{shrunk_note}"
            await self.bot.send_document(reply["chat_id"], document, filename=filename, caption=full_caption,
                                         reply_markup=markup, reply_parameters=replying)
        await parts.done("document")

    async def _settle_status(self, result: Result, note: str, lang: str, parts: SendParts) -> None:
        """Single photo: delete the status message (or say why there is no image in it).
        Album: failures get their own message; the status goes when the last photo is in."""
        reply = result.reply
        chat_id, status_id = reply["chat_id"], reply.get("status_message_id")
        if reply.get("album") and status_id:
            if note and result.status == "failed":
                await self._once(parts, "note", self.bot.send_message(chat_id, note, reply_parameters=_reply_to(reply)))
            if await finish_album_item(self.redis, chat_id, status_id, result.task_id) == 0:
                final = text("cancelled", lang) if result.status == "cancelled" else ""
                await self._once(parts, "status", self._close_status(chat_id, status_id, final or None, lang))
            return
        if status_id:
            await self._once(parts, "status", self._close_status(chat_id, status_id, note or None, lang))
        elif note:
            await self._once(parts, "note", self.bot.send_message(chat_id, note, reply_parameters=_reply_to(reply)))

    @staticmethod
    async def _once(parts: SendParts, part: str, request: Awaitable[Any]) -> None:
        """Run `request` unless this part went out in an earlier try, recording it around the call."""
        if parts.sent(part):
            request.close()  # type: ignore[attr-defined]  # a coroutine never awaited
            return
        await parts.sending(part)
        await request
        await parts.done(part)

    async def _close_status(self, chat_id: Any, status_id: Any, note: str | None, lang: str) -> None:
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
            await self.bot.edit_message_text(note, chat_id=chat_id, message_id=status_id)
        except BadRequest as exc:  # the status is gone: say it in a new message
            if "not modified" not in str(exc).lower():
                await self.bot.send_message(chat_id, note)

    # --- progress ------------------------------------------------------------------------------
    async def send_event(self, event: Event) -> None:
        """Edit the status message with progress, unless too soon for this chat or rate-limited."""
        reply = event.reply
        status_id = reply.get("status_message_id")
        if not status_id or self._rate_limited():
            return
        chat_id = reply["chat_id"]
        if not await self._edit_allowed(chat_id):
            return
        lang = user_lang(reply)
        message = text(EVENT_TEXT_KEYS[event.state], lang, percent=event.percent)
        markup: InlineKeyboardMarkup = cancel_markup(reply, event.task_id, lang)
        try:
            await self.bot.edit_message_text(message, chat_id=chat_id, message_id=status_id, reply_markup=markup,
                                             rate_limit_args=NO_RETRY)
        except BadRequest as exc:  # the status is gone (result delivered) or already says this
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
        if interval <= 0:
            return True
        return bool(await self.redis.set(f"repairbot:telegram:progress:{chat_id}", "1", nx=True,
                                         px=max(1, int(interval * 1000))))


def _reply_to(reply: dict[str, Any]) -> ReplyParameters | None:
    message_id = reply.get("message_id")
    return ReplyParameters(int(message_id), allow_sending_without_reply=True) if message_id else None


def build_sender(settings: Settings, blobs: BlobStore, *, overall_max_rate: float = 30, group_max_rate: float = 20,
                 max_retries: int = 0, progress_every_s: float = PROGRESS_EVERY_S) -> TelegramSender:
    """The sender `repairbot notifier` registers for platform "telegram".

    `max_retries` 0: a 429 goes back to the notifier as SendRetry at once. PTB's own retry would sleep
    inside the send and hold every other chat's requests meanwhile."""
    limiter = FloodAwareRateLimiter(overall_max_rate=overall_max_rate, group_max_rate=group_max_rate,
                                    max_retries=max_retries)
    redis = connect(settings)
    return TelegramSender(make_bot(settings, limiter), blobs, redis, progress_every_s=progress_every_s,
                          owns_redis=True, workflows=Workflows.load(settings.workflows_dir),
                          parts=PartStore(redis, ttl_s=settings.delivered_ttl_s))
