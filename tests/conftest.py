"""Shared fixtures: a private real redis-server per session, a clean database per test, settings
pointing at it, and the ComfyUI fake. Nothing here touches the machine's own Redis on 6379."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from backend.settings import Settings
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
