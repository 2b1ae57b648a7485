"""`repairbot submit`: queue a photo from the command line and, with --wait, follow it to its result.

Exit codes are a contract (DESIGN.md): 0 ok, 2 refused at intake, 3 processing failed or was
cancelled, 4 timed out (130 when stopped by a signal). Failures print one line on stderr: the
user-facing message, then the stable error code in brackets.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import sys
from pathlib import Path

from backend.errors import Refused
from backend.replies import CliReply
from backend.services import Services
from backend.settings import Settings
from backend.tasks import MalformedRecord

log = logging.getLogger("repairbot")

EXIT_OK, EXIT_REFUSED, EXIT_FAILED, EXIT_TIMEOUT = 0, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it


async def submit_file(
    settings: Settings,
    path: Path,
    stop: asyncio.Event,
    *,
    mode: str | None = None,
    wait: bool = False,
    out: Path | None = None,
    timeout_s: float = 600.0,
) -> int:
    """Queue `path` (as the local user, exempt from chat limits); with `wait`, save the result to `out`
    (default: next to the photo, `<name>.color.png`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"Cannot read {path}: {exc.strerror}. [unreadable_file]", file=sys.stderr)
        return EXIT_REFUSED
    async with Services.open(settings, comfyui=False) as services:
        try:
            submitted = await services.intake.submit(
                data,
                mode=mode or settings.default_mode,
                reply=CliReply(),
                user=f"cli:{_local_user()}",
                exempt=True,
            )
        except Refused as exc:
            print(f"{exc.user_message()} [{exc.code}]", file=sys.stderr)
            return EXIT_REFUSED
        print(submitted.task_id, flush=True)
        if not wait:
            return EXIT_OK
        say_progress(f"queued: #{submitted.position} in line, about {submitted.eta_s} s")
        try:
            result = await services.task(submitted.task_id).result(timeout_s, stop=stop)
        except TimeoutError:
            print(f"No result within {timeout_s:g} s; the task is still queued. [timeout]", file=sys.stderr)
            return EXIT_TIMEOUT
        except MalformedRecord as exc:
            from backend.texts import text

            print(f"{text('internal')} [internal]", file=sys.stderr)
            log.debug("unreadable result for %s: %s", submitted.task_id, exc.reason)
            return EXIT_FAILED
        if result is None:
            print("Stopped waiting; the task is still queued. [interrupted]", file=sys.stderr)
            return EXIT_INTERRUPTED
        if result.status != "ok":
            print(f"{result.message or result.status} [{result.error or result.status}]", file=sys.stderr)
            return EXIT_FAILED
        output = await services.blobs.get(result.output)
        if output is None:
            from backend.texts import text

            print(f"{text('output_expired')} [output_expired]", file=sys.stderr)
            return EXIT_FAILED
        out = out or path.with_name(f"{path.stem}.color.png")
        out.write_bytes(output)
        say_progress(f"saved {out} ({result.run_ms / 1000:.1f} s on {result.worker})")
        return EXIT_OK


def say_progress(line: str) -> None:
    """Progress for a person at a terminal; scripts get only the contract (one line per failure)."""
    if sys.stderr.isatty():
        print(line, file=sys.stderr)


def _local_user() -> str:
    with contextlib.suppress(Exception):
        name = "".join(ch for ch in getpass.getuser() if ch.isalnum() or ch in "._-")
        if name:
            return name[:64]
    return "local"
