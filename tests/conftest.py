"""Shared fixtures: a private real redis-server per session, a clean database per test, settings
pointing at it, and the ComfyUI fake. Nothing here touches the machine's own Redis on 6379.

The tests run in parallel (pytest-xdist, `addopts` in pyproject.toml): each worker is its own pytest
session, so "per session" is per worker (its own server, port and temp dir). The chaos ledgers' summary
is here because the controller, which prints it, never loads tests/chaos/conftest.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from backend.settings import Settings
from tests.chaos.ledger import LEDGERS, table
from tests.support.redis_server import RedisServer

DATA = Path(__file__).resolve().parent / "data"
PHOTOS = DATA / "photos"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The private server, emptied before each test."""
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> Redis:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def comfy_fake():
    """A ComfyUI fake on a free loopback port, zero delay; tests tune it through its attributes."""
    from tests.fakes.comfyui import FakeComfyUI

    fake = FakeComfyUI()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def settings(redis_url: str, comfy_fake, tmp_path: Path) -> Settings:
    """Settings for one test: the private Redis, the fake ComfyUI, short timeouts."""
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        comfyui_url=comfy_fake.url,
        blob_dir=tmp_path / "blobs",
        var_dir=tmp_path / "var",
        block_ms=200,
        min_idle_ms=3000,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.5,
        comfyui_quiet_poll_s=0.5,
        breaker_probe_max_s=0.5,
        shutdown_grace_s=5,
        task_timeout_s=30,
    )


@pytest.fixture
def photo_bytes() -> bytes:
    return (PHOTOS / "astronaut_gray.jpg").read_bytes()


# --- the chaos ledgers' session summary ---------------------------------------------------------------
# Printed after the run as a Markdown table and written as JSON to `$CHAOS_LEDGER_OUT` (default:
# `chaos-ledger.json` in pytest's base temp directory). Each xdist worker hands its rows to the
# controller at its session's end; a serial run has them all in this process.

WORKER_ROWS: list[dict[str, Any]] = []


def ledger_rows() -> list[dict[str, Any]]:
    return [ledger.row() | {"outcome": getattr(ledger, "outcome", "?")} for ledger in LEDGERS]


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)  # set on an xdist worker only
    if workeroutput is not None:
        workeroutput["chaos_ledger"] = ledger_rows()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller hears from each worker that finished
def pytest_testnodedown(node: Any, error: object) -> None:
    WORKER_ROWS.extend(getattr(node, "workeroutput", {}).get("chaos_ledger", []))


def ledger_path(config: pytest.Config) -> Path:
    configured = os.environ.get("CHAOS_LEDGER_OUT")
    if configured:
        return Path(configured)
    return Path(config._tmp_path_factory.getbasetemp()) / "chaos-ledger.json"  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workeroutput"):
        return  # the controller prints it
    rows = ledger_rows() + WORKER_ROWS
    if not rows:
        return
    path = ledger_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    terminalreporter.section("chaos ledger")
    terminalreporter.write_line(table(rows))
    for row in rows:
        if row["notes"]:
            terminalreporter.write_line(f"{row['scenario']}: {'; '.join(row['notes'])}")
    terminalreporter.write_line(f"ledger JSON: {path}")
