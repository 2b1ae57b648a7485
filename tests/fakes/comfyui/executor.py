"""The prompt queue, the single executor coroutine, the node-output cache and the history.

Event order per prompt follows the recordings (see PROTOCOL.md 3.4): execution_start,
execution_cached, then per node progress_state/executing/[executed]/progress_state, then
execution_success (or execution_error / execution_interrupted), history written, status
broadcast, and finally executing{node: null} for the owning clientId.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.comfyui.hub import WebSocketHub
from tests.fakes.comfyui.nodes import HEAVY_NODES, NodeContext, NodeFailure, run_node

MAX_HISTORY = 10000
NEVER_CACHED = {"SaveImageWebsocket"}
FAKE_TRACEBACK = [
    '  File "<COMFYUI_ROOT>/execution.py", line 496, in execute\n    <source line omitted>\n',
    '  File "<COMFYUI_ROOT>/execution.py", line 315, in get_output_data\n    <source line omitted>\n',
]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(order=True)
class QueueItem:
    number: float
    prompt_id: str = field(compare=False)
    prompt: dict = field(compare=False)
    extra_data: dict = field(compare=False)
    outputs: list[str] = field(compare=False)

    def as_json(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")


class Interrupted(Exception):
    pass


class PromptRun:
    """One execution of one queue item: sends its events and collects what history needs."""

    def __init__(self, executor: Executor, item: QueueItem):
        self.executor = executor
        self.item = item
        self.messages: list[list] = []
        self.progress: dict[str, dict] = {}
        self.executed: list[str] = []
        self.ui: dict[str, dict] = {}
        self.values: dict[str, list] = {}
        self.slow_nodes: list[str] = []
        self.fail_node: str | None = None
        self.fail_message = ""

    # -- messages --------------------------------------------------------------------------------
    def add_message(self, event: str, data: dict, broadcast: bool = False) -> None:
        """Kept for history; sent to the owner (or to everyone for broadcast events without owner)."""
        self.messages.append([event, data])
        if self.item.client_id is not None or broadcast:
            self.executor.hub.send(event, data, self.item.client_id)

    def to_owner(self, event: str, data: dict) -> None:
        if self.item.client_id is not None:
            self.executor.hub.send(event, data, self.item.client_id)

    def progress_state(self, node_id: str, state: str, value: Any, maximum: Any) -> None:
        pid = self.item.prompt_id
        self.progress[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": pid,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        # progress_state goes to the owner, or to every socket when the prompt has no client_id
        self.executor.hub.send("progress_state", {"prompt_id": pid, "nodes": dict(self.progress)}, self.item.client_id)

    # -- execution -------------------------------------------------------------------------------
    def execution_order(self) -> list[str]:
        order: list[str] = []

        def visit(node_id: str) -> None:
            if node_id in order:
                return
            for value in self.item.prompt[node_id]["inputs"].values():
                if isinstance(value, list):
                    visit(value[0])
            order.append(node_id)

        for output_id in self.item.outputs:
            visit(output_id)
        return order

    async def run(self) -> bool:
        pid = self.item.prompt_id
        ex = self.executor
        signatures = ex.signatures(self.item.prompt)
        ex.cache = {sig: out for sig, out in ex.cache.items() if sig in signatures.values()}
        self.add_message("execution_start", {"prompt_id": pid, "timestamp": _now_ms()})
        cached = [n for n in self.item.prompt if signatures.get(n) in ex.cache]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": pid, "timestamp": _now_ms()})
        order = self.execution_order()
        to_run = [n for n in order if n not in cached]
        # the delay is spent in the colorizer when there is one (like the real GPU work), else spread
        self.slow_nodes = [n for n in to_run if self.node_class(n) in HEAVY_NODES] or to_run
        if ex.fail_next_runtime is not None and to_run:
            self.fail_node, self.fail_message = self.slow_nodes[0], ex.fail_next_runtime
            ex.fail_next_runtime = None
        current = None
        try:
            for node_id in order:
                current = node_id
                if node_id in cached:
                    self.replay_cached(node_id, signatures[node_id])
                    continue
                await self.run_node(node_id, signatures[node_id])
        except Interrupted:
            self.add_message(
                "execution_interrupted",
                {
                    "prompt_id": pid,
                    "node_id": current,
                    "node_type": self.node_class(current),
                    "executed": list(self.executed),
                    "timestamp": _now_ms(),
                },
                broadcast=True,
            )
            return False
        except NodeFailure as failure:
            self.add_message(
                "execution_error",
                {
                    "prompt_id": pid,
                    "node_id": current,
                    "node_type": self.node_class(current),
                    "executed": list(self.executed),
                    "exception_message": f"{failure.message}\n",
                    "exception_type": failure.exception_type,
                    "traceback": FAKE_TRACEBACK,
                    "current_inputs": self.current_inputs(current),
                    "current_outputs": list(self.item.prompt),
                    "timestamp": _now_ms(),
                },
            )
            return False
        self.add_message("execution_success", {"prompt_id": pid, "timestamp": _now_ms()})
        return True

    def node_class(self, node_id: str) -> str:
        return self.item.prompt[node_id]["class_type"]

    def current_inputs(self, node_id: str) -> dict:
        shown = {}
        for name, value in self.item.prompt[node_id]["inputs"].items():
            if isinstance(value, list):
                source = self.values.get(value[0])
                shown[name] = [repr(source[value[1]]) if source else "None"]
            else:
                shown[name] = [str(value)]
        return shown

    def replay_cached(self, node_id: str, signature: str) -> None:
        values, ui = self.executor.cache[signature]
        self.values[node_id] = values
        if ui is not None:
            self.ui[node_id] = ui
            self.to_owner(
                "executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.item.prompt_id}
            )
            self.progress_state(node_id, "finished", 1, 1)

    async def run_node(self, node_id: str, signature: str) -> None:
        ex = self.executor
        pid = self.item.prompt_id
        node = self.item.prompt[node_id]
        self.progress_state(node_id, "running", 0.0, 1.0)
        ex.current_node = node_id
        self.to_owner("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
        if ex.interrupt_requested:
            raise Interrupted()
        if node_id in self.slow_nodes:
            await asyncio.sleep(ex.delay_s / len(self.slow_nodes))
        if node_id == self.fail_node:
            raise NodeFailure("RuntimeError", self.fail_message)
        inputs = {}
        for name, value in node["inputs"].items():
            inputs[name] = self.values[value[0]][value[1]] if isinstance(value, list) else value
        try:
            context = self.context()
            context.instance = ex.objects.setdefault((node_id, node["class_type"]), {})
            result = run_node(context, node_id, node["class_type"], inputs)
        except NodeFailure:
            raise
        except Exception as error:  # noqa: BLE001 - any node crash is an execution_error upstream too
            raise NodeFailure(type(error).__name__, str(error)) from error
        self.values[node_id] = result.outputs
        self.executed.append(node_id)
        ex.cache[signature] = (result.outputs, result.ui)
        if result.ui is not None:
            self.ui[node_id] = result.ui
            self.to_owner("executed", {"node": node_id, "display_node": node_id, "output": result.ui, "prompt_id": pid})
        self.progress_state(node_id, "finished", 1.0, 1.0)

    def context(self) -> NodeContext:
        ex, item = self.executor, self.item

        def send_binary(node_id: str, png: bytes) -> None:
            ex.hub.send_image(
                png,
                item.client_id,
                {
                    "node_id": node_id,
                    "prompt_id": item.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                },
            )

        def send_progress(node_id: str, value: int, maximum: int) -> None:
            self.to_owner("progress", {"value": value, "max": maximum, "prompt_id": item.prompt_id, "node": node_id})

        return NodeContext(
            read_input=ex.files.read_input,
            write_output=ex.files.write,
            output_names=ex.files.names,
            send_binary=send_binary,
            send_progress=send_progress,
            prompt=item.prompt,
            extra_data=item.extra_data,
            checkpoint_present=lambda name: name not in ex.missing_checkpoints,
            checkpoint_sound=lambda name: name not in ex.broken_checkpoints,
        )

    def history_entry(self, success: bool) -> dict:
        return {
            "prompt": self.item.as_json(),
            "outputs": dict(self.ui),
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": self.messages,
            },
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in self.ui},
        }


class Executor:
    """Runs queued prompts one at a time in `number` order, like ComfyUI's prompt_worker thread."""

    def __init__(self, hub: WebSocketHub, files: Any, delay_s: float = 0.0):
        self.hub = hub
        self.files = files
        self.delay_s = delay_s
        self.fail_next_runtime: str | None = None
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.current_node: str | None = None
        self.history: dict[str, dict] = {}
        self.cache: dict[str, tuple] = {}
        self.interrupt_requested = False
        self.flags: dict[str, bool] = {}
        self.frees_applied = 0
        # node instances, kept per (node id, class_type) across prompts until /free: DDColor keeps its model here
        self.objects: dict[tuple[str, str], dict] = {}
        self.missing_checkpoints: set[str] = set()
        self.broken_checkpoints: set[str] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- lifecycle (a stop loses queue and history, like a ComfyUI restart) ----------------------
    def start(self) -> None:
        self.pending, self.running, self.current_node, self.history = [], None, None, {}
        self.cache, self.interrupt_requested, self.objects, self.flags = {}, False, {}, {}
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # -- queue -----------------------------------------------------------------------------------
    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self.pending, item)
        self.hub.broadcast_status()
        self._wakeup.set()

    def delete_pending(self, prompt_id: str) -> None:
        for index, item in enumerate(self.pending):
            if item.prompt_id == prompt_id:
                self.pending.pop(index)
                heapq.heapify(self.pending)
                self.hub.broadcast_status()
                return

    def wipe_pending(self) -> None:
        self.pending.clear()
        self.hub.broadcast_status()

    def interrupt(self, prompt_id: str | None) -> None:
        if prompt_id is None or (self.running is not None and self.running.prompt_id == prompt_id):
            self.interrupt_requested = True

    def running_node_for(self, sid: str) -> str | None:
        if self.running is not None and self.running.client_id == sid:
            return self.current_node
        return None

    # -- the worker ------------------------------------------------------------------------------
    async def _work(self) -> None:
        """main.py's prompt_worker: take the next prompt if there is one, run it, and only then act
        on the /free flags. So a /free sent after one prompt failed reaches the cache only after the
        next prompt already waiting has run on it; on an idle server it applies at once."""
        while True:
            if not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()  # woken by a new prompt or by /free (set_flag notifies)
            if self.pending:
                await self._run_item(heapq.heappop(self.pending))
            self._apply_flags()

    async def _run_item(self, item: QueueItem) -> None:
        self.running = item
        self.hub.broadcast_status()
        self.interrupt_requested = False
        run = PromptRun(self, item)
        success = await run.run()
        self.history[item.prompt_id] = run.history_entry(success)
        while len(self.history) > MAX_HISTORY:
            self.history.pop(next(iter(self.history)))
        self.running = None
        self.current_node = None
        self.hub.broadcast_status()
        if item.client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)

    def set_flag(self, name: str, value: bool) -> None:
        """POST /free: remembered until the worker loop next looks (PromptQueue.set_flag)."""
        self.flags[name] = value
        self._wakeup.set()

    def _apply_flags(self) -> None:
        flags, self.flags = self.flags, {}
        if flags.get("free_memory"):
            # PromptExecutor.reset(): cached outputs and node instances (DDColor's model with them) go
            self.cache.clear()
            self.objects.clear()
            self.frees_applied += 1

    # -- cache keys ------------------------------------------------------------------------------
    def signatures(self, prompt: dict) -> dict[str, str]:
        """Input signature per node: class, literals, upstream signatures, and uploaded file bytes."""
        result: dict[str, str] = {}

        def signature(node_id: str, seen: tuple = ()) -> str:
            if node_id in result:
                return result[node_id]
            node = prompt[node_id]
            parts: list = [node["class_type"]]
            for name in sorted(node["inputs"]):
                value = node["inputs"][name]
                if isinstance(value, list) and value and value[0] in prompt and value[0] not in seen:
                    parts.append([name, signature(value[0], seen + (node_id,)), value[1]])
                else:
                    parts.append([name, value])
            if node["class_type"] in NEVER_CACHED:  # IS_CHANGED returns time.time()
                parts.append(uuid.uuid4().hex)
            if node["class_type"] == "LoadImage":
                data = self.files.read_input(str(node["inputs"].get("image"))) or b""
                parts.append(hashlib.sha256(data).hexdigest())
            result[node_id] = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()
            return result[node_id]

        for node_id in prompt:
            signature(node_id)
        return result
