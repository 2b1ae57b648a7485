"""Helpers for the operations tests: start `repairbot up` as a subprocess, scrape and parse /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from backend.settings import REPO_ROOT
from tests.support.redis_server import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any repairbot setting, plus `extra`."""
    prefixes = ("TELEGRAM_", "DISCORD_", "REDIS_", "COMFYUI_", "METRICS_", "LOG_", "OPS_", "ALERT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        BLOCK_MS="200",
        OPS_INTERVAL_S="0.5",
        RETRY_BACKOFF_S="0.1",
        RETRY_BACKOFF_MAX_S="0.5",
        BREAKER_PROBE_MAX_S="0.5",
        **extra,
    )
    return env


class Up:
    """`repairbot up` in a subprocess with METRICS_PORT on a free port; stderr kept for the log checks."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.port = free_port()
        self.cwd = cwd
        self.env = {**env, "METRICS_PORT": str(self.port)}
        self.process: asyncio.subprocess.Process | None = None
        self.stdout = self.stderr = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Up:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backend.cli",
            "up",
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await self.wait_status("/livez", 200)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.process.communicate(), 60)
        self.stdout, self.stderr = out.decode(errors="replace"), err.decode(errors="replace")
        return self.process.returncode or 0

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(self.base + path, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    return response.status, await response.text()
        except (TimeoutError, aiohttp.ClientError):
            return 0, ""

    async def wait_status(self, path: str, status: int, timeout: float = 30.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            got, body = await self.get(path)
            if got == status:
                return body
            assert self.process is None or self.process.returncode is None, "repairbot up exited"
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{path} answered {got} {body!r}, not {status}")
            await asyncio.sleep(0.1)

    async def metrics(self) -> Samples:
        status, body = await self.get("/metrics")
        assert status == 200
        return parse(body)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, 0 when absent (a labelled counter appears at its first increment)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
