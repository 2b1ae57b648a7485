"""End to end with real processes: `repairbot worker` and `repairbot notifier` as subprocesses, a
real redis-server, the ComfyUI fake, and `repairbot submit` exactly as an operator would run it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import redis as sync_redis
from PIL import Image

from backend import keys
from backend.settings import REPO_ROOT
from tests.conftest import PHOTOS
from tests.support.redis_server import RedisServer
from tests.support.workflows import workflows_with_broken_mode

ASTRONAUT = PHOTOS / "astronaut_gray.jpg"


def repairbot_command() -> list[str]:
    found = shutil.which("repairbot")
    return [found] if found else [sys.executable, "-m", "backend.cli"]


class Stack:
    """Worker and notifier subprocesses sharing one environment with the test's `repairbot submit`."""

    def __init__(self, env: dict[str, str], workdir: Path):
        self.env = env
        self.workdir = workdir
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, *args: str) -> asyncio.subprocess.Process:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = await asyncio.create_subprocess_exec(
            *repairbot_command(), *args, env=self.env, cwd=self.workdir, stdout=log, stderr=log
        )
        self.procs[name] = proc
        await self.wait_for_log(name, " started")
        return proc

    async def wait_for_log(self, name: str, text: str, timeout: float = 30) -> None:
        """Wait until the process says `text` (its signal handlers are in place by then)."""
        for _ in range(int(timeout / 0.05)):
            if text in self.log(name):
                return
            if self.procs[name].returncode is not None:
                raise AssertionError(f"{name} exited early:\n{self.log(name)}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} never said {text!r}:\n{self.log(name)}")

    async def run(self, *args: str, timeout: float = 90) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *repairbot_command(),
            *args,
            env=self.env,
            cwd=self.workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode, out.decode(), err.decode()

    async def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name)
        if proc.returncode is None:
            proc.send_signal(sig)
        return await asyncio.wait_for(proc.wait(), 30)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def close(self) -> None:
        for name in list(self.procs):
            await self.stop(name)


def stack_env(redis_url: str, comfy_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "REDIS_", "COMFYUI_"))}
    env.update(
        REDIS_URL=redis_url,
        COMFYUI_URL=comfy_url,
        BLOCK_MS="200",
        MIN_IDLE_MS="2000",
        RETRY_BACKOFF_S="0.1",
        RETRY_BACKOFF_MAX_S="0.5",
        BREAKER_PROBE_MAX_S="0.5",
        COMFYUI_QUIET_POLL_S="0.5",
        SHUTDOWN_GRACE_S="10",
        TASK_TIMEOUT_S="30",
        PYTHONPATH=str(REPO_ROOT),
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@pytest.fixture
async def stack(redis_url, comfy_fake, tmp_path):
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path), tmp_path)
    await stack.start("worker", "worker")
    await stack.start("notifier", "notifier")
    yield stack
    codes = {name: await stack.stop(name) for name in list(stack.procs)}
    assert all(code == 0 for code in codes.values()), (codes, stack.log("worker"), stack.log("notifier"))


async def prompt_reached(comfy_fake, timeout: float = 10) -> None:
    """Wait until the worker has queued a prompt in the ComfyUI fake."""
    for _ in range(int(timeout / 0.05)):
        if comfy_fake.prompts:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no prompt reached ComfyUI")


def tinted(path: Path) -> bool:
    image = Image.open(io.BytesIO(path.read_bytes()))
    r, _, b = image.convert("RGB").resize((8, 8)).getpixel((3, 3))
    return image.format == "PNG" and "prompt" not in image.info and r > b


async def test_submit_wait_writes_the_colorized_image(stack, tmp_path):
    out = tmp_path / "out.png"
    code, stdout, stderr = await stack.run("submit", str(ASTRONAUT), "--mode", "person", "--wait", "--out", str(out))
    assert code == 0, stderr
    assert len(stdout.strip()) == 32
    assert tinted(out)
    assert Image.open(out).size == Image.open(ASTRONAUT).size

    code, stdout, _ = await stack.run("status", "--json")
    status = json.loads(stdout)
    assert code == 0 and status["queued"] == 0 and status["running"] == 0 and status["dead"] == 0
    assert status["paused"] is False and status["comfyui"][0]["healthy"] is True
    assert [w["name"] for w in status["workers"]] and isinstance(status["workers"][0]["idle_s"], int)


async def test_submit_without_wait_prints_the_id_and_returns(stack):
    code, stdout, _ = await stack.run("submit", str(ASTRONAUT), "--mode", "preview")
    assert code == 0 and len(stdout.strip()) == 32


async def test_intake_refusal_exits_2_with_message_and_code(stack, tmp_path):
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("hello, this is not a photo")
    code, _, stderr = await stack.run("submit", str(not_a_photo), "--wait")
    assert code == 2
    assert stderr.strip().endswith("[not_an_image]") and "JPEG" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = await stack.run("submit", str(ASTRONAUT), "--mode", "sepia")
    assert code == 2 and "[unknown_mode]" in stderr


