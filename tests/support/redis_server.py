"""A private `redis-server` on a free loopback port in a temp dir, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """Start, kill and restart a real redis-server; `appendonly` keeps data across restarts."""

    def __init__(self, workdir: Path, *, port: int | None = None, appendonly: bool = False):
        self.workdir = Path(workdir)
        # A port we chose is ours to choose again if another process takes it before we listen, as
        # long as nobody has been told it yet (read `port` or `url`) and the server never ran on it.
        self._movable = port is None
        self._port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        self._movable = False
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it and wait until it answers. A free port can be taken by another process (tests run
        in parallel) between choosing it and listening on it: then a chosen port is chosen again."""
        for _ in range(5):
            if self._start():
                self._movable = False
                return self
            if not self._movable:
                break
            self._port = free_port()
        raise RuntimeError(f"redis-server could not listen on port {self._port} (taken by another process?)")

    def _start(self) -> bool:
        """True once our own server answers on `port`; False when it could not listen there."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self._port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(host="127.0.0.1", port=self._port, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:  # exited: most likely the port was taken
                    self.proc = None
                    return False
                try:
                    info = client.info("server")
                except redis.ConnectionError:
                    time.sleep(0.05)
                    continue
                if int(info["process_id"]) != self.proc.pid:  # someone else's server answered there
                    self.stop(kill=True)
                    return False
                version = str(info["redis_version"])
                if tuple(int(part) for part in version.split(".")[:2]) < (7, 0):
                    self.stop()
                    raise RuntimeError(f"redis-server {version} is too old: repairbot needs Redis 7.0 or newer")
                return True
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not start on port {self._port}")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
