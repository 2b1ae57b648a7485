"""A local stand-in for Discord: the REST API, the CDN and the gateway, enough for repairbot's bot.

The real discord.py talks to it once `discord.http.Route.BASE` is `fake.api_base` and
`DiscordWebSocket.DEFAULT_GATEWAY` is `fake.gateway_url` (no Client option sets the host; those two
process-global class attributes are read whenever a route or the gateway connection is made).
Every REST request is recorded as a `Call` with its decoded JSON (or `payload_json`) and uploaded
file bytes; tests push interactions through the gateway and assert on the calls. Failure modes are
switched on per test: 429 with `retry_after`, expired interaction tokens, channels and DMs the bot
may not write to.

As Discord does, it answers each interaction once (an id it never issued is 10062 Unknown interaction,
a second callback 40060 already acknowledged), answers a button press's UPDATE_MESSAGE (callback type 7) by
editing the message the button is on, refuses webhook calls with an expired token (401, 50027),
uploads over the interaction's attachment_size_limit or 10 MiB in channels (413, 40005), and bot routes
without `Authorization: Bot <token>` (401).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

APP_ID = "111"
BOT_USER = {
    "id": APP_ID,
    "username": "repairbot",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
}
JSON = "application/json"  # exactly: discord.py decodes nothing else
TIMESTAMP = "2024-01-01T00:00:00+00:00"
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
BOT_ROUTES = ("/users/", "/applications/", "/channels/", "/guilds/", "/oauth2/")


@dataclass
class Upload:
    name: str  # form field: files[0], files[1], ...
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    method: str
    path: str  # relative to the API base, e.g. /webhooks/111/tok
    query: dict[str, str]
    json: Any = None
    files: list[Upload] = field(default_factory=list)
    status: int = 200
    code: int | None = None  # Discord's error code when the fake refused the request
    at: float = field(default_factory=time.monotonic)  # when it arrived, for transcripts with timings


@dataclass
class _RateLimit:
    method: str
    pattern: re.Pattern[str]
    times: int
    retry_after: float


def user_payload(user_id: int | str, name: str = "alice") -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name, "avatar": None}


class FakeDiscord:
    """REST + CDN + gateway on one loopback port. `calls` holds every REST request, in order."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> registered commands
        self.messages: dict[str, dict[str, Any]] = {}  # message id -> message payload
        self.originals: dict[str, dict[str, Any]] = {}  # interaction token -> its @original message
        self.dm_channels: dict[str, str] = {}  # DM channel id -> user id
        self.expired_tokens: set[str] = set()
        self.interactions: dict[str, str] = {}  # interaction id -> token, for every interaction issued
        self.acknowledged: set[str] = set()  # interaction ids that got their one callback
        self.pressed_on: dict[str, dict[str, Any]] = {}  # component interaction id -> the message pressed on
        self.upload_limits: dict[str, int] = {}  # interaction token -> its attachment_size_limit
        self.channel_upload_limit = DEFAULT_UPLOAD_LIMIT  # what a bot may upload outside an interaction
        self.forbidden_channels: dict[str, int] = {}  # channel id -> Discord error code
        self.dm_blocked: set[str] = set()  # user ids whose DMs are closed
        self._rate_limits: list[_RateLimit] = []
        self._cdn: dict[str, tuple[bytes, str]] = {}
        self.downloads: list[str] = []  # CDN paths fetched, in order
        self._ids = itertools.count(900_000_000_000_000_001)
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self.identified = asyncio.Event()
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{path:.*}", self._cdn_get)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/gateway"

    # --- switches for tests ----------------------------------------------------------------------
    def rate_limit(self, method: str, path_regex: str, *, times: int = 1, retry_after: float = 0.2) -> None:
        """The next `times` matching requests get a 429 that discord.py retries (it has a Via header)."""
        self._rate_limits.append(_RateLimit(method, re.compile(path_regex), times, retry_after))

    def expire_token(self, token: str) -> None:
        """Webhook calls with this interaction token answer 401 Invalid Webhook Token, as after 15 minutes."""
        self.expired_tokens.add(token)

    def forbid_channel(self, channel_id: int | str, code: int = 50013) -> None:
        """Posting in this channel answers 403 (50013 Missing Permissions, 50001 Missing Access)."""
        self.forbidden_channels[str(channel_id)] = code

    def block_dm(self, user_id: int | str) -> None:
        """Sending to this user's DM channel answers 403 (50007 Cannot send messages to this user)."""
        self.dm_blocked.add(str(user_id))

    def deferred(self, token: str) -> dict[str, Any]:
        """An interaction already answered with "thinking", as if the bot had deferred it."""
        self.originals[token] = self._new_message("0", {"content": ""}, [])
        return self.originals[token]

    def add_file(
        self,
        data: bytes,
        filename: str = "photo.jpg",
        content_type: str | None = "image/jpeg",
        *,
        size: int | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Serve `data` from the fake CDN and return the attachment payload pointing at it."""
        attachment_id = str(next(self._ids))
        path = f"attachments/{attachment_id}/{filename}"
        self._cdn[path] = (data, content_type or "application/octet-stream")
        payload: dict[str, Any] = {
            "id": attachment_id,
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": f"{self.url}/cdn/{path}",
            "proxy_url": f"{self.url}/cdn/{path}",
        }
        if content_type is not None:
            payload["content_type"] = content_type
        if width and height:
            payload.update(width=width, height=height)
        return payload

    # --- what tests read -------------------------------------------------------------------------
    def refusals(self, code: int) -> list[Call]:
        """Requests the fake refused with this Discord error code (e.g. 40060 already acknowledged)."""
        return [c for c in self.calls if c.code == code]

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.fullmatch(c.path)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked after every request and gateway frame); return it."""

        async def check() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(check(), timeout)

    async def wait_for_call(self, method: str, path_regex: str, count: int = 1, timeout: float = 20.0) -> list[Call]:
        return await self.wait_for(lambda: len(found := self.calls_to(method, path_regex)) >= count and found, timeout)

    # --- gateway ---------------------------------------------------------------------------------
    async def push(self, event: str, data: dict[str, Any]) -> None:
        """Send one dispatch to every connected client."""
        await asyncio.wait_for(self.identified.wait(), 20)
        frame = {"op": 0, "t": event, "s": next(self._seq), "d": data}
        for ws in list(self._sockets):
            await ws.send_json(frame)

    async def push_interaction(self, payload: dict[str, Any]) -> None:
        await self.push("INTERACTION_CREATE", payload)

    async def request_reconnect(self) -> None:
        """Op 7 RECONNECT: the client drops the socket and resumes its session on a new one."""
        self.identified.clear()
        for ws in list(self._sockets):
            await ws.send_json({"op": 7, "d": None})

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    self.heartbeats += 1
                    await ws.send_json({"op": 11})
                elif op == 2:
                    self.identifies += 1
                    await ws.send_json(
                        {
                            "op": 0,
                            "t": "READY",
                            "s": next(self._seq),
                            "d": {
                                "v": 10,
                                "user": BOT_USER,
                                "guilds": [],
                                "session_id": "session-1",
                                "resume_gateway_url": self.gateway_url,
                                "application": {"id": APP_ID, "flags": 0},
                            },
                        }
                    )
                    self.identified.set()
                elif op == 6:
                    self.resumes += 1
                    await ws.send_json({"op": 0, "t": "RESUMED", "s": next(self._seq), "d": {}})
                    self.identified.set()
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self._sockets.remove(ws)
        return ws

    # --- CDN -------------------------------------------------------------------------------------
    async def _cdn_get(self, request: web.Request) -> web.Response:
        found = self._cdn.get(request.match_info["path"])
        self.downloads.append(request.match_info["path"])
        if found is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=found[0], content_type=found[1])

    # --- REST ------------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        call = Call(request.method, path, dict(request.query))
        await self._read_body(request, call)
        response = self._unauthorized(request, path) or self._rate_limited(call) or self._route(call)
        call.status = response.status
        if response.status >= 400 and response.status != 429:
            call.code = json.loads(response.body)["code"]  # type: ignore[arg-type]
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return response

    @staticmethod
    async def _read_body(request: web.Request, call: Call) -> None:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    call.json = json.loads(await part.text())
                else:
                    call.files.append(
                        Upload(
                            part.name or "",
                            part.filename or "",
                            part.headers.get("Content-Type", ""),
                            bytes(await part.read()),
                        )
                    )
        elif request.can_read_body:
            raw = await request.read()
            call.json = json.loads(raw) if raw else None

    @staticmethod
    def _unauthorized(request: web.Request, path: str) -> web.Response | None:
        """Bot routes need the bot's token; webhook and interaction routes carry their own."""
        if path.startswith(BOT_ROUTES) and not request.headers.get("Authorization", "").startswith("Bot "):
            return _error(401, 0, "401: Unauthorized")
        return None

    def _rate_limited(self, call: Call) -> web.Response | None:
        for limit in self._rate_limits:
            if limit.times > 0 and limit.method == call.method and limit.pattern.fullmatch(call.path):
                limit.times -= 1
                return _json(
                    {"message": "You are being rate limited.", "retry_after": limit.retry_after, "global": False},
                    status=429,
                    headers={"Via": "1.1 google", "Retry-After": str(limit.retry_after), "X-RateLimit-Scope": "user"},
                )
        return None

    def _route(self, call: Call) -> web.Response:
        m, p, body = call.method, call.path, call.json
        if m == "GET" and p == "/users/@me":
            return _json(BOT_USER)
        if m == "GET" and p == "/oauth2/applications/@me":
            return _json(
                {
                    "id": APP_ID,
                    "name": "repairbot",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": BOT_USER,
                    "verify_key": "00",
                    "flags": 0,
                }
            )
        if match := re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", p):
            scope = match.group(2) or "global"
            if m == "PUT":
                self.commands[scope] = [
                    {"description": "", **cmd, "id": str(next(self._ids)), "application_id": APP_ID, "version": "1"}
                    for cmd in body
                ]
            return _json(self.commands.get(scope, []))
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            return self._callback(match.group(1), match.group(2), body or {}, call.files)
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)(?:/messages/([^/]+))?", p):
            return self._webhook(m, match.group(2), match.group(3), body or {}, call.files)
        if m == "POST" and (match := re.fullmatch(r"/channels/(\d+)/messages", p)):
            return self._channel_message(match.group(1), body or {}, call.files)
        if m == "POST" and p == "/users/@me/channels":
            return self._open_dm(str(body["recipient_id"]))
        return _error(404, 0, f"404: Not Found ({m} {p})")

    def _callback(self, interaction_id: str, token: str, body: dict[str, Any], files: list[Upload]) -> web.Response:
        if self.interactions.get(interaction_id) != token:
            return _error(404, 10062, "Unknown interaction")
        if interaction_id in self.acknowledged:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        if too_large := _too_large(files, self.upload_limits[token]):
            return too_large
        self.acknowledged.add(interaction_id)
        kind = body.get("type")
        data = body.get("data") or {}
        ephemeral = bool(int(data.get("flags") or 0) & 64)
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 5):
            message = self._new_message("0", {**data, "content": data.get("content", "")}, files)
            self.originals[token] = message
            if kind == 4:
                resource["message"] = message
        elif kind == 7 and interaction_id in self.pressed_on:  # UPDATE_MESSAGE: the message the button is on
            message = self.pressed_on[interaction_id]
            message.update({k: v for k, v in data.items() if k in ("content", "embeds", "components")})
            message["edited_timestamp"] = TIMESTAMP
            self.originals[token] = message
            resource["message"] = message
        return _json(
            {
                "interaction": {
                    "id": interaction_id,
                    "type": 2,
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": ephemeral,
                },
                "resource": resource,
            }
        )

    def _webhook(
        self, method: str, token: str, message_id: str | None, body: dict[str, Any], files: list[Upload]
    ) -> web.Response:
        if token in self.expired_tokens:
            return _error(401, 50027, "Invalid Webhook Token")
        if too_large := _too_large(files, self.upload_limits.get(token, self.channel_upload_limit)):
            return too_large
        if message_id is None and method == "POST":
            return _json(self._new_message("0", body, files))
        message = self.originals.get(token) if message_id == "@original" else self.messages.get(message_id or "")
        if message is None:
            return _error(404, 10008, "Unknown Message")
        if method == "DELETE":
            self.messages.pop(message["id"], None)
            if message_id == "@original":
                del self.originals[token]
            return web.Response(status=204)
        if method == "PATCH":
            message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
            message["attachments"] = _attachments(body, files) or message["attachments"]
            message["edited_timestamp"] = TIMESTAMP
        return _json(message)

    def _channel_message(self, channel_id: str, body: dict[str, Any], files: list[Upload]) -> web.Response:
        if channel_id in self.forbidden_channels:
            code = self.forbidden_channels[channel_id]
            return _error(403, code, "Missing Permissions" if code == 50013 else "Missing Access")
        if self.dm_channels.get(channel_id) in self.dm_blocked:
            return _error(403, 50007, "Cannot send messages to this user")
        if too_large := _too_large(files, self.channel_upload_limit):
            return too_large
        return _json(self._new_message(channel_id, body, files))

    def _open_dm(self, user_id: str) -> web.Response:
        channel_id = next((cid for cid, uid in self.dm_channels.items() if uid == user_id), None)
        if channel_id is None:
            channel_id = str(next(self._ids))
            self.dm_channels[channel_id] = user_id
        return _json({"id": channel_id, "type": 1, "last_message_id": None, "recipients": [user_payload(user_id)]})

    def _new_message(self, channel_id: str, body: dict[str, Any], files: list[Upload]) -> dict[str, Any]:
        message = {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "type": 0,
            "content": body.get("content") or "",
            "author": BOT_USER,
            "attachments": _attachments(body, files),
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "flags": int(body.get("flags") or 0),
        }
        self.messages[message["id"]] = message
        return message

    # --- interaction payloads --------------------------------------------------------------------
    def interaction(
        self,
        data: dict[str, Any],
        *,
        kind: int = 2,
        user_id: int = 42,
        channel_id: int = 500,
        guild_id: int | None = 700,
        locale: str = "en-US",
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        message: dict[str, Any] | None = None,
        is_admin: bool = False,
    ) -> dict[str, Any]:
        """An INTERACTION_CREATE payload; a guild text channel unless `guild_id` is None (then a DM)."""
        token = f"itok-{next(self._ids)}"
        interaction_id = str(next(self._ids))
        self.interactions[interaction_id] = token
        self.upload_limits[token] = attachment_size_limit
        user = user_payload(user_id)
        payload: dict[str, Any] = {
            "id": interaction_id,
            "application_id": APP_ID,
            "type": kind,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "locale": locale,
            "app_permissions": "0",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "context": 0 if guild_id else 1,
            "attachment_size_limit": attachment_size_limit,
            "data": data,
        }
        if guild_id:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["channel"] = {
                "id": str(channel_id),
                "type": 0,
                "guild_id": str(guild_id),
                "name": "photos",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            }
            payload["member"] = {
                "user": user,
                "roles": [],
                "joined_at": TIMESTAMP,
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": "8" if is_admin else "0",
            }
        else:
            payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user]}
            payload["user"] = user
        if message is not None:
            payload["message"] = message
            self.pressed_on[interaction_id] = self.messages.get(message["id"], message)
        return payload

    def slash(
        self,
        name: str,
        options: list[dict[str, Any]],
        *,
        attachments: list[dict[str, Any]] = (),
        guild_scoped: int | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """A chat-input command; `attachments` become data.resolved.attachments."""
        data: dict[str, Any] = {"id": str(next(self._ids)), "name": name, "type": 1, "options": options}
        if attachments:
            data["resolved"] = {"attachments": {a["id"]: a for a in attachments}}
        if guild_scoped:
            data["guild_id"] = str(guild_scoped)
        return self.interaction(data, **kw)

    def message_command(self, name: str, target: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """A message context-menu command on `target` (a message payload)."""
        data = {
            "id": str(next(self._ids)),
            "name": name,
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        return self.interaction(data, **kw)

    def button_click(self, custom_id: str, message: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """A press of the button `custom_id` on `message`. As on Discord, the message in the payload
        shows that button: one is added (in a row of its own) to a message built without it."""
        buttons = [c for row in message.get("components") or [] for c in row.get("components", [])]
        if not any(b.get("custom_id") == custom_id for b in buttons):
            row = {"type": 1, "components": [{"type": 2, "style": 2, "label": "button", "custom_id": custom_id}]}
            message = {**message, "components": [*(message.get("components") or []), row]}
        return self.interaction({"custom_id": custom_id, "component_type": 2}, kind=3, message=message, **kw)

    def user_message(
        self, attachments: list[dict[str, Any]], *, channel_id: int = 500, author_id: int = 42, content: str = ""
    ) -> dict[str, Any]:
        """Somebody's message in a channel, as a context-menu target."""
        message = {
            "id": str(next(self._ids)),
            "channel_id": str(channel_id),
            "type": 0,
            "content": content,
            "author": user_payload(author_id),
            "attachments": attachments,
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "flags": 0,
        }
        self.messages[message["id"]] = message
        return message


def _attachments(body: dict[str, Any], files: list[Upload]) -> list[dict[str, Any]]:
    result = []
    for index, upload in enumerate(files):
        result.append(
            {
                "id": str(900 + index),
                "filename": upload.filename,
                "size": len(upload.data),
                "url": f"https://cdn.invalid/{upload.filename}",
                "proxy_url": f"https://cdn.invalid/{upload.filename}",
                "content_type": upload.content_type,
            }
        )
    return result


def _too_large(files: list[Upload], limit: int) -> web.Response | None:
    if sum(len(upload.data) for upload in files) > limit:
        return _error(413, 40005, "Request entity too large")
    return None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": JSON, **(headers or {})}
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=status)