async def test_comfyui_validation_error_fails_clearly_without_retry_loop(redis_url, comfy_fake, tmp_path):
    folder = workflows_with_broken_mode(tmp_path)
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path, WORKFLOWS_DIR=str(folder)), tmp_path)
    await stack.start("worker", "worker")
    await stack.start("notifier", "notifier")
    try:
        code, _, stderr = await stack.run("submit", str(ASTRONAUT), "--mode", "broken", "--wait", "--timeout", "60")
        assert code == 3
        assert stderr.strip().endswith("[comfyui_rejected]") and "Sorry" in stderr
        assert len(stderr.strip().splitlines()) == 1
        await asyncio.sleep(1)
        prompts = [r for r in comfy_fake.requests if r == ("POST", "/prompt")]
        assert len(prompts) == 1
        code, stdout, _ = await stack.run("status", "--json")
        assert json.loads(stdout)["running"] == 0
    finally:
        await stack.close()


async def test_task_waits_while_comfyui_is_down_and_completes_when_it_is_back(stack, comfy_fake, tmp_path):
    await comfy_fake.stop()
    out = tmp_path / "later.png"
    submit = asyncio.create_task(
        stack.run("submit", str(ASTRONAUT), "--mode", "preview", "--wait", "--out", str(out), "--timeout", "60")
    )
    await stack.wait_for_log("worker", "marked down")
    second = asyncio.create_task(
        stack.run(
            "submit",
            str(ASTRONAUT),
            "--mode",
            "preview",
            "--wait",
            "--out",
            str(tmp_path / "second.png"),
            "--timeout",
            "60",
        )
    )
    await asyncio.sleep(2)
    assert not submit.done() and not second.done(), "tasks must wait, not fail, while ComfyUI is down"
    code, status, _ = await stack.run("status", "--json")
    assert json.loads(status)["queued"] >= 1, "the breaker is open: new tasks stay in the stream"
    await comfy_fake.start()
    for waiting in (submit, second):
        code, _, stderr = await waiting
        assert code == 0, stderr + stack.log("worker")
    assert out.exists()


async def test_sigterm_lets_in_flight_work_finish(stack, comfy_fake, tmp_path):
    comfy_fake.delay_s = 2.0
    out = tmp_path / "graceful.png"
    submit = asyncio.create_task(
        stack.run("submit", str(ASTRONAUT), "--mode", "preview", "--wait", "--out", str(out), "--timeout", "60")
    )
    await prompt_reached(comfy_fake)
    assert await stack.stop("worker") == 0
    code, _, stderr = await submit
    assert code == 0, stderr
    assert "stopped" in stack.log("worker")


async def test_killed_worker_task_is_reclaimed_by_another(stack, comfy_fake, tmp_path):
    comfy_fake.delay_s = 3.0
    out = tmp_path / "reclaimed.png"
    submit = asyncio.create_task(
        stack.run("submit", str(ASTRONAUT), "--mode", "preview", "--wait", "--out", str(out), "--timeout", "60")
    )
    await prompt_reached(comfy_fake)
    assert await stack.stop("worker", signal.SIGKILL) == -signal.SIGKILL
    comfy_fake.delay_s = 0.0
    await stack.start("worker", "worker")
    code, _, stderr = await submit
    assert code == 0, stderr + stack.log("worker")
    assert out.exists()


async def test_redis_restarted_empty_groups_are_recreated(comfy_fake, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    stack = Stack(stack_env(server.url, comfy_fake.url, tmp_path), tmp_path)
    await stack.start("worker", "worker")
    await stack.start("notifier", "notifier")
    try:
        code, _, stderr = await stack.run(
            "submit", str(ASTRONAUT), "--mode", "preview", "--wait", "--out", str(tmp_path / "before-restart.png")
        )
        assert code == 0, stderr
        server.restart()  # no AOF: Redis comes back empty, groups gone
        out = tmp_path / "after-restart.png"
        code, _, stderr = await stack.run(
            "submit", str(ASTRONAUT), "--mode", "preview", "--wait", "--out", str(out), "--timeout", "60"
        )
        assert code == 0, stderr + stack.log("worker")
        assert out.exists()
    finally:
        await stack.close()
        server.stop()


async def test_up_runs_worker_and_notifier_in_one_process(redis_url, comfy_fake, tmp_path):
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path), tmp_path)
    proc = await stack.start("up", "up")
    try:
        await stack.wait_for_log("up", "notifier")
        assert "bots enabled: none" in stack.log("up") and "repairbot submit" in stack.log("up")
        out = tmp_path / "up.png"
        code, _, stderr = await stack.run("submit", str(ASTRONAUT), "--mode", "person", "--wait", "--out", str(out))
        assert code == 0, stderr + stack.log("up")
        assert tinted(out)
    finally:
        assert await stack.stop("up") == 0, stack.log("up")
    assert proc.returncode == 0


