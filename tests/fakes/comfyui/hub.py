"""WebSocket side of the fake: one registration per clientId, one ordered outbound queue.

Mirrors ComfyUI's server.py, including the same-clientId trap: a second socket with a known
clientId replaces the first, and when the first one then closes it removes the registration of
the *second*, which from then on receives nothing.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import Callable

from aiohttp import WSMsgType, web

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}


class WebSocketHub:
    """Registers sockets by clientId and delivers messages in the order they were sent."""

    def __init__(self, queue_info: Callable[[], dict], running_node_for: Callable[[str], str | None]):
        self.queue_info = queue_info
        self.running_node_for = running_node_for  # what a reconnecting owner is told is executing
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.features: dict[str, dict] = {}
        self.stalled = False
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._publisher: asyncio.Task | None = None

    def start(self) -> None:
        self._outbox = asyncio.Queue()
        self._publisher = asyncio.create_task(self._publish())

    async def stop(self) -> None:
        if self._publisher:
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
        for ws in list(self.sockets.values()):
            await ws.close()
        self.sockets.clear()

    def send(self, event: str, data: dict, sid: str | None) -> None:
        """Queue a JSON message for one clientId, or for everyone when sid is None."""
        if not self.stalled:
            self._outbox.put_nowait(("json", {"type": event, "data": data}, sid))

    def send_image(self, png: bytes, sid: str | None, metadata: dict) -> None:
        if not self.stalled:
            self._outbox.put_nowait(("image", (png, metadata), sid))

    def broadcast_status(self) -> None:
        self.send("status", {"status": self.queue_info()}, None)

    async def _publish(self) -> None:
        while True:
            kind, payload, sid = await self._outbox.get()
            targets = (
                list(self.sockets.items())
                if sid is None
                else ([(sid, self.sockets[sid])] if sid in self.sockets else [])
            )
            for target_sid, ws in targets:
                try:
                    if kind == "json":
                        await ws.send_str(json.dumps(payload))
                    else:
                        await ws.send_bytes(self._image_frame(target_sid, *payload))
                except (ConnectionError, RuntimeError):
                    pass  # the socket went away; real ComfyUI drops the message too

    def _image_frame(self, sid: str, png: bytes, metadata: dict) -> bytes:
        if self.features.get(sid, {}).get("supports_preview_metadata"):
            header = json.dumps({**metadata, "image_type": "image/png"}).encode()
            return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(header)) + header + png
        return struct.pack(">II", PREVIEW_IMAGE, 2) + png

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        try:
            if not self.stalled:
                await ws.send_str(json.dumps({"type": "status", "data": {"status": self.queue_info(), "sid": sid}}))
                node = self.running_node_for(sid)
                if node is not None:
                    await ws.send_str(json.dumps({"type": "executing", "data": {"node": node}}))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_client_message(sid, ws, msg.data)
        finally:
            self.sockets.pop(sid, None)  # the trap: this may be a newer socket's registration
            self.features.pop(sid, None)
        return ws

    async def _on_client_message(self, sid: str, ws: web.WebSocketResponse, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            self.features[sid] = message.get("data") or {}
            await ws.send_str(json.dumps({"type": "feature_flags", "data": SERVER_FEATURES}))
