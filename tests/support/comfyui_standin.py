"""Local stand-ins for what `repairbot comfyui install` fetches, so its tests need no network:

- a git repository playing ComfyUI, whose main.py serves the project's ComfyUI fake with ComfyUI's
  own command-line flags (and notes each start in started.txt);
- a git repository playing kijai's node (a checkpoints/ folder, as the real one has);
- a Hugging Face endpoint for huggingface_hub (HF_ENDPOINT): HEAD with the LFS etag and size,
  GET with Range, and knobs to cut the first download short or serve bytes that don't match.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from backend.settings import REPO_ROOT

if TYPE_CHECKING:
    from backend.comfyui_install import Layout

STANDIN_MAIN = '''"""Stand-in for ComfyUI's main.py: the repairbot ComfyUI fake, started with ComfyUI's flags."""
import argparse, asyncio, os, sys
sys.path.insert(0, os.environ.get("REPAIRBOT_ROOT", {root!r}))
from tests.fakes.comfyui.__main__ import serve

parser = argparse.ArgumentParser()
parser.add_argument("--listen", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--cpu", action="store_true")
args, _ = parser.parse_known_args()
with open("started.txt", "a") as note:
    note.write(" ".join(sys.argv[1:]) + "\\n")
assert args.listen == "127.0.0.1", "the fake only ever listens on loopback"
asyncio.run(serve(args.port, 0.0))
'''


def git_repo(path: Path, files: dict[str, str]) -> str:
    """A one-commit git repository with `files`; returns the commit."""
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    env_args = ["-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", *env_args, "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", *env_args, "-C", str(path), "commit", "-q", "-m", "stand-in"], check=True)
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def comfyui_repo(path: Path) -> str:
    return git_repo(
        path,
        {"main.py": STANDIN_MAIN.format(root=str(REPO_ROOT)), "requirements.txt": "# stand-in: nothing to install\n"},
    )


def node_repo(path: Path) -> str:
    return git_repo(
        path,
        {
            "__init__.py": "NODE_CLASS_MAPPINGS = {}\n",
            "nodes.py": "# stand-in\n",
            "requirements.txt": "\n",
            "checkpoints/place_checkpoints_here.txt": "",
        },
    )


def install_standins(tmp_path: Path) -> Layout:
    """ComfyUI and the node from local stand-in repos, installed under tmp_path/comfy with no checkpoints."""
    from backend import comfyui_install as ci

    return ci.install(
        ci.InstallOptions(
            root=tmp_path / "comfy",
            source=str(tmp_path / "c"),
            ref=comfyui_repo(tmp_path / "c"),
            node_source=str(tmp_path / "n"),
            node_ref=node_repo(tmp_path / "n"),
            checkpoints=(),
            device="cpu",
            torch_spec="",
            python=Path(sys.executable),
            extra_requirements=(),
            say=lambda line: None,
        )
    )


@dataclass
class FakeHub:
    """Serves `files` for any repository at /{repo}/resolve/{revision}/{name}."""

    files: dict[str, bytes]
    cut_first_get_at: int | None = None  # bytes sent before the first GET's connection is dropped
    serve_instead: dict[str, bytes] = field(default_factory=dict)  # same size, other bytes
    ranges: list[str] = field(default_factory=list)
    gets: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("HEAD", "/{repo:.+}/resolve/{revision}/{name}", self.head)
        app.router.add_get("/{repo:.+}/resolve/{revision}/{name}", self.get, allow_head=False)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def _headers(self, name: str) -> dict[str, str]:
        data = self.files[name]
        return {
            "X-Repo-Commit": "0" * 40,
            "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
            "X-Linked-Size": str(len(data)),
            "ETag": '"gitblobsha"',
            "Accept-Ranges": "bytes",
        }

    async def head(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        return web.Response(status=200, headers={**self._headers(name), "Content-Length": str(len(self.files[name]))})

    async def get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404)
        self.gets += 1
        data = self.serve_instead.get(name, self.files[name])
        start = 0
        if "Range" in request.headers:
            self.ranges.append(request.headers["Range"])
            start = int(request.headers["Range"].split("=")[1].split("-")[0])
        body = data[start:]
        response = web.StreamResponse(status=206 if start else 200, headers=self._headers(name))
        response.content_length = len(body)
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await response.prepare(request)
        if self.cut_first_get_at is not None and self.gets == 1:
            await response.write(body[: self.cut_first_get_at])
            request.transport.close()  # the connection drops mid-file
            return response
        await response.write(body)
        await response.write_eof()
        return response