async def test_doctor_checks_redis_comfyui_and_every_mode(redis_url, comfy_fake, tmp_path):
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path), tmp_path)
    code, stdout, _ = await stack.run("doctor")
    assert code == 0, stdout
    assert "version 7." in stdout and "mode person: all nodes and values accepted" in stdout
    await comfy_fake.stop()
    code, stdout, _ = await stack.run("doctor")
    assert code == 1 and "not reachable" in stdout


async def test_pause_resume_and_dlq_commands(redis_url, comfy_fake, tmp_path):
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path), tmp_path)
    assert (await stack.run("pause"))[0] == 0
    code, _, stderr = await stack.run("submit", str(ASTRONAUT))
    assert code == 2 and "[paused]" in stderr
    code, stdout, _ = await stack.run("status", "--json")
    assert json.loads(stdout)["paused"] is True
    assert (await stack.run("resume"))[0] == 0
    code, stdout, _ = await stack.run("dlq", "list")
    assert code == 0 and "No dead letters" in stdout
    code, _, stderr = await stack.run("dlq", "retry", "f" * 32)
    assert code == 1 and "no such dead letter" in stderr
    code, stdout, _ = await stack.run("dlq", "purge")
    assert code == 0 and "purged 0" in stdout


async def test_worker_started_before_redis_waits_for_it(comfy_fake, tmp_path):
    server = RedisServer(tmp_path / "late-redis")
    stack = Stack(stack_env(server.url, comfy_fake.url, tmp_path), tmp_path)
    log = open(tmp_path / "worker.log", "ab")
    stack.procs["worker"] = await asyncio.create_subprocess_exec(
        *repairbot_command(), "worker", env=stack.env, cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        await stack.wait_for_log("worker", "Redis unavailable")
        server.start()
        await stack.wait_for_log("worker", " started")
        await stack.start("notifier", "notifier")
        code, _, stderr = await stack.run("submit", str(ASTRONAUT), "--mode", "preview", "--wait")
        assert code == 0, stderr + stack.log("worker")
    finally:
        await stack.close()
        server.stop()


async def test_wait_timeout_exits_4_and_the_task_stays_queued(stack, comfy_fake):
    await comfy_fake.stop()
    code, stdout, stderr = await stack.run("submit", str(ASTRONAUT), "--wait", "--timeout", "1")
    assert code == 4 and stderr.strip().endswith("[timeout]")
    code, status, _ = await stack.run("status", "--json")
    assert json.loads(status)["queued"] + json.loads(status)["running"] == 1
    await comfy_fake.start()


async def test_sigterm_hands_back_what_outlives_the_grace_period(redis_url, comfy_fake, tmp_path):
    stack = Stack(stack_env(redis_url, comfy_fake.url, tmp_path, SHUTDOWN_GRACE_S="0.5", MAX_DELIVERIES="1"), tmp_path)
    await stack.start("worker", "worker")
    await stack.start("notifier", "notifier")
    try:
        comfy_fake.delay_s = 6.0
        out = tmp_path / "handed-back.png"
        submit = asyncio.create_task(
            stack.run("submit", str(ASTRONAUT), "--mode", "preview", "--wait", "--out", str(out), "--timeout", "60")
        )
        await prompt_reached(comfy_fake)
        assert await stack.stop("worker") == 0
        assert "handed back 1 unfinished task" in stack.log("worker")
        assert ("POST", "/interrupt") in comfy_fake.requests  # the abandoned prompt does not keep the GPU busy
        comfy_fake.delay_s = 0.0
        await stack.start("worker", "worker")  # same host: it takes its own pending entry first
        code, _, stderr = await submit
        assert code == 0, stderr + stack.log("worker")  # a hand-back is not a failed delivery (MAX_DELIVERIES=1)
        assert out.exists()
    finally:
        await stack.close()


async def test_photos_queued_before_a_redis_restart_are_not_lost_with_aof(comfy_fake, tmp_path):
    server = RedisServer(tmp_path / "aof-redis", appendonly=True).start()
    stack = Stack(stack_env(server.url, comfy_fake.url, tmp_path), tmp_path)
    try:
        code, stdout, stderr = await stack.run("submit", str(ASTRONAUT), "--mode", "preview")  # no worker yet
        assert code == 0, stderr
        task_id = stdout.strip()
        server.restart()  # appendfsync always: the acknowledged submission survives
        await stack.start("worker", "worker")
        client = sync_redis.Redis.from_url(server.url)
        for _ in range(200):
            stored = client.hgetall(keys.result(task_id))
            if stored:
                break
            await asyncio.sleep(0.05)
        client.close()
        assert stored.get(b"status") == b"ok", stack.log("worker")
    finally:
        await stack.close()
        server.stop()
