"""What every benchmark shares: a private redis-server, synthetic photos, runs, the table and the JSON.

Benchmarks start their own redis-server on a free loopback port (never the machine's 6379) unless
REDIS_URL is set. Every one takes --quick (tiny sizes: the smoke test runs them so they don't rot),
--runs (figures are the median of the runs, with min and max) and --out (the JSON; default
bench/results/<name>.json).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def parser(description: str, *, runs: int = 3) -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=description)
    parse.add_argument("--quick", action="store_true", help="tiny sizes, one run: checks the bench still works")
    parse.add_argument("--runs", type=int, default=runs)
    parse.add_argument("--out", type=Path, help="where the JSON goes (default bench/results/<name>.json)")
    return parse


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def private_redis(*, maxmemory: str = "") -> Iterator[str]:
    """A throwaway redis-server without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="repairbot-bench-") as tmp:
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
            "--logfile",
            str(Path(tmp) / "redis.log"),
        ]
        if maxmemory:
            args += ["--maxmemory", maxmemory]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.contextmanager
def redis_for_bench() -> Iterator[str]:
    """REDIS_URL when set (flushed before use is the caller's business), else a private server."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    else:
        with private_redis() as url:
            yield url


def photo(width: int, height: int, fmt: str = "JPEG", *, seed: int = 1, quality: int = 87) -> bytes:
    """A grey photo-like image (smooth blobs, not noise: it compresses like a photo does)."""
    from PIL import Image

    small = (max(2, width // 16), max(2, height // 16))
    base = Image.frombytes("L", small, random.Random(seed).randbytes(small[0] * small[1]))
    image = base.resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def child_env(redis_url: str, **extra: Any) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    env.update({key: str(value) for key, value in extra.items()})
    return env


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def cell(stats: dict[str, float], fmt: str = "{:,.0f}") -> str:
    """'median (min–max)' for a table."""
    if len(stats["runs"]) == 1:
        return fmt.format(stats["median"])
    return f"{fmt.format(stats['median'])} ({fmt.format(stats['min'])}–{fmt.format(stats['max'])})"


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def write_json(name: str, out: Path | None, data: dict[str, Any]) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "bench": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **data,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
