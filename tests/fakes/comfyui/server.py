"""FakeComfyUI: the HTTP routes, the in-memory file store, and the test-facing knobs.

Routes, status codes, content types and bodies follow the recordings of a real server in
tests/data/comfyui/recordings (what they show: docs/comfyui-protocol.md). Every route is also served under /api.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import posixpath
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from PIL import Image

from tests.fakes.comfyui.executor import Executor, QueueItem
from tests.fakes.comfyui.hub import SERVER_FEATURES, WebSocketHub
from tests.fakes.comfyui.validation import PromptValidator

DEFAULT_OBJECT_INFO = Path(__file__).resolve().parents[2] / "data" / "comfyui" / "object_info.json"
FILE_KINDS = ("input", "temp", "output")
# GET /models of a real 0.3.64 with kijai's DDColor node (which registers no folder of its own)
MODEL_FOLDERS = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SYSTEM_STATS = {
    "system": {
        "os": "posix",
        "ram_total": 25276502016,
        "ram_free": 24175886336,
        "comfyui_version": "0.3.64",
        "required_frontend_version": "1.27.10",
        "installed_templates_version": "0.1.95",
        "required_templates_version": "0.1.95",
        "python_version": "3.11.7 (fake)",
        "pytorch_version": "2.14.1+cpu",
        "embedded_python": False,
        "argv": ["main.py", "--cpu", "--listen", "127.0.0.1"],
    },
    "devices": [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 25276502016,
            "vram_free": 24175886336,
            "torch_vram_total": 25276502016,
            "torch_vram_free": 24175886336,
        }
    ],
}


class FileStore:
    """input/, temp/ and output/ kept in memory; survives a stop/start like files on disk."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}  # (kind, "sub/name") -> bytes

    @staticmethod
    def key(kind: str, subfolder: str, name: str) -> tuple[str, str] | None:
        path = posixpath.normpath(posixpath.join(subfolder or "", name))
        if path.startswith("..") or path.startswith("/"):
            return None
        return kind, path

    def read_input(self, value: str) -> bytes | None:
        name, kind = annotated(value, "input")
        key = self.key(kind, "", name)
        return self.files.get(key) if key else None

    def write(self, kind: str, path: str, data: bytes) -> None:
        self.files[(kind, posixpath.normpath(path))] = data

    def names(self, kind: str, subfolder: str) -> list[str]:
        folder = posixpath.normpath(subfolder) if subfolder else ""
        folder = "" if folder == "." else folder
        return [posixpath.basename(p) for k, p in self.files if k == kind and posixpath.dirname(p) == folder]

    def input_choices(self) -> list[str]:
        return sorted(p for k, p in self.files if k == "input")


def annotated(value: str, default_kind: str) -> tuple[str, str]:
    """'x.png [output]' -> ('x.png', 'output'), as ComfyUI's folder_paths.annotated_filepath."""
    for kind in FILE_KINDS:
        suffix = f" [{kind}]"
        if value.endswith(suffix):
            return value[: -len(suffix)], kind
    return value, default_kind


def empty(status: int = 200) -> web.Response:
    return web.Response(status=status)


