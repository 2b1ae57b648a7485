"""A minimal direct ComfyUI client for benchmarks: upload, prompt, wait on the socket, download.

No retries, no validation, no Redis: what the fake can serve when nothing stands in between. Used
as the one-task-at-a-time yardstick (gpu_duty.py) and as the direct client (comfy_e2e.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp


class DirectClient:
    def __init__(self, base_url: str, workflow_for: Any, output_node: str):
        self.base_url = base_url
        self.workflow_for = workflow_for
        self.output_node = output_node
        self.client_id = uuid.uuid4().hex
        self.done: dict[str, asyncio.Future[None]] = {}

    async def __aenter__(self) -> DirectClient:
        self.session = aiohttp.ClientSession()
        self.socket = await self.session.ws_connect(f"{self.base_url}/ws?clientId={self.client_id}")
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.reader.cancel()
        await self.socket.close()
        await self.session.close()

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            data = event.get("data") or {}
            if event.get("type") == "executing" and data.get("node") is None:
                waiter = self.done.get(data.get("prompt_id"))
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def run(self, image: bytes, name: str) -> bytes:
        form = aiohttp.FormData()
        form.add_field("image", image, filename=name)
        form.add_field("overwrite", "true")
        async with self.session.post(f"{self.base_url}/upload/image", data=form) as response:
            uploaded = (await response.json())["name"]
        prompt_id = uuid.uuid4().hex
        finished = self.done[prompt_id] = asyncio.get_running_loop().create_future()
        body = {"prompt": self.workflow_for(uploaded, prompt_id), "client_id": self.client_id, "prompt_id": prompt_id}
        async with self.session.post(f"{self.base_url}/prompt", json=body) as response:
            response.raise_for_status()
        await finished
        del self.done[prompt_id]
        async with self.session.get(f"{self.base_url}/history/{prompt_id}") as response:
            history = (await response.json())[prompt_id]
        picture = history["outputs"][self.output_node]["images"][0]
        async with self.session.get(f"{self.base_url}/view", params=picture) as response:
            return await response.read()
