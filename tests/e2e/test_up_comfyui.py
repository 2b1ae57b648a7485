"""`repairbot up` with COMFYUI_URL unset runs the installed ComfyUI itself (a stand-in whose main.py
serves the ComfyUI fake), a photo comes back colorized, and SIGTERM stops ComfyUI with the rest."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path

from PIL import Image, ImageStat

from backend import comfyui_install as ci
from backend.comfyui_supervisor import answers
from backend.settings import REPO_ROOT
from tests.support.comfyui_standin import comfyui_repo, install_standins, node_repo
from tests.support.redis_server import free_port


def environment(redis_url: str, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "REDIS_", "COMFYUI_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        REDIS_URL=redis_url,
        BLOCK_MS="200",
        COMFYUI_PORT=str(port),
        COMFYUI_DIR=str(tmp_path / "comfy"),
        **extra,
    )
    return env


async def start_up(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        "up",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_until(process: asyncio.subprocess.Process, needle: str, timeout: float = 60) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            line = await process.stdout.readline()
            if not line:
                break
            seen += line.decode(errors="replace")
    return seen


async def stop(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode(errors="replace")


async def test_up_runs_the_installed_comfyui_and_stops_it(redis_url, tmp_path, photo_bytes):
    await asyncio.to_thread(install_standins, tmp_path)
    port = free_port()
    env = environment(redis_url, tmp_path, port, COMFYUI_PYTHON=sys.executable)
    process = await start_up(env, tmp_path)
    try:
        seen = await read_until(process, "ComfyUI is ready")
        assert f"on http://127.0.0.1:{port} (--cpu)" in seen, seen
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(photo_bytes)
        submit = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backend.cli",
            "submit",
            str(photo),
            "--wait",
            "--out",
            str(tmp_path / "out.png"),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(submit.communicate(), 60)
        assert submit.returncode == 0, err
        red, _, blue = ImageStat.Stat(Image.open(io.BytesIO((tmp_path / "out.png").read_bytes())).convert("RGB")).mean
        assert red > blue + 10
    finally:
        log = await stop(process)
    assert process.returncode == 0, log[-3000:]
    assert "stopped ComfyUI" in log and not answers(f"http://127.0.0.1:{port}")
    assert "Traceback" not in log, log[-3000:]


async def test_up_without_an_install_says_so_in_one_line_and_keeps_running(redis_url, tmp_path):
    process = await start_up(environment(redis_url, tmp_path, free_port()), tmp_path)
    try:
        seen = await read_until(process, "none is installed")
        await asyncio.sleep(1)
        assert process.returncode is None, "up keeps running: tasks wait for a ComfyUI"
    finally:
        log = await stop(process)
    assert "repairbot comfyui install" in seen and "--install-comfyui" in seen
    assert "starting ComfyUI" not in log and process.returncode == 0


async def test_up_with_comfyui_url_set_starts_no_comfyui(redis_url, tmp_path, comfy_fake):
    env = environment(redis_url, tmp_path, free_port(), COMFYUI_URL=comfy_fake.url, COMFYUI_AUTO_INSTALL="true")
    process = await start_up(env, tmp_path)
    seen = ""
    try:
        seen = await read_until(process, "try it without chat")
    finally:
        log = seen + await stop(process)
    assert "ComfyUI" in log and "starting ComfyUI" not in log and "install" not in log.split("try it")[0].lower()
    assert not (tmp_path / "comfy").exists()


async def test_up_installs_comfyui_first_when_asked(redis_url, tmp_path):
    """`up --install-comfyui` with the sources, Python and weights given by settings (an offline install)."""
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"checkpoint")
    port = free_port()
    env = environment(
        redis_url,
        tmp_path,
        port,
        COMFYUI_PYTHON=sys.executable,
        COMFYUI_TORCH="",
        COMFYUI_SOURCE=str(tmp_path / "c"),
        COMFYUI_REF=comfyui_repo(tmp_path / "c"),
        COMFYUI_NODE_SOURCE=str(tmp_path / "n"),
        COMFYUI_NODE_REF=node_repo(tmp_path / "n"),
        COMFYUI_WEIGHTS=str(weights),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backend.cli",
        "up",
        "--install-comfyui",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    seen = ""
    try:
        seen = await read_until(process, "ComfyUI is ready", timeout=120)
    finally:
        log = seen + await stop(process)
    assert "[6/6] checkpoints ddcolor_modelscope.pth" in log and "ComfyUI is ready" in log, log[-3000:]
    layout = ci.Layout(tmp_path / "comfy", Path(sys.executable))
    assert layout.installed() and (layout.checkpoints / "ddcolor_modelscope.pth").read_bytes() == b"checkpoint"
    assert process.returncode == 0 and "stopped ComfyUI" in log
