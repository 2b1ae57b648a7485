"""A whole repairbot deployment for one chaos scenario, built from real parts.

A private redis-server, the ComfyUI, Telegram and Discord fakes in the test's event loop, TCP proxies
where a scenario wants to break a link, and `python3 -m backend.cli worker|notifier|telegram|discord`
as real subprocesses that can be killed with any signal and started again. The scenario pushes photos
in as fake users and reads the ledger out of the fakes and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from backend.settings import REPO_ROOT
from tests.chaos.ledger import Ledger
from tests.chaos.platforms import (
    ChaosDiscord,
    ChaosTelegram,
    Submission,
    comfy_runs,
    discord_outcomes,
    gray_photo,
    telegram_outcomes,
)
from tests.fakes.comfyui import FakeComfyUI
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

ROLES = ("worker", "notifier", "telegram", "discord")
STARTED = {"worker": " started", "notifier": " started"}
# The chaos defaults: fast blocking reads, short backoffs. MIN_IDLE_MS and the lease stay at their
# defaults unless a scenario says otherwise.
BASE_ENV = {
    "BLOCK_MS": "500",
    "RETRY_BACKOFF_S": "0.1",
    "RETRY_BACKOFF_MAX_S": "1",
    "BREAKER_PROBE_MAX_S": "1",
    "COMFYUI_QUIET_POLL_S": "1",
    "SHUTDOWN_GRACE_S": "10",
    "USER_MAX_PER_HOUR": "1000",
    "LOG_LEVEL": "INFO",
}


@dataclass
class Component:
    name: str
    role: str
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ChaosStack:
    """`async with ChaosStack(tmp_path, ledger, ...) as stack:` everything is torn down afterwards."""

    def __init__(
        self,
        workdir: Path,
        ledger: Ledger,
        *,
        env: dict[str, str] | None = None,
        comfy_delay_s: float = 0.1,
        appendonly: bool = False,
        discord: bool = False,
    ):
        self.workdir = Path(workdir)
        self.ledger = ledger
        self.env_overrides = {**BASE_ENV, **(env or {})}
        self.redis_server = RedisServer(self.workdir / "redis", appendonly=appendonly)
        self.comfy = FakeComfyUI(delay_s=comfy_delay_s)
        self.telegram = ChaosTelegram()
        self.discord = ChaosDiscord() if discord else None
        self.components: dict[str, Component] = {}
        self.proxies: dict[str, TcpProxy] = {}
        self.subs: list[Submission] = []
        self.redis: aioredis.Redis | None = None
        self._next_user = 10_000
        self._next_seed = 0
        self._closers: list[Callable[[], Awaitable[Any]]] = []
        self._filled = False
        # A scenario hook awaited before ComfyUI handles an upload (uploads carry no task id).
        self.on_upload: Callable[[], Awaitable[None]] | None = None
        self.prompt_tasks: dict[str, str] = {}  # ComfyUI prompt_id -> task id, see _map_prompts
        self._hook_comfy()

    # --- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> ChaosStack:
        await asyncio.to_thread(self.redis_server.start)
        self._closers.append(lambda: asyncio.to_thread(self.redis_server.stop, kill=True))
        await self.comfy.start()
        self._closers.append(self.comfy.stop)
        await self.telegram.start()
        self._closers.append(self.telegram.stop)
        if self.discord is not None:
            await self.discord.start()
            self._closers.append(self.discord.stop)
        self.redis = aioredis.Redis.from_url(self.redis_server.url, socket_timeout=5)
        self._closers.append(self.redis.aclose)
        mapper = asyncio.create_task(self._map_prompts())
        self._closers.append(lambda: _cancel(mapper))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if not self._filled:
            with contextlib.suppress(Exception):
                await self.fill_ledger()
        for component in self.components.values():
            if component.alive:
                with contextlib.suppress(ProcessLookupError):
                    component.proc.kill()  # type: ignore[union-attr]
                await component.proc.wait()  # type: ignore[union-attr]
        for proxy in self.proxies.values():
            await proxy.stop()
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                await close()

    def _hook_comfy(self) -> None:
        """Let the scenario act (hold, kill) when a task's upload or prompt reaches ComfyUI."""
        fake = self.comfy
        upload = fake.upload_image

        async def hooked_upload(request: web.Request) -> web.StreamResponse:
            if self.on_upload is not None:
                await self.on_upload()
            return await upload(request)

        fake.upload_image = hooked_upload  # bound by start()

    async def _map_prompts(self) -> None:
        """Which task each ComfyUI prompt belongs to. Prompts carry no task id; the worker writes the
        prompt_id into the task's hash as soon as ComfyUI accepted it, and keeps it there until the next
        attempt, so polling the hashes finds every attempt."""
        while True:
            await asyncio.sleep(0.05)
            if all(pid.removesuffix("-file") in self.prompt_tasks for pid in list(self.comfy.prompts)):
                continue
            with contextlib.suppress(Exception):
                names = [key async for key in self.redis.scan_iter(match="repairbot:task:*", count=500)]  # type: ignore[union-attr]
                async with self.redis.pipeline(transaction=False) as pipe:  # type: ignore[union-attr]
                    for name in names:
                        pipe.hget(name, "prompt_id")
                    found = await pipe.execute()
                for name, prompt_id in zip(names, found):
                    if prompt_id:
                        self.prompt_tasks[prompt_id.decode()] = name.decode().rsplit(":", 1)[-1]

    def running_task(self) -> str | None:
        """The task whose prompt ComfyUI is executing right now, once known."""
        running = self.comfy.executor.running
        return self.prompt_tasks.get(running.prompt_id) if running is not None else None

    async def task_ids(self) -> dict[int, list[str]]:
        """Task ids per chat, read from the task stream."""
        found: dict[int, list[str]] = {}
        with contextlib.suppress(Exception):
            for _, fields in await self.redis.xrange("photo_repair_tasks"):  # type: ignore[union-attr]
                reply = json.loads(fields.get(b"reply", b"{}"))
                if "chat_id" in reply:
                    found.setdefault(int(reply["chat_id"]), []).append(fields[b"task_id"].decode())
        return found

    async def owner_of(self, task_id: str) -> str | None:
        """The consumer holding the task's entry in the workers group (None once acknowledged)."""
        ids = {}
        with contextlib.suppress(Exception):
            for entry_id, fields in await self.redis.xrange("photo_repair_tasks"):  # type: ignore[union-attr]
                if fields.get(b"task_id", b"").decode() == task_id:
                    ids[entry_id] = True
        for pending in await self.pending("photo_repair_tasks", "repair_workers"):
            if pending["message_id"] in ids:
                return pending["consumer"].decode()
        return None

    def consumer_of(self, name: str) -> str:
        """The Redis consumer name component `name` announced at its latest start."""
        since = self.components[name].log().rsplit("===== start", 1)[-1]
        match = re.search(r"(?:worker|notifier) (\S+) started", since)
        assert match, f"{name} has not said its consumer name"
        return match.group(1)

    async def entries_of(self, stream: str, group: str, consumer: str) -> set[bytes]:
        return {p["message_id"] for p in await self.pending(stream, group) if p["consumer"].decode() == consumer}

    def component_named(self, consumer: str) -> Component:
        """The running component that announced itself under Redis consumer name `consumer`."""
        for component in self.components.values():
            if component.alive and f" {consumer} started" in component.log().rsplit("===== start", 1)[-1]:
                return component
        raise AssertionError(f"no running component is {consumer}")

    async def proxy(self, name: str, port: int) -> TcpProxy:
        """A proxy named `name` in front of 127.0.0.1:`port` (made once)."""
        if name not in self.proxies:
            self.proxies[name] = await TcpProxy("127.0.0.1", port).start()
        return self.proxies[name]

    # --- components --------------------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "TELEGRAM_", "REDIS_", "COMFYUI_"))
        }
        env = {
            **inherited,
            "PYTHONPATH": str(REPO_ROOT),
            "PTB_TIMEDELTA": "1",
            "REDIS_URL": self.redis_server.url,
            "COMFYUI_URL": self.comfy.url,
            "TELEGRAM_BOT_TOKEN": self.telegram.token,
            "TELEGRAM_API_BASE": self.telegram.api_base,
            "TELEGRAM_FILE_BASE": self.telegram.file_base,
            "VAR_DIR": str(self.workdir / "var"),
            **self.env_overrides,
        }
        if self.discord is not None:
            env.update(
                {
                    "DISCORD_BOT_TOKEN": "chaos-token",
                    "DISCORD_API_BASE": self.discord.api_base,
                    "DISCORD_GATEWAY_URL": self.discord.gateway_url,
                }
            )
        return env

    async def spawn(self, name: str, role: str, *, env: dict[str, str] | None = None, wait: bool = True) -> Component:
        """Start `python3 -m backend.cli <role>` as `name`; waits until it is ready unless told not to."""
        assert role in ROLES
        component = self.components.get(name)
        if component is None:
            component = Component(name, role, {**self.base_env(), **(env or {})}, self.workdir / f"{name}.log")
            self.components[name] = component
        assert not component.alive, f"{name} is running"
        log = open(component.log_path, "ab")
        log.write(f"\n===== start {component.starts + 1} at {time.time():.3f}\n".encode())
        log.flush()
        calls_before = len(self.telegram.calls_to("getUpdates"))
        component.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backend.cli",
            role,
            env=component.env,
            cwd=self.workdir,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        component.starts += 1
        if wait:
            await self.ready(component, calls_before)
        return component

    async def ready(self, component: Component, calls_before: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        marker = f"===== start {component.starts}"
        while time.monotonic() < deadline:
            if not component.alive:
                raise AssertionError(f"{component.name} exited early:\n{component.log()[-4000:]}")
            since = component.log().rsplit(marker, 1)[-1]
            if component.role in STARTED and STARTED[component.role] in since:
                return
            if component.role == "telegram":
                if component.env.get("TELEGRAM_WEBHOOK_URL"):
                    if self.telegram.webhook is not None:
                        return
                elif len(self.telegram.calls_to("getUpdates")) > calls_before:
                    return
            if component.role == "discord" and self.discord is not None and self.discord.identified.is_set():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{component.name} not ready after {timeout} s:\n{component.log()[-4000:]}")

    async def start_default(self, workers: int = 1, *, bot: str = "telegram") -> None:
        """The usual shape: one bot, `workers` workers and one notifier, started side by side."""
        parts = [self.spawn(f"worker{i + 1}", "worker") for i in range(workers)]
        parts.append(self.spawn("notifier", "notifier"))
        parts.append(self.spawn(bot, bot))
        await asyncio.gather(*parts)

    def send_signal(self, name: str, sig: int = signal.SIGKILL) -> None:
        component = self.components[name]
        assert component.alive, f"{name} is not running"
        component.proc.send_signal(sig)  # type: ignore[union-attr]

    async def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        """Send `sig` and wait for the process to end; returns its exit status."""
        self.send_signal(name, sig)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as
        # the process ends, and a helper cancelled in here then never ends (test_poison's hang).
        async with asyncio.timeout(timeout):
            return await self.components[name].proc.wait()  # type: ignore[union-attr]

    # --- users ---------------------------------------------------------------------------------------
    def new_chat(self) -> int:
        self._next_user += 1
        return self._next_user

    def photo(self) -> bytes:
        self._next_seed += 1
        return gray_photo(self._next_seed)

    def telegram_message(self, chat_id: int, photo: bytes) -> dict[str, Any]:
        file_id = self.telegram.add_file(photo)
        return {
            "message_id": self.telegram.next_message_id(),
            "date": 1700000000,
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Ann", "language_code": "en"},
            "photo": [
                {
                    "file_id": file_id,
                    "file_unique_id": f"u{file_id}",
                    "width": 160,
                    "height": 120,
                    "file_size": len(photo),
                }
            ],
        }

    async def send_telegram_photo(self, chat_id: int | None = None, photo: bytes | None = None) -> Submission:
        chat_id = chat_id or self.new_chat()
        photo = photo or self.photo()
        message = self.telegram_message(chat_id, photo)
        await self.telegram.push_update({"message": message})
        sub = Submission("telegram", chat_id, message_id=message["message_id"], photo=photo)
        self.subs.append(sub)
        return sub

    async def send_telegram_photos(self, count: int, *, pause_s: float = 0.0) -> list[Submission]:
        subs = []
        for _ in range(count):
            subs.append(await self.send_telegram_photo())
            if pause_s:
                await asyncio.sleep(pause_s)
        return subs

    def discord_interaction(self, user_id: int, photo: bytes) -> dict[str, Any]:
        assert self.discord is not None
        attachment = self.discord.add_file(photo, f"photo-{user_id}.jpg")
        return self.discord.slash(
            "colorize",
            [{"name": "image", "type": 11, "value": attachment["id"]}],
            attachments=[attachment],
            user_id=user_id,
            channel_id=user_id,
        )

    async def send_discord_photo(self, user_id: int | None = None) -> Submission:
        assert self.discord is not None
        user_id = user_id or self.new_chat()
        photo = self.photo()
        interaction = self.discord_interaction(user_id, photo)
        await self.discord.push_interaction(interaction)
        sub = Submission("discord", user_id, token=interaction["token"], photo=photo)
        self.subs.append(sub)
        return sub

    # --- reading what happened -----------------------------------------------------------------------
    def outcomes(self, *, final: bool = False) -> tuple[dict[Any, Any], int]:
        outcomes, duplicates = telegram_outcomes(self.telegram, self.subs, final=final)
        if self.discord is not None:
            d_outcomes, d_duplicates = discord_outcomes(self.discord, self.subs)
            outcomes.update(d_outcomes)
            duplicates += d_duplicates
        return outcomes, duplicates

    def outcome(self, sub: Submission, *, final: bool = False) -> Any:
        return self.outcomes(final=final)[0][self.key(sub)]

    def answered(self, sub: Submission) -> bool:
        outcome = self.outcome(sub)
        return outcome.delivered or outcome.refused

    async def wait_answered(
        self, subs: list[Submission] | None = None, timeout: float = 60, on_each: Callable[[], None] | None = None
    ) -> bool:
        """Until every submission has its result or a refusal (False on timeout)."""
        subs = self.subs if subs is None else subs
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes, _ = self.outcomes()
            keys = [s.message_id if s.platform == "telegram" else s.token for s in subs]
            if all(outcomes[k].delivered or outcomes[k].refused for k in keys):
                return True
            await asyncio.sleep(0.1)
        return False

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60, step: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(step)
        raise AssertionError(f"timed out after {timeout} s")

    async def pending(self, stream: str, group: str) -> list[dict]:
        """XPENDING details of `group` on `stream` (empty when the group or Redis is gone)."""
        try:
            return await self.redis.xpending_range(stream, group, min="-", max="+", count=1000)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - a missing group or a restarting Redis: nothing to report
            return []

    async def quiescent(self) -> bool:
        """Nothing pending or unread in the task and result groups."""
        try:
            for stream in ("photo_repair_tasks", "photo_repair_results"):
                for group in await self.redis.xinfo_groups(stream):  # type: ignore[union-attr]
                    if int(group.get("pending") or 0) or int(group.get("lag") or 0):
                        return False
        except Exception:  # noqa: BLE001 - no stream yet counts as quiet
            return True
        return True

    async def settle(self, timeout: float = 20, extra_s: float = 1.0) -> None:
        """Let late duplicates show: wait until the groups are drained, then a little more."""
        with contextlib.suppress(AssertionError):
            await self.wait_for(self.quiescent, timeout=timeout, step=0.2)
        await asyncio.sleep(extra_s)

    async def dead_letters(self) -> list[dict]:
        try:
            entries = await self.redis.xrange("photo_repair_dead")  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001
            return []
        return [{k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in entries]

    async def fill_ledger(self) -> Ledger:
        """Count what the fakes and Redis saw into the ledger."""
        ledger = self.ledger
        self._filled = True
        outcomes, duplicates = self.outcomes(final=True)
        ledger.submitted = len(self.subs)
        ledger.delivered = sum(1 for o in outcomes.values() if o.delivered)
        ledger.refused = sum(1 for o in outcomes.values() if o.refused)
        ledger.lost = sum(1 for o in outcomes.values() if not o.delivered and not o.refused)
        ledger.generic_errors = sum(1 for o in outcomes.values() if o.generic_error)
        ledger.duplicates = duplicates
        ledger.runs, runs = comfy_runs(self.comfy, self.prompt_tasks)
        ledger.reruns = sum(count - 1 for count in runs.values())
        if ledger.runs > sum(runs.values()):
            ledger.note(f"{ledger.runs - sum(runs.values())} prompts of unknown tasks")
        dead = await self.dead_letters()
        ledger.dead = len(dead)
        for letter in dead[:5]:
            ledger.note(
                f"dead letter {letter.get('task_id', '?')[:8]}: {letter.get('reason', '?')} "
                f"after {letter.get('deliveries', '?')} deliveries ({letter.get('last_error', '')[:80]})"
            )
        extra_tasks = len(runs) - len(self.subs)
        if extra_tasks > 0:
            ledger.note(f"{extra_tasks} more tasks ran than photos were sent")
        unanswered = [
            s.chat_id for s in self.subs if not (outcomes[self.key(s)].delivered or outcomes[self.key(s)].refused)
        ]
        if unanswered:
            ledger.note(f"no answer in chats {unanswered[:10]}")
        return ledger.finish()

    @staticmethod
    def key(sub: Submission) -> Any:
        return sub.message_id if sub.platform == "telegram" else sub.token

    def logs(self, tail: int = 3000) -> str:
        """The end of every component's log (the whole logs stay in the test's tmp_path)."""
        return "\n".join(f"--- {c.name} ---\n{c.log()[-tail:]}" for c in self.components.values())


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def remove_redis_data(server: RedisServer) -> None:
    """What an emptied Redis looks like: no AOF, no dump."""
    for path in server.workdir.iterdir():
        if path.name.startswith(("appendonly", "dump")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
