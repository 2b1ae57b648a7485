"""A Bot API fake on a loopback port: the real python-telegram-bot talks to it as to Telegram.

It records every call with its decoded parameters and uploaded bytes, serves `getUpdates` as a long
poll fed by `push_update`, stores files for `getFile` and their download, answers 429 (or any error)
on demand, and can POST an update to a bot's webhook with a chosen secret token.

Run by hand: `python -m tests.fakes.telegram_api [port]` prints the base URLs to put in
TELEGRAM_API_BASE / TELEGRAM_FILE_BASE.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

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


@dataclass
class Call:
    """One Bot API request as the fake received it."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    result: Any = None  # what the fake answered (a Message for the send methods)

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
        self.failures: dict[str, list[Failure]] = {}
        self.webhook: dict[str, Any] | None = None
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> "FakeTelegram":
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
    def add_file(self, data: bytes, name: str = "photo.jpg") -> str:
        """Store bytes for getFile/download; returns the file_id."""
        file_id = f"F{len(self.files) + 1}"
        self.files[file_id] = data
        return file_id

    async def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is added)."""
        update = {"update_id": next(self._update_ids), **update}
        async with self._arrived:
            self._updates.append(update)
            self._arrived.notify_all()
        return update

    def fail_next(self, method: str, status: int = 429, description: str = "Too Many Requests: retry later",
                  *, retry_after: float | None = None, times: int = 1) -> None:
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
                except asyncio.TimeoutError:
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
        # A path that can't exist locally: PTB reads existing local paths as files.
        return {"file_id": file_id, "file_unique_id": f"U{file_id}", "file_size": len(self.files[file_id]),
                "file_path": f"fake-telegram-files/{file_id}"}

    async def _m_sendMessage(self, params: dict, files: dict) -> Any:
        return self._message(params, text=params.get("text", ""))

    async def _m_sendPhoto(self, params: dict, files: dict) -> Any:
        size = len(files.get("photo", b""))
        photo = [{"file_id": f"P{len(self.calls)}", "file_unique_id": f"UP{len(self.calls)}",
                  "width": 1, "height": 1, "file_size": size}]
        return self._message(params, photo=photo, caption=params.get("caption"))

    async def _m_sendDocument(self, params: dict, files: dict) -> Any:
        document = {"file_id": f"D{len(self.calls)}", "file_unique_id": f"UD{len(self.calls)}",
                    "file_size": len(files.get("document", b""))}
        return self._message(params, document=document, caption=params.get("caption"))

    async def _m_editMessageText(self, params: dict, files: dict) -> Any:
        if "inline_message_id" in params:
            return True
        return self._message(params, text=params.get("text", ""), message_id=int(params["message_id"]))

    async def _m_deleteMessage(self, params: dict, files: dict) -> Any:
        return True

    _m_answerCallbackQuery = _m_deleteMessage
    _m_sendChatAction = _m_deleteMessage
    _m_setMyCommands = _m_deleteMessage

    def _message(self, params: dict, *, message_id: int | None = None, **content: Any) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message = {
            "message_id": message_id or next(self._message_ids),
            "date": 1700000000,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "from": BOT_USER,
        }
        message.update({k: v for k, v in content.items() if v is not None})
        if isinstance(params.get("reply_markup"), dict):
            message["reply_markup"] = params["reply_markup"]
        return message


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
