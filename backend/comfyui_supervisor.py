"""The ComfyUI that `repairbot up` runs itself, as it runs its own Redis: one child process.

It listens on loopback only (ComfyUI has no authentication), with `--cpu` when the machine has no
NVIDIA GPU. `up` waits until it answers, starts it again with backoff when it dies, and stops it
(SIGTERM, then SIGKILL after a grace period) on Ctrl-C or SIGTERM. Its output goes to
`<COMFYUI_DIR>/comfyui.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from backend.backoff import Backoff, wait_event
from backend.comfyui_install import InstallError, Layout, install, options_from
from backend.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0  # the first start on a slow CPU imports torch and every node
STOP_GRACE_S = 15.0
BACKOFF_S = (1.0, 60.0)
STABLE_AFTER_S = 120.0  # up this long: the next crash starts again from the shortest backoff


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15)
        return done.returncode == 0 and "GPU " in done.stdout
    return False


def answers(url: str, timeout: float = 2.0) -> bool:
    """Does a ComfyUI answer /system_stats at `url`?"""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/system_stats", timeout=timeout) as resp:
            return resp.status == 200 and "system" in json.loads(resp.read() or b"{}")
    except (OSError, ValueError):
        return False


class ComfyUISupervisor:
    """Starts, watches and stops the installed ComfyUI under `layout`."""

    def __init__(
        self,
        layout: Layout,
        port: int,
        *,
        cpu: bool | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
        backoff_s: tuple[float, float] = BACKOFF_S,
        stop_grace_s: float = STOP_GRACE_S,
    ):
        self.layout = layout
        self.port = port
        self.cpu = (not has_gpu()) if cpu is None else cpu
        self.ready_timeout_s = ready_timeout_s
        self.backoff_s = backoff_s
        self.stop_grace_s = stop_grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.layout.root / "comfyui.log"

    def command(self) -> list[str]:
        command = [str(self.layout.python), "main.py", "--listen", "127.0.0.1", "--port", str(self.port)]
        return command + (["--cpu"] if self.cpu else [])

    def spawn(self) -> None:
        self.starts += 1
        log_file = self.log_path.open("ab")
        log_file.write(
            f"\n--- repairbot starts ComfyUI ({time.strftime('%Y-%m-%d %H:%M:%S')}): "
            f"{' '.join(self.command())}\n".encode()
        )
        log_file.flush()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.layout.comfyui,
            stdout=log_file,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        log_file.close()

    async def wait_ready(self, stop: asyncio.Event | None = None) -> bool:
        """Until ComfyUI answers; False when it exits first, takes longer than ready_timeout_s, or `stop`."""
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            if self.proc is None or self.proc.poll() is not None:
                return False
            if await asyncio.to_thread(answers, self.url, 1.0):
                return True
            await asyncio.sleep(0.5)
        return False

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        self.spawn()
        print(
            f"starting ComfyUI from {self.layout.comfyui} on {self.url}{' (--cpu)' if self.cpu else ''}; "
            f"log in {self.log_path}",
            flush=True,
        )
        started = time.monotonic()
        if await self.wait_ready(stop):
            print(f"ComfyUI is ready on {self.url} ({time.monotonic() - started:.0f} s)", flush=True)
            return True
        if stop is not None and stop.is_set():
            return False
        code = self.proc.poll() if self.proc else None
        print(
            f"ComfyUI did not become ready ({'exit code ' + str(code) if code is not None else 'timed out'}); "
            f"see {self.log_path}",
            file=sys.stderr,
            flush=True,
        )
        return False

    async def supervise(self, stop: asyncio.Event) -> None:
        """Keep ComfyUI running until `stop`; a child that dies is started again with backoff."""
        backoff = Backoff(*self.backoff_s)
        try:
            if self.proc is None:
                await self.start(stop)
            while not stop.is_set():
                up_since = time.monotonic()
                while not stop.is_set() and self.proc is not None and self.proc.poll() is None:
                    await wait_event(stop, 0.5)
                if stop.is_set():
                    break
                if time.monotonic() - up_since > STABLE_AFTER_S:
                    backoff.reset()
                code = self.proc.returncode if self.proc else None
                delay = backoff.next_delay()
                log.warning(
                    "ComfyUI exited (code %s); starting it again in %.0f s (log: %s)", code, delay, self.log_path
                )
                await wait_event(stop, delay)
                if stop.is_set():
                    break
                if await self.start(stop):
                    log.info("ComfyUI is back after a restart")
        finally:
            await asyncio.to_thread(self.terminate)

    def terminate(self) -> None:
        """SIGTERM to ComfyUI's process group, SIGKILL after the grace period."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        print("stopped ComfyUI", flush=True)


async def for_up(settings: Settings, *, allow_install: bool) -> ComfyUISupervisor | None:
    """What `repairbot up` does about ComfyUI when COMFYUI_URL is unset and nothing answers.

    Installed: a supervisor, started. Not installed: one line; installed first when allowed (the
    flag, COMFYUI_AUTO_INSTALL, or a yes at the terminal); None when not.
    """
    layout = Layout(Path(settings.comfyui_dir).resolve(), settings.comfyui_python)
    if not layout.installed():
        where = f"127.0.0.1:{settings.comfyui_port}"
        if not allow_install and sys.stdin.isatty() and sys.stdout.isatty():
            answer = await asyncio.to_thread(
                input,
                f"No ComfyUI answers on {where} and none is installed in "
                f"{layout.root}. Install it now (~1.5 GB download)? [y/N] ",
            )
            allow_install = answer.strip().lower() in ("y", "yes")
        if not allow_install:
            print(
                f"No ComfyUI answers on {where} and none is installed in {layout.root}: run `repairbot comfyui "
                "install`, or `repairbot up --install-comfyui` (COMFYUI_AUTO_INSTALL=true); tasks wait meanwhile.",
                flush=True,
            )
            return None
        try:
            await asyncio.to_thread(install, options_from(settings))
        except InstallError as exc:
            print(f"ComfyUI install failed: {exc}", file=sys.stderr, flush=True)
            return None
    state = layout.read_state()
    supervisor = ComfyUISupervisor(layout, settings.comfyui_port, cpu=state.get("device") == "cpu" or not has_gpu())
    await supervisor.start()
    return supervisor
