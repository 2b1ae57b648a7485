"""aiohttp client for one ComfyUI instance: HTTP calls plus one WebSocket routed by prompt_id.

Why it looks the way it does (see docs/comfyui-protocol.md):
- We choose the prompt_id ourselves and register a waiter before POST /prompt, because the
  socket can deliver a prompt's first events before the HTTP answer arrives.
- The end of a prompt is `executing` with `node: null` for our prompt_id; the outcome is then read
  from GET /history/{id} (error and interrupt are told apart by the last status message).
- Messages sent while the socket is down are lost, and a stalled socket looks just like a slow
  prompt, so a waiter that hears nothing for `quiet_poll_s` polls /history itself.
- Two sockets with the same clientId at once make ComfyUI forget us: the reader reconnects only
  after the previous socket is fully closed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import mimetypes
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from backend.backoff import Backoff, wait_event
from backend.errors import PermanentTaskError, RepairError, TransientTaskError
from backend.stale_model import PromptTakenBack

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 3.0
# A SaveImageWebsocket frame carries the whole result PNG (a 12 MP one is 10-30 MB). aiohttp's
# default limit of 4 MB closed the socket on every result past ~1.5 MP: the prompt then ran a second
# time to be read through /view, and every other waiter polled /history after the reconnect. No
# limit, as for a /view body: the socket carries only what our own ComfyUI sends.
WS_MAX_MESSAGE_BYTES = 0
RECONNECT_BACKOFF_S = (0.2, 5.0)
DETAIL_LIMIT = 500

ProgressCallback = Callable[[int], Any]


def default_client_id() -> str:
    """Unique per process, readable in ComfyUI's logs."""
    return f"repairbot-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    """Call a callback that may be sync or async."""
    result = callback(*args)
    if inspect.isawaitable(result):
        await result


@dataclass
class _Waiter:
    """What the socket reader has learned about one prompt, for the task waiting on it."""

    total_nodes: int = 1
    finished_nodes: set[str] = field(default_factory=set)
    node_fraction: float = 0.0
    started: bool = False  # ComfyUI began executing it (it may first wait behind prefetched prompts)
    done: bool = False
    poll_now: bool = False
    last_heard: float = 0.0
    # the result, when it comes over the socket (SaveImageWebsocket): a view into the frame, one 11.5 MB
    # copy fewer for a 12 MP result (py-spy put the copy at ~13% of the samples; the bench could not
    # tell the saving from noise)
    image: bytes | memoryview | None = None
    # execution_start / execution_success as the socket told them: with the image, all a successful
    # socket-output run needs, so it is not looked up in /history as well (a third HTTP call per task)
    timings: list[list[Any]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def percent(self) -> int:
        share = (len(self.finished_nodes) + self.node_fraction) / max(self.total_nodes, 1)
        return max(0, min(100, int(share * 100)))


class ComfyUIClient:
    """One per ComfyUI instance per process."""

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str | None = None,
        quiet_poll_s: float = 5.0,
        request_timeout_s: float = 30.0,
        bounded_disk: bool = True,
    ):
        """
        :param base_url: e.g. ``http://127.0.0.1:8188``
        :param client_id: WebSocket clientId; unique per process unless given
        :param quiet_poll_s: poll /history after this long without news about a prompt
        :param request_timeout_s: total timeout of one HTTP request
        :param bounded_disk: leave ComfyUI's disk as it was: uploads go under per-slot names, overwritten
            (input/ holds at most one file per slot and extension), and the result comes over the socket
            from SaveImageWebsocket instead of a SaveImage file in output/ (when the server has that node)
        """
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or default_client_id()
        self.quiet_poll_s = quiet_poll_s
        self.request_timeout_s = request_timeout_s
        self.connected = False
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._cancelled: set[str] = set()
        self._taken_back: set[str] = set()
        self.bounded_disk = bounded_disk
        self.upload_prefix = f"repairbot-{socket.gethostname()}-{os.getpid()}"
        self._free_slots: list[int] = []
        self._slot_count = 0
        self._ws_output: bool | None = None  # does the server have SaveImageWebsocket? (asked once)
        self._executing: str | None = None  # prompt_id of the last `executing` event, for type-1 frames

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._ensure_session()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_socket_forever(), name=f"comfyui-ws {self.base_url}")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout_s))
        return self._session

    # -- HTTP ------------------------------------------------------------------------------------
    async def _request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> tuple[int, bytes]:
        """One request; unreachable, reset, timed out or 5xx become TransientTaskError."""
        session = self._ensure_session()
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.request_timeout_s)
        try:
            async with session.request(method, self.base_url + path, timeout=client_timeout, **kwargs) as resp:
                body = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise TransientTaskError(
                code="comfyui_unavailable", detail=f"{method} {path}: {type(error).__name__} {error}".strip()
            ) from error
        if resp.status >= 500:
            raise TransientTaskError(code="comfyui_unavailable", detail=f"{method} {path}: HTTP {resp.status}")
        return resp.status, body

    async def _call_ok(self, method: str, path: str, **kwargs: Any) -> bytes:
        """A request whose 4xx means ComfyUI refused what we asked for."""
        status, body = await self._request(method, path, **kwargs)
        if status >= 400:
            text = body[:200].decode("utf-8", "replace")
            raise PermanentTaskError(code="comfyui_rejected", detail=f"{method} {path}: HTTP {status} {text}".strip())
        return body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        body = await self._call_ok(method, path, **kwargs)
        try:
            return json.loads(body)
        except ValueError as error:
            raise TransientTaskError(code="comfyui_unavailable", detail=f"{method} {path}: not JSON") from error

    async def health(self) -> bool:
        """Quick GET /system_stats; never raises."""
        try:
            stats = await self._json("GET", "/system_stats", timeout=min(HEALTH_TIMEOUT_S, self.request_timeout_s))
        except Exception:  # noqa: BLE001 - health is a yes/no question
            return False
        return isinstance(stats, dict) and "system" in stats

    async def queue(self) -> tuple[list[str], list[str]]:
        """(running prompt_ids, pending prompt_ids in the order ComfyUI will run them)."""
        queue = await self._json("GET", "/queue")
        running = [item[1] for item in queue.get("queue_running", [])]
        pending = [item[1] for item in sorted(queue.get("queue_pending", []), key=lambda item: item[0])]
        return running, pending

    async def object_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._json("GET", "/object_info")
        return info

    async def upload_image(self, data: bytes, name: str, *, overwrite: bool = False) -> str:
        """Upload to input/; returns the value for LoadImage.inputs.image."""
        form = aiohttp.FormData()
        form.add_field(
            "image", data, filename=name, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        if overwrite:
            form.add_field("overwrite", "true")
        # aiohttp's own multipart encoding, made whole first: streamed, each part boundary, header and
        # body was a socket write of its own (~8 of a task's ~19 sends)
        multipart = form()
        body = await multipart.as_bytes()
        stored = await self._json("POST", "/upload/image", data=body, headers={"Content-Type": multipart.content_type})
        subfolder = stored.get("subfolder") or ""
        return f"{subfolder}/{stored['name']}" if subfolder else stored["name"]

    async def queue_prompt(self, workflow: dict[str, Any], prompt_id: str) -> None:
        """POST /prompt under our own prompt_id; any node error rejects the task."""
        waiter = self._waiters.setdefault(prompt_id, _Waiter())
        waiter.total_nodes = max(len(workflow), 1)
        waiter.last_heard = asyncio.get_running_loop().time()
        body = {"prompt": workflow, "client_id": self.client_id, "prompt_id": prompt_id}
        try:
            status, raw = await self._request("POST", "/prompt", json=body)
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {}
            if status >= 400 or answer.get("node_errors"):
                if status < 400:  # queued with only some outputs valid: take it back
                    await self._best_effort(self.delete_queued(prompt_id), self.interrupt(prompt_id))
                raise PermanentTaskError(code="comfyui_rejected", detail=summarize_rejection(answer, status, raw))
        except BaseException:
            self._waiters.pop(prompt_id, None)
            raise

    async def fetch_image(self, image: dict[str, Any]) -> bytes:
        params = {
            "filename": image["filename"],
            "subfolder": image.get("subfolder", ""),
            "type": image.get("type", "output"),
        }
        return await self._call_ok("GET", "/view", params=params)

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt `prompt_id` if it is the running one (ComfyUI ignores other ids)."""
        self._cancelled.add(prompt_id)
        await self._call_ok("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete_queued(self, prompt_id: str) -> None:
        """Remove `prompt_id` if still pending (a running prompt is only stopped by interrupt)."""
        self._cancelled.add(prompt_id)
        await self._call_ok("POST", "/queue", json={"delete": [prompt_id]})

    async def take_back_waiting(self) -> list[str]:
        """Take every prompt of ours still waiting on this instance back out of it (delete if pending,
        interrupt if it already started): their waiters raise PromptTakenBack so the tasks submit again."""
        ours = list(self._waiters)
        if not ours:
            return []
        self._taken_back.update(ours)
        await self._call_ok("POST", "/queue", json={"delete": ours})
        running, _ = await self.queue()
        for prompt_id in running:
            if prompt_id in ours:
                await self._call_ok("POST", "/interrupt", json={"prompt_id": prompt_id})
        for prompt_id in ours:
            waiter = self._waiters.get(prompt_id)
            if waiter is not None:
                waiter.poll_now = True
                waiter.wakeup.set()
        return ours

    async def free(self) -> None:
        """Unload models and drop cached node instances (clears DDColor's stale-model trap)."""
        await self._call_ok("POST", "/free", json={"unload_models": True, "free_memory": True})

    @staticmethod
    async def _best_effort(*calls: Awaitable[None]) -> None:
        for call in calls:
            try:
                await call
            except Exception as error:  # noqa: BLE001 - cleanup must not hide the real error
                log.debug("ComfyUI cleanup call failed: %s", error)

    # -- one whole task --------------------------------------------------------------------------
    async def run(
        self,
        workflow_for: Callable[[str], dict[str, Any]],
        data: bytes,
        upload_name: str,
        output_node: str,
        *,
        prompt_id: str,
        deadline: float,
        run_timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_queued: Callable[[], Any] | None = None,
        on_started: Callable[[], Any] | None = None,
        socket_output: bool = True,
    ) -> tuple[bytes | memoryview, int]:
        """Upload, queue, wait, and get the first image of `output_node`.

        `deadline` bounds the whole wait; with `run_timeout_s`, it bounds only the wait until
        ComfyUI starts the prompt (behind prefetched ones), and the run gets `run_timeout_s` from then.

        Returns the image and how long ComfyUI itself spent on the prompt (ms, from its own
        execution_start / execution_success timestamps), which excludes time spent waiting in its queue.
        With `bounded_disk` the upload takes a slot name (its extension kept) and the output node
        becomes SaveImageWebsocket, so a task leaves no file behind in ComfyUI. When the socket lost
        that image (down or stalled meanwhile), the prompt runs once more with SaveImage and /view.
        """
        slot = self._take_slot() if self.bounded_disk else None
        try:
            name = self._slot_name(slot, upload_name) if slot is not None else upload_name
            load_image_value = await self.upload_image(data, name, overwrite=slot is not None)
            workflow = workflow_for(load_image_value)
            over_socket = socket_output and self.bounded_disk and await self._socket_output(workflow, output_node)
            await self.queue_prompt(workflow, prompt_id)
            waiter = self._waiters[prompt_id]
            try:
                if on_queued is not None:
                    await _call(on_queued)
                entry = await self.wait_for(
                    prompt_id,
                    deadline=deadline,
                    run_timeout_s=run_timeout_s,
                    on_progress=on_progress,
                    on_started=on_started,
                    image_over_socket=over_socket,
                )
            finally:
                self._waiters.pop(prompt_id, None)
        finally:
            if slot is not None:
                self._free_slots.append(slot)
        if over_socket:
            if waiter.image is not None:
                return waiter.image, execution_ms(entry)
            log.info(
                "ComfyUI %s: the result of %s was lost with the socket; running it again with SaveImage",
                self.base_url,
                prompt_id,
            )
            return await self.run(
                workflow_for,
                data,
                upload_name,
                output_node,
                prompt_id=f"{prompt_id}-file",
                deadline=deadline,
                run_timeout_s=run_timeout_s,
                on_progress=on_progress,
                socket_output=False,
            )
        images = (entry.get("outputs", {}).get(output_node) or {}).get("images") or []
        if not images:
            raise PermanentTaskError(code="comfyui_failed", detail=f"no image from output node {output_node}")
        return await self.fetch_image(images[0]), execution_ms(entry)

    def _take_slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        self._slot_count += 1
        return self._slot_count

    def _slot_name(self, slot: int, upload_name: str) -> str:
        extension = os.path.splitext(upload_name)[1] or ".png"
        return f"{self.upload_prefix}-{slot}{extension}"

    async def _socket_output(self, workflow: dict[str, Any], output_node: str) -> bool:
        """Turn the SaveImage output node into SaveImageWebsocket (in place) when the server has it."""
        node = workflow.get(output_node) or {}
        if node.get("class_type") != "SaveImage":
            return False
        if self._ws_output is None:
            try:
                self._ws_output = bool(await self._json("GET", "/object_info/SaveImageWebsocket"))
            except RepairError:
                return False  # ask again next time
        if not self._ws_output:
            return False
        workflow[output_node] = {
            **node,
            "class_type": "SaveImageWebsocket",
            "inputs": {"images": node["inputs"]["images"]},
        }
        return True

    # -- waiting ---------------------------------------------------------------------------------
    async def wait_for(
        self,
        prompt_id: str,
        *,
        deadline: float,
        run_timeout_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_started: Callable[[], Any] | None = None,
        image_over_socket: bool = False,
    ) -> dict[str, Any]:
        """Wait until `prompt_id` is done and return its history entry, or raise what went wrong.

        With `image_over_socket`, a run whose image and execution_success both came over the socket
        returns an entry made of what the socket said, without asking /history.
        """
        loop = asyncio.get_running_loop()
        waiter = self._waiters.get(prompt_id)
        if waiter is None:
            waiter = self._waiters[prompt_id] = _Waiter(last_heard=loop.time())
        reported = -1
        try:
            while True:
                waiter.wakeup.clear()
                if waiter.started and run_timeout_s is not None:  # the run's own clock starts now
                    deadline, run_timeout_s = loop.time() + run_timeout_s, None
                if waiter.started and on_started is not None:
                    await _call(on_started)
                    on_started = None
                if on_progress is not None and waiter.percent > reported:
                    reported = waiter.percent
                    await _call(on_progress, reported)
                if waiter.done and image_over_socket and self._socket_told_all(prompt_id, waiter):
                    return {"status": {"status_str": "success", "completed": True, "messages": waiter.timings}}
                if waiter.done or waiter.poll_now or loop.time() - waiter.last_heard >= self.quiet_poll_s:
                    entry = await self._look_up(prompt_id)
                    if entry is not None:
                        return outcome(prompt_id, entry)
                    waiter.done = waiter.poll_now = False
                    waiter.last_heard = loop.time()
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TransientTaskError(code="timeout", detail=f"prompt {prompt_id} not done by the deadline")
                quiet_left = waiter.last_heard + self.quiet_poll_s - loop.time()
                await wait_event(waiter.wakeup, max(0.0, min(remaining, quiet_left)))
        finally:
            self._waiters.pop(prompt_id, None)

    def _socket_told_all(self, prompt_id: str, waiter: _Waiter) -> bool:
        """Success and the image both seen on the socket, for a prompt not taken back (that one's
        history decides whether it is trusted)."""
        succeeded = any(kind == "execution_success" for kind, _ in waiter.timings)
        return succeeded and waiter.image is not None and prompt_id not in self._taken_back

    async def _look_up(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished history entry, None while queued or running; raises if the prompt is gone."""
        history = await self._json("GET", f"/history/{prompt_id}")
        if prompt_id in history:
            return self._unless_taken_back(prompt_id, history[prompt_id])
        running, pending = await self.queue()
        if prompt_id in running or prompt_id in pending:
            return None
        history = await self._json("GET", f"/history/{prompt_id}")  # it may have finished meanwhile
        if prompt_id in history:
            return self._unless_taken_back(prompt_id, history[prompt_id])
        if prompt_id in self._taken_back:
            self._taken_back.discard(prompt_id)
            raise PromptTakenBack(detail=f"prompt {prompt_id} taken back to run after /free")
        if prompt_id in self._cancelled:
            raise PermanentTaskError(code="cancelled", detail=f"prompt {prompt_id} was removed from the queue")
        raise TransientTaskError(
            code="comfyui_unavailable",
            detail=f"prompt {prompt_id} is neither queued nor in history (ComfyUI restarted?)",
        )

    def _unless_taken_back(self, prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A prompt we took back that still finished (it had started) is not trusted: run it again."""
        if prompt_id in self._taken_back:
            self._taken_back.discard(prompt_id)
            raise PromptTakenBack(detail=f"prompt {prompt_id} ran before /free; running it again")
        return entry

    # -- the socket ------------------------------------------------------------------------------
    async def _read_socket_forever(self) -> None:
        backoff = Backoff(*RECONNECT_BACKOFF_S)
        url = f"{self.base_url}/ws?clientId={self.client_id}"
        while True:
            try:
                # `async with` closes the old socket completely before we ever reconnect
                async with self._ensure_session().ws_connect(
                    url,
                    heartbeat=30.0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                    max_msg_size=WS_MAX_MESSAGE_BYTES,
                ) as ws:
                    self.connected = True
                    backoff.reset()
                    # binary previews then carry their prompt_id (type 4 frames)
                    await ws.send_str(
                        json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
                    )
                    self._after_reconnect()
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self._dispatch(message.data)
                        elif message.type == aiohttp.WSMsgType.BINARY:
                            self._dispatch_binary(message.data)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                log.debug("ComfyUI %s socket: %s", self.base_url, error)  # down: the worker says so
            except Exception as error:  # noqa: BLE001 - anything else is a bug worth seeing, then reconnect
                log.warning("ComfyUI %s socket failed: %r", self.base_url, error)
            finally:
                self.connected = False
            await asyncio.sleep(backoff.next_delay())

    def _after_reconnect(self) -> None:
        """Events sent while we were away are lost: let every waiter check /history now."""
        for waiter in self._waiters.values():
            waiter.poll_now = True
            waiter.wakeup.set()

    def _dispatch_binary(self, frame: bytes) -> None:
        """An image frame: type 4 names its prompt in a JSON header; type 1 belongs to the running one."""
        if len(frame) < 8:
            return
        kind = int.from_bytes(frame[:4], "big")
        prompt_id, image = None, memoryview(b"")
        if kind == 4:
            size = int.from_bytes(frame[4:8], "big")
            try:
                prompt_id = json.loads(frame[8 : 8 + size]).get("prompt_id")
            except (ValueError, AttributeError):
                return
            image = memoryview(frame)[8 + size :]
        elif kind == 1:
            prompt_id, image = self._executing, memoryview(frame)[8:]
        waiter = self._waiters.get(prompt_id) if prompt_id else None
        if waiter is not None and image:
            waiter.image = image
            waiter.last_heard = asyncio.get_running_loop().time()

    def _dispatch(self, text: str) -> None:
        try:
            message = json.loads(text)
            kind, data = message["type"], message.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return
        waiter = self._waiters.get(str(data.get("prompt_id"))) if isinstance(data, dict) else None
        if waiter is None:
            return
        waiter.last_heard = asyncio.get_running_loop().time()
        if kind == "executing":
            self._executing = data.get("prompt_id") if data.get("node") is not None else None
        if kind in STARTED_EVENTS:
            waiter.started = True
        if kind in ("execution_start", "execution_success"):
            waiter.timings.append([kind, data])
        if kind == "executing" and data.get("node") is None:
            waiter.done = True
        elif kind == "execution_cached":
            waiter.finished_nodes.update(data.get("nodes") or [])
        elif kind == "progress_state":
            nodes = data.get("nodes") or {}
            waiter.finished_nodes.update(n for n, s in nodes.items() if s.get("state") == "finished")
            waiter.node_fraction = 0.0
        elif kind == "progress" and data.get("max"):
            waiter.node_fraction = max(0.0, min(1.0, data.get("value", 0) / data["max"]))
        waiter.wakeup.set()


STARTED_EVENTS = ("execution_start", "execution_cached", "executing", "progress", "progress_state")


def execution_ms(entry: dict[str, Any]) -> int:
    """Milliseconds between execution_start and execution_success in a history entry (0 if unknown)."""
    stamps = {
        event: data.get("timestamp")
        for event, data in (entry.get("status") or {}).get("messages") or []
        if isinstance(data, dict)
    }
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start:
        return int(end - start)
    return 0


def outcome(prompt_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The history entry of a successful prompt; otherwise the error it ended with."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success" and status.get("completed"):
        return entry
    for event, data in reversed(status.get("messages") or []):
        if event == "execution_interrupted":
            raise PermanentTaskError(
                code="cancelled", detail=f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
            )
        if event == "execution_error":
            message = str(data.get("exception_message", "")).strip()
            detail = (
                f"{data.get('exception_type', 'Error')}: {message} (node {data.get('node_id')} {data.get('node_type')})"
            )
            raise PermanentTaskError(code="comfyui_failed", detail=detail[:DETAIL_LIMIT])
    raise PermanentTaskError(code="comfyui_failed", detail=f"prompt {prompt_id} ended with status {status}")


def summarize_rejection(answer: dict[str, Any], status: int, raw: bytes) -> str:
    """A short readable line out of POST /prompt's error and node_errors."""
    parts = []
    for node_id, node in (answer.get("node_errors") or {}).items():
        for error in node.get("errors", []):
            parts.append(f"node {node_id} ({node.get('class_type')}): {error.get('message')}: {error.get('details')}")
    error = answer.get("error")
    if not parts and isinstance(error, dict):
        parts.append(f"{error.get('type')}: {error.get('message')} {error.get('details') or ''}".strip())
    if not parts:
        parts.append(f"HTTP {status} {raw[:200].decode('utf-8', 'replace')}".strip())
    return "; ".join(parts)[:DETAIL_LIMIT]
