"""Blob stores: TTL, size cap, and keys that can never become paths outside the store."""

import os
import time

import fakeredis
import pytest

from backend.blobs import BlobTooLarge, FileBlobStore, RedisBlobStore


@pytest.fixture
async def fake_redis():
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


async def test_redis_store_round_trip_with_ttl(fake_redis):
    store = RedisBlobStore(fake_redis, ttl_s=60, max_bytes=1000)
    key = await store.put("in", b"\x89PNG bytes")
    assert key.startswith("blob:in:")
    assert await store.get(key) == b"\x89PNG bytes"
    assert 0 < await fake_redis.ttl(key) <= 60
    await store.delete(key)
    assert await store.get(key) is None


async def test_size_cap(fake_redis, tmp_path):
    for store in (RedisBlobStore(fake_redis, max_bytes=10), FileBlobStore(tmp_path, max_bytes=10)):
        with pytest.raises(BlobTooLarge):
            await store.put("in", b"x" * 11)


@pytest.mark.parametrize(
    "key",
    [
        "blob:in:../../etc/passwd",
        "/etc/passwd",
        "blob:in:" + "A" * 32,
        "blob:tmp:" + "a" * 32,
        "blob:in:" + "a" * 31 + "/",
    ],
)
async def test_keys_that_are_not_ours_are_rejected(fake_redis, tmp_path, key):
    for store in (RedisBlobStore(fake_redis), FileBlobStore(tmp_path)):
        with pytest.raises(ValueError):
            await store.get(key)


async def test_file_store_round_trip_and_expiry(tmp_path):
    store = FileBlobStore(tmp_path, ttl_s=60)
    key = await store.put("out", b"image")
    assert await store.get(key) == b"image"
    files = list(tmp_path.rglob("*"))
    assert all(tmp_path in f.parents for f in files)
    path = next(f for f in files if f.is_file())
    old = time.time() - 120
    os.utime(path, (old, old))
    assert await store.get(key) is None
    assert not path.exists()


async def test_file_store_sweep(tmp_path):
    store = FileBlobStore(tmp_path, ttl_s=60)
    keep = await store.put("in", b"new")
    gone = await store.put("in", b"old")
    old = time.time() - 120
    os.utime(store._path(gone), (old, old))
    assert await store.sweep() == 1
    assert await store.get(keep) == b"new"
