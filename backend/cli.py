"""`repairbot`: run the parts (worker, notifier, bots, all at once) and operate the queue.

This module only parses the command line and hands each command to the module that does it: the
long-running parts (worker, notifier, bots, `up`) to backend/processes.py, `submit` to
backend/submit_client.py (its exit codes are a contract: DESIGN.md), `doctor` to backend/doctor.py,
`comfyui install` to backend/comfyui_install.py; the queue commands here call Admin and print.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from backend.logs import setup_logging
from backend.redact import redact_url
from backend.redis_conn import REDIS_DOWN
from backend.settings import Settings
from backend.supervision import run_until_signal

# Everything else is imported by the command that needs it, so `status` loads neither the
# stream machinery nor intake, images or metrics, and `submit` not the worker's side
# (tests/integration/test_cli_imports.py keeps it so).

EXIT_OK, EXIT_ERROR = 0, 1


# --- commands -------------------------------------------------------------------------------------
async def cmd_worker(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.processes import run_worker

    return await run_worker(settings, stop)


async def cmd_notifier(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.processes import run_notifier

    return await run_notifier(settings, stop)


async def cmd_bot(settings: Settings, platform: str, stop: asyncio.Event) -> int:
    from backend.processes import run_bot

    return await run_bot(settings, platform, stop)


async def cmd_up(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.processes import run_up

    return await run_up(settings, stop, install_comfyui=args.install_comfyui)


async def cmd_submit(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.submit_client import submit_file

    return await submit_file(
        settings,
        Path(args.path),
        stop,
        mode=args.mode,
        wait=args.wait,
        out=Path(args.out) if args.out else None,
        timeout_s=args.timeout,
    )


async def cmd_status(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.admin import Admin
    from backend.admin_texts import format_status
    from backend.comfy_probe import ComfyProbe
    from backend.redis_conn import connect
    from backend.services import stream_names

    redis = connect(settings)  # Admin alone: no intake, images or workflows to load for a look
    probes = [ComfyProbe(url) for url in settings.comfyui_urls]
    try:
        status = await Admin(redis, probes, streams=stream_names(settings), blob_ttl_s=settings.blob_ttl_s).status()
    finally:
        await redis.aclose()

    print(json.dumps(status.to_json(), indent=2) if args.json else format_status(status, "en"))
    return EXIT_OK


async def cmd_dlq(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.services import Services

    async with Services.open(settings) as services:
        admin = services.admin
        if args.action == "list":
            from backend.admin_texts import format_dead_letters

            print(format_dead_letters(await admin.dead_letters(limit=args.limit), "en"))
        elif args.action == "retry":
            if not args.id:
                print("usage: repairbot dlq retry ID (a task id or a dead-letter entry id)", file=sys.stderr)
                return EXIT_ERROR
            outcome = await admin.retry_dead(args.id)
            if not outcome.ok:
                print(f"not retried: {outcome.detail}", file=sys.stderr)
                return EXIT_ERROR
            print(f"task {outcome.task_id} is queued again")
        else:
            print(f"purged {await admin.purge_dead()} dead letter(s)")
    return EXIT_OK


async def cmd_pause(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.services import Services

    async with Services.open(settings) as services:
        if args.command == "pause":
            await services.admin.pause()
            print("paused: workers finish what they hold and start nothing new; bots refuse new photos")
        else:
            await services.admin.resume()
            print("resumed")
    return EXIT_OK


async def cmd_stats(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.admin_texts import format_stats
    from backend.services import Services

    async with Services.open(settings) as services:
        stats = await services.admin.stats(window_s=args.window)

    print(json.dumps(stats.to_json()) if args.json else format_stats(stats, "en"))
    return EXIT_OK


async def cmd_doctor(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.doctor import run_doctor

    return await run_doctor(settings, probe=args.probe)


# --- argument parsing ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repairbot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run tasks through ComfyUI")
    sub.add_parser("notifier", help="deliver results to the chats")
    up = sub.add_parser("up", help="worker + notifier + every bot whose token is set, in one process")
    up.add_argument(
        "--install-comfyui",
        action="store_true",
        help="install ComfyUI first when COMFYUI_URL is unset and none is installed",
    )
    sub.add_parser("telegram", help="run the Telegram bot alone")
    sub.add_parser("discord", help="run the Discord bot alone")
    submit = sub.add_parser("submit", help="queue a photo from the command line")
    submit.add_argument("path")
    submit.add_argument("--mode", default=None, help="a mode of workflows/modes.toml (default: DEFAULT_MODE)")
    submit.add_argument("--wait", action="store_true", help="wait for the result and save it")
    submit.add_argument("--out", help="where to write the colorized image (with --wait)")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (with --wait)")
    status = sub.add_parser("status", help="queue numbers")
    status.add_argument("--json", action="store_true")
    stats = sub.add_parser("stats", help="throughput and run-time percentiles")
    stats.add_argument("--window", type=int, default=3600)
    stats.add_argument("--json", action="store_true")
    dlq = sub.add_parser("dlq", help="dead letters: list, retry ID, purge")
    dlq.add_argument("action", choices=("list", "retry", "purge"))
    dlq.add_argument("id", nargs="?")
    dlq.add_argument("--limit", type=int, default=20)
    sub.add_parser("pause", help="stop starting new tasks")
    sub.add_parser("resume", help="start new tasks again")
    doctor = sub.add_parser("doctor", help="check Redis, ComfyUI and the workflows")
    doctor.add_argument(
        "--probe", action="store_true", help="also run every mode on a small generated image and check size and colour"
    )
    comfyui = sub.add_parser("comfyui", help="a local ComfyUI with the DDColor node: install")
    comfyui_sub = comfyui.add_subparsers(dest="comfyui_command", required=True)
    install = comfyui_sub.add_parser("install", help="install ComfyUI, the DDColor node and its weights")
    install.add_argument("--dir", help="install folder (default: COMFYUI_DIR, var/comfyui)")
    install.add_argument("--source", help="ComfyUI git URL or local clone (COMFYUI_SOURCE; default: GitHub)")
    install.add_argument("--ref", help="ComfyUI commit (COMFYUI_REF; default: the pinned v0.3.64)")
    install.add_argument("--node-source", help="ComfyUI-DDColor git URL or local clone (COMFYUI_NODE_SOURCE)")
    install.add_argument("--node-ref", help="ComfyUI-DDColor commit (COMFYUI_NODE_REF; default: the pinned one)")
    install.add_argument(
        "--weights", type=Path, help="a checkpoint file, or a folder of them, instead of the hub (COMFYUI_WEIGHTS)"
    )
    install.add_argument("--device", choices=("auto", "cpu", "cuda"), help="torch build (default: COMFYUI_DEVICE)")
    install.add_argument(
        "--skip-weights",
        action="store_true",
        help="everything but the checkpoints (an image build; a later run fetches them)",
    )
    return parser


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace, asyncio.Event], Awaitable[int]]] = {
    "worker": cmd_worker,
    "notifier": cmd_notifier,
    "up": cmd_up,
    "telegram": lambda s, a, stop: cmd_bot(s, "telegram", stop),
    "discord": lambda s, a, stop: cmd_bot(s, "discord", stop),
    "submit": cmd_submit,
    "status": cmd_status,
    "stats": cmd_stats,
    "dlq": cmd_dlq,
    "pause": cmd_pause,
    "resume": cmd_pause,
    "doctor": cmd_doctor,
}


# The long-running parts: each moves images of up to tens of MB, many times over.
MOVES_IMAGES = ("worker", "notifier", "up", "telegram", "discord")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    setup_logging(settings.secrets(), log_level=settings.log_level, log_format=settings.log_format)
    if args.command == "comfyui":
        from backend.comfyui_install import run_install

        return run_install(settings, args)
    if args.command in MOVES_IMAGES:
        from backend.heap import keep_freed_memory

        keep_freed_memory()
    command = COMMANDS[args.command]
    try:
        return asyncio.run(run_until_signal(lambda stop: command(settings, args, stop)))
    except KeyboardInterrupt:
        return EXIT_OK
    except REDIS_DOWN as exc:
        print(f"cannot reach Redis at {redact_url(settings.redis_url)}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
