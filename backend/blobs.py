"""Where image bytes live between intake, worker and notifier.

Records carry blob keys only (`blob:<kind>:<id>`), never bytes or paths. The Redis store keeps each
blob under its key with a TTL; the filesystem store (for operators who keep Redis small) maps a key
to a file name built from the key's validated id alone, so a record can never point outside its dir.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis

KINDS = ("in", "out")
# The one grammar of blob keys: records are validated with it (backend.tasks), so a key a store
# would refuse never gets past decoding (a malformed entry, dead-lettered on first sight).
BLOB_KEY = re.compile(r"^blob:(in|out):([0-9a-f]{32})$")


class BlobTooLarge(ValueError):
    pass


def new_blob_key(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown blob kind {kind!r}")
    return f"blob:{kind}:{uuid.uuid4().hex}"


def parse_blob_key(key: str) -> tuple[str, str]:
    match = BLOB_KEY.fullmatch(key)
    if not match:
        raise ValueError("not a blob key")
    return match.group(1), match.group(2)


class BlobStore(Protocol):
    async def put(self, kind: str, data: bytes | memoryview) -> str: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class RedisBlobStore:
    """Blobs as plain Redis strings with a TTL: nothing to share between hosts but Redis itself."""

    def __init__(self, redis: Redis, *, ttl_s: int = 24 * 3600, max_bytes: int = 64 * 1024 * 1024):
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes

    async def put(self, kind: str, data: bytes | memoryview) -> str:
        if len(data) > self.max_bytes:
            raise BlobTooLarge(f"{len(data)} bytes is over the blob cap of {self.max_bytes}")
        key = new_blob_key(kind)
        await self.redis.set(key, data, ex=self.ttl_s)
        return key

    async def get(self, key: str) -> bytes | None:
        parse_blob_key(key)
        data: bytes | None = await self.redis.get(key)
        return data

    async def delete(self, key: str) -> None:
        parse_blob_key(key)
        await self.redis.delete(key)


class FileBlobStore:
    """Blobs as files under one directory; expired files are treated as gone and swept lazily."""

    def __init__(self, root: Path, *, ttl_s: int = 24 * 3600, max_bytes: int = 64 * 1024 * 1024):
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes

    def _path(self, key: str) -> Path:
        kind, ident = parse_blob_key(key)
        return self.root / kind / ident

    async def put(self, kind: str, data: bytes | memoryview) -> str:
        if len(data) > self.max_bytes:
            raise BlobTooLarge(f"{len(data)} bytes is over the blob cap of {self.max_bytes}")
        key = new_blob_key(kind)
        path = self._path(key)
        await asyncio.to_thread(self._write, path, data)
        return key

    @staticmethod
    def _write(path: Path, data: bytes | memoryview) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        return await asyncio.to_thread(self._read, path)

    def _read(self, path: Path) -> bytes | None:
        try:
            if time.time() - path.stat().st_mtime > self.ttl_s:
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, True)

    async def sweep(self) -> int:
        """Remove expired files; returns how many went."""

        def run() -> int:
            removed = 0
            cutoff = time.time() - self.ttl_s
            for kind in KINDS:
                folder = self.root / kind
                if not folder.is_dir():
                    continue
                for path in folder.iterdir():
                    if path.stat().st_mtime < cutoff:
                        path.unlink(missing_ok=True)
                        removed += 1
            return removed

        return await asyncio.to_thread(run)
