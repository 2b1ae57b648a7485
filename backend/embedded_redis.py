"""The private redis-server `repairbot up` starts when nothing answers on 127.0.0.1:6379: a single-machine
start with no setup, its data kept (AOF, fsync always) under VAR_DIR/redis."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from backend.settings import Settings

HOST, PORT = "127.0.0.1", 6379


def port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class EmbeddedRedis:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_embedded_redis(settings: Settings) -> EmbeddedRedis | None:
    """Start it and wait until it answers; None (the reason printed) when it can't be started."""
    binary = shutil.which("redis-server")
    if binary is None:
        print(
            f"No Redis answers on {HOST}:{PORT} and redis-server is not installed.\n"
            "Install it (apt-get install -y redis-server), or point REDIS_URL at a Redis >= 7.0.",
            file=sys.stderr,
        )
        return None
    data_dir = (settings.var_dir / "redis").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(PORT),
            "--bind",
            HOST,
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if port_open(HOST, PORT):
            print(f"started a private redis-server (AOF in {data_dir})")
            return EmbeddedRedis(proc, PORT)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    print(f"redis-server did not start; see {data_dir / 'redis.log'}", file=sys.stderr)
    return None
