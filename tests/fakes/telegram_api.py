"""A Bot API fake on a loopback port: the real python-telegram-bot talks to it as to Telegram.

It records every call with its decoded parameters and uploaded bytes, serves `getUpdates` as a long
poll fed by `push_update`, stores files for `getFile` and their download, answers 429 (or any error)
on demand, and can POST an update to a bot's webhook with a chosen secret token.

Like Telegram, it keeps every chat's messages (the bot's and the users') and refuses what the real
Bot API refuses, with its exact descriptions: editing or deleting a message that isn't there, an edit
that changes nothing, callback_data over 64 bytes, text over 4096 or a caption over 1024 characters,
getFile for a file over 20 MB.

Run by hand: `python -m tests.fakes.telegram_api [port]` prints the base URLs to put in
TELEGRAM_API_BASE / TELEGRAM_FILE_BASE.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

BOT_USER = {
    "id": 777000,
    "is_bot": True,
    "first_name": "RepairBot",
    "username": "repair_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
MAX_UPLOAD = 64 * 1024 * 1024
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_GETFILE_BYTES = 20 * 1024 * 1024

EDIT_NOT_FOUND = "Bad Request: message to edit not found"
DELETE_NOT_FOUND = "Bad Request: message to delete not found"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
CANT_EDIT = "Bad Request: message can't be edited"
NO_TEXT_TO_EDIT = "Bad Request: there is no text in the message to edit"
BUTTON_DATA_INVALID = "Bad Request: BUTTON_DATA_INVALID"
TEXT_TOO_LONG = "Bad Request: message is too long"
TEXT_EMPTY = "Bad Request: message text is empty"
CAPTION_TOO_LONG = "Bad Request: message caption is too long"
FILE_TOO_BIG = "Bad Request: file is too big"


@dataclass
class Call:
    """One Bot API request as the fake received it."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    result: Any = None  # what the fake answered (a Message for the send methods)
    at: float = field(default_factory=time.monotonic)  # when it arrived, for transcripts with timings

    def __getitem__(self, name: str) -> Any:
        return self.params[name]


@dataclass
class Failure:
    """An error the fake answers instead of success for the next matching call."""

    status: int
    description: str
    retry_after: float | None = None


