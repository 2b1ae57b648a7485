"""A small TCP proxy to put between a component and Redis, ComfyUI or a chat platform, and break the link.

Modes, switchable at any time and applied to live connections too:
- `pass`: bytes flow both ways;
- `delay`: every chunk waits `delay_s` before it is forwarded (order kept);
- `blackhole`: connections are accepted and kept open, but nothing is forwarded either way, as with a
  dead route or a frozen peer (the client only notices through its own timeouts);
- `reset`: every live connection is aborted with a TCP RST and new ones are reset at once.

`freeze_after(pattern)` switches to blackhole right after forwarding the client chunk that contains
`pattern` (e.g. a Redis command), so a test can kill the client in the window that follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

Mode = Literal["pass", "delay", "blackhole", "reset"]


class TcpProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int):
        self.target_host = target_host
        self.target_port = target_port
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.port = 0
        self.connections = 0  # accepted so far
        self._server: asyncio.base_events.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._trigger: tuple[bytes, asyncio.Event] | None = None

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._abort_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        self.mode = mode
        self.delay_s = delay_s
        if mode == "reset":
            self._abort_all()

    def freeze_after(self, pattern: bytes) -> asyncio.Event:
        """An event set when a client chunk containing `pattern` went through; blackhole from then on."""
        fired = asyncio.Event()
        self._trigger = (pattern, fired)
        return fired

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    # --- plumbing ---------------------------------------------------------------------------------
    def _abort_all(self) -> None:
        for client, upstream in list(self._live):
            for writer in (client, upstream):
                _rst(writer)
        self._live.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _rst(client_writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _rst(client_writer)  # what a client sees from a port with nobody behind it
            return
        pair = (client_writer, up_writer)
        self._live.add(pair)
        try:
            await asyncio.gather(
                self._pump(client_reader, up_writer, from_client=True),
                self._pump(up_reader, client_writer, from_client=False),
            )
        finally:
            self._live.discard(pair)
            for writer in pair:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self.mode == "blackhole":
                    continue
                if self.mode == "delay" and self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                await writer.drain()
                if from_client and self._trigger is not None:
                    pattern, fired = self._trigger
                    window = tail + chunk
                    if pattern in window:
                        self._trigger = None
                        self.mode = "blackhole"
                        fired.set()
                    tail = window[-len(pattern) :]
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.mode != "blackhole":
                with contextlib.suppress(Exception):
                    writer.close()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(Exception):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
