"""The platform and ComfyUI fakes with the extra knobs chaos needs, and how the ledger reads them.

- ChaosTelegram can hold sendPhoto's *answer* after Telegram has accepted the photo (the message is in
  the chat; the reply is in flight), so a kill in that window is a send whose outcome the notifier never
  learnt. `in_flight` counts the send requests (photo, file, message) it is handling right now.
- ChaosDiscord answers 5xx on demand (the plain fake knows 429 only).
- comfy_runs() reads, from the ComfyUI fake, how many prompts each task got.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from backend.texts import text
from tests.fakes.discord_api import APP_ID, FakeDiscord, _error
from tests.fakes.telegram_api import FakeTelegram

GENERIC_ERRORS = ("something went wrong",)
SEND_METHODS = ("sendPhoto", "sendDocument", "sendMessage")
# A result part (photo, file) answered this recently may still be on its way to the notifier, or not yet
# recorded as sent, when it is killed.
REPLY_WINDOW_S = 0.25
RESULT_PARTS = ("sendPhoto", "sendDocument")
FILE_RERUN = "-file"  # prompt_id suffix of a run repeated with SaveImage (backend/comfyui.py)
IN_PROGRESS = tuple(
    text(key, "en").split("{")[0].split("—")[0].strip()
    for key in ("received", "queued", "queued_album", "started", "progress", "retrying")
)


def gray_photo(seed: int = 0, size: tuple[int, int] = (160, 120)) -> bytes:
    """A small grayscale JPEG, different for each seed (keeps the fakes' image work cheap)."""
    image = Image.linear_gradient("L").resize(size).point(lambda v: (v + seed * 37) % 256)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# --- Telegram ---------------------------------------------------------------------------------------
class ChaosTelegram(FakeTelegram):
    """The Bot API fake, plus a delayed answer for accepted photos."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.photo_answer_delay_s = 0.0
        self.in_flight: set[object] = set()  # send requests received and not yet answered
        self.answered_at: list[float] = []  # when each result part was answered (monotonic)

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["method"] not in SEND_METHODS:
            return await super()._api(request)
        token = object()
        self.in_flight.add(token)
        try:
            return await super()._api(request)
        finally:
            self.in_flight.discard(token)
            if request.match_info["method"] in RESULT_PARTS:
                self.answered_at.append(time.monotonic())

    def replies_in_flight(self, window_s: float = REPLY_WINDOW_S) -> int:
        """Sends whose reply may not have reached the notifier: still being answered, or result parts
        answered so recently that the reply may be on the wire or not yet recorded as sent."""
        since = time.monotonic() - window_s
        return len(self.in_flight) + sum(1 for at in self.answered_at if at >= since)

    async def _m_sendPhoto(self, params: dict, files: dict) -> Any:
        result = await super()._m_sendPhoto(params, files)
        if self.photo_answer_delay_s > 0 and not isinstance(result, web.Response):
            await asyncio.sleep(self.photo_answer_delay_s)
        return result


@dataclass
class Submission:
    """One photo a fake user sent: where its answers must show up."""

    platform: str
    chat_id: int
    message_id: int = 0  # Telegram: the user's message
    token: str = ""  # Discord: the interaction token
    photo: bytes = b""


@dataclass
class Outcome:
    photos: int = 0
    documents: int = 0
    texts: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return self.photos > 0 or self.documents > 0

    @property
    def generic_error(self) -> bool:
        return any(g in t.lower() for t in self.texts for g in GENERIC_ERRORS)

    @property
    def last_text(self) -> str:
        return self.texts[-1] if self.texts else ""

    @property
    def refused(self) -> bool:
        """No result, and the last word the user got is an answer, not a progress line."""
        last = self.last_text
        return not self.delivered and bool(last) and not last.startswith(IN_PROGRESS)


def _reply_to(params: dict) -> int | None:
    reply = params.get("reply_parameters")
    if isinstance(reply, dict) and reply.get("message_id"):
        return int(reply["message_id"])
    if params.get("reply_to_message_id"):
        return int(params["reply_to_message_id"])
    return None


def telegram_outcomes(
    fake: FakeTelegram, subs: list[Submission], *, final: bool = False
) -> tuple[dict[int, Outcome], int]:
    """Per submission (keyed by the user's message id) what reached the chat, and the duplicate posts.

    Photos are matched by the message they reply to; documents (sent without a reply after the photo)
    per chat: more documents in a chat than tasks delivered there are duplicates. A text to a chat with
    several photos that replies to none of them (the bot's one answer to a burst: "I took 13 of your 20
    photos…") counts, once the run is over (`final`), for each of that chat's photos left without a result."""
    mine = {(s.chat_id, s.message_id) for s in subs if s.platform == "telegram"}
    outcomes = {mid: Outcome() for _, mid in mine}
    photos: Counter[tuple[int, int]] = Counter()
    docs_per_chat: Counter[int] = Counter()
    replies_of: dict[tuple[int, int], int] = {}  # (chat, bot message) -> the user's message it answers
    chat_texts: dict[int, list[str]] = {}  # texts to a chat with several photos, replying to none of them
    for call in fake.calls:
        if call.result is None or "chat_id" not in call.params:
            continue
        chat = int(call.params["chat_id"])
        target = _reply_to(call.params)
        if call.method in ("sendMessage", "sendPhoto", "sendDocument") and (chat, target) in mine:
            replies_of[(chat, int(call.result["message_id"]))] = target
        if call.method == "sendPhoto" and (chat, target) in mine:
            photos[(chat, target)] += 1
        elif call.method == "sendDocument":
            docs_per_chat[chat] += 1
            if (chat, target) in mine:
                outcomes[target].documents += 1
        if call.method in ("sendMessage", "editMessageText"):
            answered = (
                target if (chat, target) in mine else replies_of.get((chat, int(call.params.get("message_id") or 0)))
            )
            if call.method == "sendMessage" and answered is None:
                chat_subs = [m for c, m in mine if c == chat]
                answered = chat_subs[0] if len(chat_subs) == 1 else None
                if answered is None and chat_subs:  # one answer for a burst ("I took 13 of your 20 photos…")
                    chat_texts.setdefault(chat, []).append(str(call.params.get("text", "")))
            if answered is not None:
                outcomes[answered].texts.append(str(call.params.get("text", "")))
    for chat, texts in chat_texts.items() if final else ():
        for c, mid in mine:
            if c == chat and not photos[(chat, mid)] and not outcomes[mid].refused:
                outcomes[mid].texts.extend(texts)
    duplicates = 0
    for (_chat, mid), count in photos.items():
        outcomes[mid].photos = count
        duplicates += max(0, count - 1)
    for chat, count in docs_per_chat.items():
        chat_mids = [m for c, m in mine if c == chat]
        if len(chat_mids) == 1 and outcomes[chat_mids[0]].documents == 0:
            outcomes[chat_mids[0]].documents = count
        delivered_here = sum(1 for m in chat_mids if outcomes[m].photos > 0 or outcomes[m].documents > 0)
        duplicates += max(0, count - delivered_here)
    return outcomes, duplicates


# --- Discord ----------------------------------------------------------------------------------------
class ChaosDiscord(FakeDiscord):
    """The Discord fake, plus 5xx answers for the next matching requests."""

    def __init__(self) -> None:
        super().__init__()
        self._server_errors: list[list[Any]] = []  # [method, pattern, times, status]

    def server_error(self, method: str, path_regex: str, *, times: int = 1, status: int = 502) -> None:
        self._server_errors.append([method, re.compile(path_regex), times, status])

    def _route(self, call: Any) -> web.Response:
        for rule in self._server_errors:
            method, pattern, times, status = rule
            if times > 0 and method == call.method and pattern.fullmatch(call.path):
                rule[2] -= 1
                return _error(status, 0, f"{status}: Server Error")
        return super()._route(call)


def discord_outcomes(fake: FakeDiscord, subs: list[Submission]) -> tuple[dict[str, Outcome], int]:
    """Per interaction token: result uploads (followups with files) and texts; duplicates beyond one."""
    outcomes = {s.token: Outcome() for s in subs if s.platform == "discord"}
    for call in fake.calls:
        match = re.fullmatch(rf"/webhooks/{APP_ID}/([^/]+)(/messages/@original)?", call.path)
        if not match or match.group(1) not in outcomes or call.status >= 300:
            continue
        outcome = outcomes[match.group(1)]
        if call.files and call.method == "POST":
            outcome.photos += 1
        content = (call.json or {}).get("content") if isinstance(call.json, dict) else None
        if content:
            outcome.texts.append(str(content))
    duplicates = sum(max(0, o.photos - 1) for o in outcomes.values())
    return outcomes, duplicates


# --- ComfyUI ----------------------------------------------------------------------------------------
def comfy_runs(fake: Any, prompt_tasks: dict[str, str]) -> tuple[int, Counter[str]]:
    """All prompts ComfyUI was given, and how many of them each task had (prompts whose task could not
    be told, e.g. written into a Redis that was then emptied, are left out of the per-task count)."""
    runs: Counter[str] = Counter()
    for pid in fake.prompts:
        base = pid.removesuffix(FILE_RERUN)  # the worker's second run when the socket lost the image
        if base in prompt_tasks:
            runs[prompt_tasks[base]] += 1
    return len(fake.prompts), runs