class FakeComfyUI:
    """A ComfyUI 0.3.64 stand-in on 127.0.0.1, run in the caller's event loop.

    Knobs for tests: `delay_s` (run time per prompt), `fail_next_runtime` (next prompt ends in
    execution_error with this message), `missing_checkpoints` (DDColor checkpoint files not there), `broken_checkpoints` (load but give grey), `stall_ws` (sockets stay open but get nothing), `http_500`
    (every route answers 500). `requests` lists (method, path) of every request, `prompts` maps
    prompt_id -> the POST /prompt body. stop() then start() comes back on the same port with an
    empty queue and history (files stay), like a restarted ComfyUI.
    """

    def __init__(self, *, delay_s: float = 0.0, object_info_path: str | Path = DEFAULT_OBJECT_INFO, port: int = 0):
        self.object_info = json.loads(Path(object_info_path).read_text())
        self.port = port
        self.url = ""
        self.http_500 = False
        self.requests: list[tuple[str, str]] = []
        self.prompts: dict[str, dict] = {}
        self.files = FileStore()
        self.hub = WebSocketHub(self._queue_info, lambda sid: self.executor.running_node_for(sid))
        self.executor = Executor(self.hub, self.files, delay_s)
        self.validator = PromptValidator(self.object_info, lambda v: self.files.read_input(v) is not None)
        self.number = 0
        self._runner: web.AppRunner | None = None

    # -- knobs that live on the parts ----------------------------------------------------------
    @property
    def delay_s(self) -> float:
        return self.executor.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self.executor.delay_s = value

    @property
    def fail_next_runtime(self) -> str | None:
        return self.executor.fail_next_runtime

    @fail_next_runtime.setter
    def fail_next_runtime(self, value: str | None) -> None:
        self.executor.fail_next_runtime = value

    @property
    def stall_ws(self) -> bool:
        return self.hub.stalled

    @stall_ws.setter
    def stall_ws(self, value: bool) -> None:
        self.hub.stalled = value

    @property
    def missing_checkpoints(self) -> set[str]:
        """DDColor checkpoints whose file is not there (as if deleted from the node's checkpoints/)."""
        return self.executor.missing_checkpoints

    @missing_checkpoints.setter
    def missing_checkpoints(self, value: set[str]) -> None:
        self.executor.missing_checkpoints = set(value)

    @property
    def broken_checkpoints(self) -> set[str]:
        """Checkpoints that load without error but whose keys don't fit (kijai loads strict=False)."""
        return self.executor.broken_checkpoints

    @broken_checkpoints.setter
    def broken_checkpoints(self, value: set[str]) -> None:
        self.executor.broken_checkpoints = set(value)

    @property
    def history(self) -> dict:
        return self.executor.history

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(
            middlewares=[self._record, self._fault, self._origin_guard],
            client_max_size=SERVER_FEATURES["max_upload_size"],
        )
        for prefix in ("", "/api"):
            self._add_routes(app, prefix)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{self.port}"
        self.number = 0
        self.hub.start()
        self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()
        await self.hub.stop()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    def _add_routes(self, app: web.Application, prefix: str) -> None:
        r = app.router
        r.add_post(prefix + "/prompt", self.post_prompt)
        r.add_get(prefix + "/prompt", self.get_prompt)
        r.add_post(prefix + "/upload/image", self.upload_image)
        r.add_get(prefix + "/history", self.get_history)
        r.add_get(prefix + "/history/{prompt_id}", self.get_history_entry)
        r.add_post(prefix + "/history", self.post_history)
        r.add_get(prefix + "/view", self.view)
        r.add_get(prefix + "/queue", self.get_queue)
        r.add_post(prefix + "/queue", self.post_queue)
        r.add_post(prefix + "/interrupt", self.interrupt)
        r.add_get(prefix + "/object_info", self.get_object_info)
        r.add_get(prefix + "/object_info/{class_type}", self.get_object_info_one)
        r.add_get(prefix + "/system_stats", self.system_stats)
        r.add_get(prefix + "/features", self.features)
        r.add_post(prefix + "/free", self.free)
        r.add_get(prefix + "/models", self.models)
        r.add_get(prefix + "/models/{folder}", self.model_folder)
        r.add_get(prefix + "/ws", self.hub.handle)

    # -- middlewares ---------------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler):
        self.requests.append((request.method, request.path))
        return await handler(request)

    @web.middleware
    async def _fault(self, request: web.Request, handler):
        if self.http_500:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        return await handler(request)

    @web.middleware
    async def _origin_guard(self, request: web.Request, handler):
        """ComfyUI answers 403 when a loopback Host and a different Origin both appear."""
        host, origin = request.headers.get("Host"), request.headers.get("Origin")
        if host and origin:
            hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if hostname in LOOPBACK and urlsplit(origin).netloc != host:
                return empty(403)
        return await handler(request)

    # -- prompts and queue ---------------------------------------------------------------------
    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.executor.queue_remaining()}}

    def _object_info(self) -> dict:
        info = json.loads(json.dumps(self.object_info))
        if "LoadImage" in info:  # its choices are whatever input/ holds right now
            info["LoadImage"]["input"]["required"]["image"][0] = self.files.input_choices()
        return info

    async def post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:  # upstream lets aiohttp answer its stock 500 page
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if "number" in body:
            number = float(body["number"])
        else:
            number = self.number
            if body.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        result = self.validator.validate(prompt, body.get("partial_execution_targets"))
        if result.error is not None:
            return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        self.prompts[prompt_id] = body
        self.executor.put(QueueItem(number, prompt_id, prompt, extra_data, result.good_outputs))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(SYSTEM_STATS)

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_FEATURES)

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def get_queue(self, request: web.Request) -> web.Response:
        running = [self.executor.running.as_json()] if self.executor.running else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [item.as_json() for item in self.executor.pending]}
        )

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.executor.wipe_pending()
        for prompt_id in body.get("delete", []):
            self.executor.delete_pending(prompt_id)
        return empty()

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.executor.interrupt((body or {}).get("prompt_id"))
        return empty()

    async def free(self, request: web.Request) -> web.Response:
        body = await request.json()
        for flag in ("unload_models", "free_memory"):
            if flag in body:
                self.executor.set_flag(flag, bool(body[flag]))
        return empty()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def model_folder(self, request: web.Request) -> web.Response:
        """Registered folders list their files (none here); kijai's DDColor registers none: 404."""
        return web.json_response([]) if request.match_info["folder"] in MODEL_FOLDERS else empty(404)

    # -- history -------------------------------------------------------------------------------
    async def get_history(self, request: web.Request) -> web.Response:
        max_items = int(request.query["max_items"]) if "max_items" in request.query else None
        offset = int(request.query.get("offset", -1))
        history = self.executor.history
        if offset < 0 and max_items is not None:
            offset = len(history) - max_items
        out = {}
        for index, (prompt_id, entry) in enumerate(history.items()):
            if index >= offset:
                out[prompt_id] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return web.json_response(out)

    async def get_history_entry(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.executor.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.executor.history.clear()
        for prompt_id in body.get("delete", []):
            self.executor.history.pop(prompt_id, None)
        return empty()

    # -- object_info ---------------------------------------------------------------------------
    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self._object_info())

    async def get_object_info_one(self, request: web.Request) -> web.Response:
        class_type = request.match_info["class_type"]
        info = self._object_info()
        return web.json_response({class_type: info[class_type]} if class_type in info else {})

    # -- files ---------------------------------------------------------------------------------
    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file"):
            return empty(400)
        kind = post.get("type") or "input"
        if kind not in FILE_KINDS or not image.filename:
            return empty(400)
        subfolder = post.get("subfolder", "")
        data = image.file.read()
        filename = image.filename
        key = self.files.key(kind, subfolder, filename)
        if key is None:
            return empty(400)
        if post.get("overwrite") not in ("true", "1"):
            stem, ext = posixpath.splitext(filename)
            counter = 1
            while key in self.files.files:
                if hashlib.sha256(self.files.files[key]).digest() == hashlib.sha256(data).digest():
                    break  # same name, same bytes: reuse it
                filename = f"{stem} ({counter}){ext}"
                key = self.files.key(kind, subfolder, filename)
                counter += 1
        self.files.files[key] = data
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def view(self, request: web.Request) -> web.Response:
        query = request.query
        if "filename" not in query:
            return empty(404)
        filename, kind = annotated(query["filename"], query.get("type", "output"))
        if not filename:
            return empty(400)
        if filename[0] == "/" or ".." in filename:
            return empty(400)
        if kind not in FILE_KINDS:
            return empty(400)
        subfolder = query.get("subfolder", "")
        if posixpath.normpath(posixpath.join("root", subfolder)).split("/")[0] != "root":
            return empty(403)
        filename = posixpath.basename(filename)
        key = self.files.key(kind, subfolder, filename)
        data = self.files.files.get(key) if key else None
        if data is None:
            return empty(404)
        headers = {"Content-Disposition": f'filename="{filename}"'}
        preview = query.get("preview")
        if preview:
            fmt, _, quality = preview.partition(";")
            if fmt in ("webp", "jpeg"):
                buffer = io.BytesIO()
                Image.open(io.BytesIO(data)).convert("RGB").save(buffer, format=fmt.upper(), quality=int(quality or 90))
                return web.Response(body=buffer.getvalue(), content_type=f"image/{fmt}", headers=headers)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return web.Response(body=data, content_type=content_type, headers=headers)
