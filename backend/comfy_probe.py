"""A tiny HTTP client for the two questions `repairbot status` asks each ComfyUI: up? and how busy?

ComfyUIClient (aiohttp, a WebSocket per instance) is what the worker needs; importing aiohttp alone
costs a status command more than everything else it does. This answers GET /system_stats and
GET /queue over a plain asyncio connection, with the same answers ComfyUIClient gives.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import unquote, urlsplit

TIMEOUT_S = 3.0
MAX_BODY = 8 * 1024 * 1024


class ComfyProbe:
    def __init__(self, base_url: str, *, timeout_s: float = TIMEOUT_S):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    async def health(self) -> bool:
        """GET /system_stats; never raises."""
        try:
            stats = await self._get_json("/system_stats")
        except Exception:  # noqa: BLE001 - health is a yes/no question
            return False
        return isinstance(stats, dict) and "system" in stats

    async def queue(self) -> tuple[list[str], list[str]]:
        """(running prompt_ids, pending prompt_ids in the order ComfyUI will run them)."""
        queue = await self._get_json("/queue")
        running = [item[1] for item in queue.get("queue_running", [])]
        pending = [item[1] for item in sorted(queue.get("queue_pending", []), key=lambda item: item[0])]
        return running, pending

    async def close(self) -> None:
        pass  # a connection per request, closed with it

    async def _get_json(self, path: str) -> Any:
        return json.loads(await asyncio.wait_for(self._get(path), timeout=self.timeout_s))

    async def _get(self, path: str) -> bytes:
        url = urlsplit(self.base_url)
        secure = url.scheme == "https"
        ssl_context: Any = None
        if secure:
            import ssl

            ssl_context = ssl.create_default_context()
        port = url.port or (443 if secure else 80)
        reader, writer = await asyncio.open_connection(url.hostname, port, ssl=ssl_context)
        try:
            headers = [
                f"GET {url.path.rstrip('/')}{path} HTTP/1.1",
                f"Host: {url.hostname}:{port}",
                "Accept: application/json",
                "Connection: close",
            ]
            if url.username is not None:
                pair = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
                headers.append("Authorization: Basic " + base64.b64encode(pair).decode())
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
            await writer.drain()
            status = (await reader.readline()).split()
            if len(status) < 2 or status[1] != b"200":
                raise ConnectionError(f"HTTP {status[1:2]}")
            fields: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            if fields.get("transfer-encoding", "").lower() == "chunked":
                return await _read_chunked(reader)
            if "content-length" in fields:
                return await reader.readexactly(min(int(fields["content-length"]), MAX_BODY))
            return await reader.read(MAX_BODY)
        finally:
            writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0 or len(body) + size > MAX_BODY:
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readline()