class FakeTelegram:
    """In-process Bot API. Tests push updates and assert on `calls`."""

    def __init__(self, token: str = "123:TEST", *, port: int = 0):
        self.token = token
        self.port = port
        self.calls: list[Call] = []
        self.files: dict[str, bytes] = {}
        self.file_sizes: dict[str, int] = {}  # the size Telegram knows, which may differ from the stored bytes
        self.download_delays: dict[str, float] = {}  # file_id -> seconds its download takes (a slow big file)
        self.chats: dict[int, dict[int, dict[str, Any]]] = {}  # chat id -> message id -> live message
        self.deleted: dict[int, set[int]] = {}  # chat id -> ids of messages that were deleted
        self.failures: dict[str, list[Failure]] = {}
        self.webhook: dict[str, Any] | None = None
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=MAX_UPLOAD)
        app.router.add_post("/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._closing = True
        async with self._arrived:
            self._arrived.notify_all()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # --- what tests use ----------------------------------------------------------------------------
    def add_file(self, data: bytes, name: str = "photo.jpg", *, size: int | None = None) -> str:
        """Store bytes for getFile/download; `size` is the size Telegram reports (default: len(data))."""
        file_id = f"F{len(self.files) + 1}"
        self.files[file_id] = data
        self.file_sizes[file_id] = len(data) if size is None else size
        return file_id

    def next_message_id(self) -> int:
        """A message id no other message in the fake has (users' and the bot's share one sequence)."""
        return next(self._message_ids)

    def message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        """The message as it is now, or None if it never existed or was deleted."""
        return self.chats.get(int(chat_id), {}).get(int(message_id))

    def bot_message(self, chat_id: int, text: str = "status", reply_markup: dict[str, Any] | None = None) -> int:
        """A message the bot sent earlier (e.g. a status to edit); returns its message_id."""
        params = {"chat_id": chat_id, "reply_markup": reply_markup}
        return self._sent(params, text=text)["message_id"]

    def was_deleted(self, chat_id: int, message_id: int) -> bool:
        return int(message_id) in self.deleted.get(int(chat_id), set())

    async def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is added); a user's message joins its chat."""
        update = {"update_id": next(self._update_ids), **update}
        if "message" in update:
            self._store(update["message"])
        async with self._arrived:
            self._updates.append(update)
            self._arrived.notify_all()
        return update

    def fail_next(
        self,
        method: str,
        status: int = 429,
        description: str = "Too Many Requests: retry later",
        *,
        retry_after: float | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with an error (429 + retry_after by default)."""
        self.failures.setdefault(method, []).extend(Failure(status, description, retry_after) for _ in range(times))

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Poll until `predicate()` is truthy; returns its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting; calls so far: {[c.method for c in self.calls]}")
            await asyncio.sleep(0.02)

    async def wait_call(self, method: str, count: int = 1, timeout: float = 15.0) -> list[Call]:
        return await self.wait_for(lambda: len(self.calls_to(method)) >= count and self.calls_to(method), timeout)

    async def post_webhook(self, update: dict[str, Any], *, secret: str | None) -> int:
        """Deliver an update to the registered webhook as Telegram would; returns the HTTP status."""
        assert self.webhook is not None, "no webhook set"
        update = {"update_id": next(self._update_ids), **update}
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with aiohttp.ClientSession() as session:
            async with session.post(self.webhook["url"], json=update, headers=headers) as response:
                return response.status

    # --- HTTP side ---------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params, files = await _decode(request)
        call = Call(method, params, files)
        self.calls.append(call)
        pending = self.failures.get(method)
        if pending:
            failure = pending.pop(0)
            return _error(failure.status, failure.description, failure.retry_after)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        result = await handler(params, files)
        if isinstance(result, web.Response):
            return result
        call.result = result
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["path"].rsplit("/", 1)[-1]
        data = self.files.get(file_id)
        if data is None or request.match_info["token"] != self.token:
            return web.Response(status=404)
        await asyncio.sleep(self.download_delays.get(file_id, 0.0))
        return web.Response(body=data)

    # --- methods -----------------------------------------------------------------------------------
    async def _m_getMe(self, params: dict, files: dict) -> Any:
        return BOT_USER

    async def _m_getUpdates(self, params: dict, files: dict) -> Any:
        if self.webhook is not None:
            return _error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        async with self._arrived:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout > 0 and not self._closing:
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except TimeoutError:
                    pass
            limit = int(params.get("limit") or 100)
            return self._updates[:limit]

    async def _m_deleteWebhook(self, params: dict, files: dict) -> Any:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_setWebhook(self, params: dict, files: dict) -> Any:
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token")}
        return True

    async def _m_getFile(self, params: dict, files: dict) -> Any:
        file_id = str(params["file_id"])
        if file_id not in self.files:
            return _error(400, "Bad Request: invalid file_id")
        if self.file_sizes[file_id] > MAX_GETFILE_BYTES:
            return _error(400, FILE_TOO_BIG)
        # A path that can't exist locally: PTB reads existing local paths as files.
        return {
            "file_id": file_id,
            "file_unique_id": f"U{file_id}",
            "file_size": self.file_sizes[file_id],
            "file_path": f"fake-telegram-files/{file_id}",
        }

    async def _m_sendMessage(self, params: dict, files: dict) -> Any:
        text = str(params.get("text", ""))
        refusal = _text_refusal(text) or _markup_refusal(params)
        if refusal:
            return _error(400, refusal)
        return self._sent(params, text=text)

    async def _m_sendPhoto(self, params: dict, files: dict) -> Any:
        refusal = _caption_refusal(params) or _markup_refusal(params)
        if refusal:
            return _error(400, refusal)
        size = len(files.get("photo", b""))
        photo = [
            {
                "file_id": f"P{len(self.calls)}",
                "file_unique_id": f"UP{len(self.calls)}",
                "width": 1,
                "height": 1,
                "file_size": size,
            }
        ]
        return self._sent(params, photo=photo, caption=params.get("caption"))

    async def _m_sendDocument(self, params: dict, files: dict) -> Any:
        refusal = _caption_refusal(params) or _markup_refusal(params)
        if refusal:
            return _error(400, refusal)
        document = {
            "file_id": f"D{len(self.calls)}",
            "file_unique_id": f"UD{len(self.calls)}",
            "file_size": len(files.get("document", b"")),
        }
        return self._sent(params, document=document, caption=params.get("caption"))

    async def _m_sendMediaGroup(self, params: dict, files: dict) -> Any:
        """An album: 2-10 photos (or 2-10 documents, not mixed), each message of it kept with its bytes."""
        media = params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            return _error(400, "Bad Request: wrong number of media items")
        kinds = {item.get("type") for item in media}
        if len(kinds) != 1 or kinds - {"photo", "document"}:
            return _error(400, "Bad Request: can't mix photos and documents in one album")
        if any(len(str(item.get("caption") or "")) > MAX_CAPTION for item in media):
            return _error(400, CAPTION_TOO_LONG)
        group_id = f"G{len(self.calls)}"
        messages = []
        for index, item in enumerate(media):
            part = str(item.get("media", "")).removeprefix("attach://")
            data = files.get(part, b"")
            files[f"{index}"] = data
            content = (
                {
                    "photo": [
                        {
                            "file_id": f"P{group_id}{index}",
                            "file_unique_id": f"UP{group_id}{index}",
                            "width": 1,
                            "height": 1,
                            "file_size": len(data),
                        }
                    ]
                }
                if item["type"] == "photo"
                else {
                    "document": {
                        "file_id": f"D{group_id}{index}",
                        "file_unique_id": f"UD{group_id}{index}",
                        "file_size": len(data),
                    }
                }
            )
            messages.append(self._sent(params, media_group_id=group_id, caption=item.get("caption"), **content))
        return messages

    async def _m_editMessageText(self, params: dict, files: dict) -> Any:
        return self._edit(params, text=str(params.get("text", "")))

    async def _m_editMessageReplyMarkup(self, params: dict, files: dict) -> Any:
        return self._edit(params, text=None)

    def _edit(self, params: dict, *, text: str | None) -> Any:
        """A bot message's new text (None: only the buttons change) and buttons (an edit without
        reply_markup removes them), refused as the Bot API refuses it."""
        if "inline_message_id" in params:
            return True
        refusal = (_text_refusal(text) if text is not None else None) or _markup_refusal(params)
        if refusal:
            return _error(400, refusal)
        message = self.message(params["chat_id"], params["message_id"])
        if message is None:
            return _error(400, EDIT_NOT_FOUND)
        if message["from"]["id"] != BOT_USER["id"]:
            return _error(400, CANT_EDIT)
        if text is not None and "text" not in message:
            return _error(400, NO_TEXT_TO_EDIT)
        markup = _markup(params)
        if (text is None or message["text"] == text) and message.get("reply_markup") == markup:
            return _error(400, NOT_MODIFIED)
        if text is not None:
            message["text"] = text
        message["edit_date"] = 1700000001
        if markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = markup
        return message

    async def _m_deleteMessage(self, params: dict, files: dict) -> Any:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        if self.chats.get(chat_id, {}).pop(message_id, None) is None:
            return _error(400, DELETE_NOT_FOUND)
        self.deleted.setdefault(chat_id, set()).add(message_id)
        return True

    async def _m_answerCallbackQuery(self, params: dict, files: dict) -> Any:
        return True

    _m_sendChatAction = _m_answerCallbackQuery
    _m_setMyCommands = _m_answerCallbackQuery

    def _sent(self, params: dict, **content: Any) -> dict[str, Any]:
        """A new message from the bot, kept in its chat."""
        chat_id = int(params["chat_id"])
        message = {
            "message_id": self.next_message_id(),
            "date": 1700000000,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": BOT_USER,
        }
        message.update({k: v for k, v in content.items() if v is not None})
        if (markup := _markup(params)) is not None:
            message["reply_markup"] = markup
        return self._store(message)

    def _store(self, message: dict[str, Any]) -> dict[str, Any]:
        self.chats.setdefault(int(message["chat"]["id"]), {})[int(message["message_id"])] = message
        return message


def _markup(params: dict) -> dict[str, Any] | None:
    markup = params.get("reply_markup")
    return markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None


def _markup_refusal(params: dict) -> str | None:
    for row in (_markup(params) or {}).get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                return BUTTON_DATA_INVALID
    return None


def _text_refusal(text: str) -> str | None:
    if not text.strip():
        return TEXT_EMPTY
    return TEXT_TOO_LONG if len(text) > MAX_TEXT else None


def _caption_refusal(params: dict) -> str | None:
    return CAPTION_TOO_LONG if len(str(params.get("caption") or "")) > MAX_CAPTION else None


async def _decode(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Form or multipart fields; non-string values arrive JSON-encoded, uploads as file parts."""
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        return await request.json(), files
    form = await request.post()
    for name, value in form.items():
        if isinstance(value, web.FileField):
            files[name] = value.file.read()
            continue
        try:
            params[name] = json.loads(value)
        except (TypeError, ValueError):
            params[name] = value
    # PTB sends attach://name references for uploads; the bytes live in `files`.
    for name, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            part = value.removeprefix("attach://")
            if part in files:
                files[name] = files[part]
    return params, files


def _error(status: int, description: str, retry_after: float | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


async def _serve_forever(port: int) -> None:
    fake = await FakeTelegram(port=port).start()
    print(f"TELEGRAM_BOT_TOKEN={fake.token}\nTELEGRAM_API_BASE={fake.api_base}\nTELEGRAM_FILE_BASE={fake.file_base}")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 8081))
