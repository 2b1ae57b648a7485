"""`repairbot`: run the parts (worker, notifier, bots, all at once) and operate the queue.

Exit codes of `submit` are a contract (DESIGN.md): 0 ok, 2 refused at intake, 3 processing failed or
was cancelled, 4 timed out. Failures print one line on stderr: the user-facing message, then the
stable error code in brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from backend import keys
from backend.backoff import Backoff, wait_event
from backend.errors import Refused
from backend.logs import setup_logging
from backend.redact import redact_url
from backend.services import Services
from backend.settings import Settings
from backend.streams import REDIS_DOWN
from backend.tasks import MalformedRecord, Result

if TYPE_CHECKING:
    from backend.comfyui import ComfyUIClient
# Everything else is imported by the command that needs it: `status` and `submit` start fast.

log = logging.getLogger("repairbot")

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
BOTS = ("telegram", "discord")


def comfy_clients(settings: Settings) -> list[ComfyUIClient]:
    from backend.comfyui import ComfyUIClient

    return [ComfyUIClient(url, quiet_poll_s=settings.comfyui_quiet_poll_s) for url in settings.comfyui_urls]


def bot_token_set(settings: Settings, platform: str) -> bool:
    return getattr(settings, f"{platform}_bot_token") is not None


def bot_module(platform: str, name: str) -> Any:
    """Bots are imported only when used: the backend itself never imports a platform library."""
    return importlib.import_module(f"bots.{platform}.{name}")


def build_senders(settings: Settings, services: Services) -> dict[str, Any]:
    return {
        platform: bot_module(platform, "sender").build_sender(settings, services.blobs)
        for platform in BOTS
        if bot_token_set(settings, platform)
    }


async def run_until_signal(main: Callable[[asyncio.Event], Awaitable[Any]]) -> Any:
    """Run `main(stop)`; SIGINT and SIGTERM set `stop` so every part can finish cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return await main(stop)


async def _serve_component(component: Any, stop: asyncio.Event) -> None:
    """Run a Worker or Notifier until `stop` is set, then let it shut down in its own way."""
    runner = asyncio.create_task(component.run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    component.stop()
    stopper.cancel()
    await runner


async def _with_ops(ops: Any, main: Awaitable[Any]) -> Any:
    """Run `main` with the process's metrics, health, alerts and retention beside it; they end with it."""
    from backend.ops import run_ops_until

    done = asyncio.Event()
    side = asyncio.create_task(run_ops_until(ops, done))
    try:
        return await main
    finally:
        done.set()
        await side


# --- commands -------------------------------------------------------------------------------------
async def cmd_worker(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.ops import Ops
    from backend.worker import Worker

    async with Services.open(settings) as services:
        worker = Worker(services.redis, settings, blobs=services.blobs, workflows=services.workflows)
        ops = Ops(services.redis, settings, worker=worker, blobs=services.blobs, modes=services.workflows.names)
        await _with_ops(ops, _serve_component(worker, stop))
    return EXIT_OK


async def cmd_notifier(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.notifier import Notifier
    from backend.ops import Ops

    async with Services.open(settings) as services:
        notifier = Notifier(services.redis, settings, build_senders(settings, services))
        ops = Ops(services.redis, settings, deliver=notifier.alert_admins, modes=services.workflows.names)
        await _with_ops(ops, _serve_component(notifier, stop))
    return EXIT_OK


async def cmd_bot(settings: Settings, platform: str, stop: asyncio.Event) -> int:
    if not bot_token_set(settings, platform):
        print(f"{platform.upper()}_BOT_TOKEN is not set: put it in the environment or .env", file=sys.stderr)
        return EXIT_ERROR
    from backend.ops import Ops

    async with Services.open(settings) as services:  # the bot's own parts are its business; ops needs Redis
        ops = Ops(services.redis, settings, modes=services.workflows.names)
        await _with_ops(ops, bot_module(platform, "app").serve(settings, stop))
    return EXIT_OK


async def cmd_up(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.notifier import Notifier
    from backend.ops import Ops
    from backend.worker import Worker

    redis_child = None
    if "redis_url" not in settings.model_fields_set and not _port_open("127.0.0.1", 6379):
        redis_child = _start_embedded_redis(settings)
        if redis_child is None:
            return EXIT_ERROR
        settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{redis_child[1]}/0"})
    comfy_child = None
    if "comfyui_url" not in settings.model_fields_set:
        from backend import comfyui_supervisor

        settings = settings.model_copy(update={"comfyui_url": [f"http://127.0.0.1:{settings.comfyui_port}"]})
        if not _port_open("127.0.0.1", settings.comfyui_port):
            comfy_child = await comfyui_supervisor.for_up(
                settings, allow_install=args.install_comfyui or settings.comfyui_auto_install)
    bots = [p for p in BOTS if bot_token_set(settings, p)]
    print(f"repairbot up: Redis {redact_url(settings.redis_url)}, "
          f"ComfyUI {', '.join(redact_url(url) for url in settings.comfyui_urls)}")
    print(f"bots enabled: {', '.join(bots) or 'none (set TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN)'}")
    print("try it without chat:  repairbot submit photo.jpg --wait --out colorized.png", flush=True)
    try:
        async with Services.open(settings) as services:
            worker = Worker(services.redis, settings, blobs=services.blobs, workflows=services.workflows)
            notifier = Notifier(services.redis, settings, build_senders(settings, services))
            ops = Ops(services.redis, settings, worker=worker, deliver=notifier.alert_admins, blobs=services.blobs,
                      modes=services.workflows.names)
            parts = [_logged("worker", _serve_component(worker, stop)),
                     _logged("notifier", _serve_component(notifier, stop))]
            parts += [_restarting(p, lambda p=p: bot_module(p, "app").serve(settings, stop), stop) for p in bots]
            if comfy_child is not None:
                parts.append(_logged("comfyui", comfy_child.supervise(stop)))
            await _with_ops(ops, asyncio.gather(*parts))
    finally:
        if comfy_child is not None:
            await asyncio.to_thread(comfy_child.terminate)
        if redis_child is not None:
            redis_child[0].terminate()
            redis_child[0].wait(timeout=10)
    return EXIT_OK


async def _restarting(name: str, start: Callable[[], Awaitable[Any]], stop: asyncio.Event) -> None:
    """A bot that fails (Telegram or Discord unreachable at start, say) is started again with backoff,
    so one platform's outage neither stops the others nor leaves that bot dead until a restart."""
    backoff = Backoff(1.0, 60.0)
    while not stop.is_set():
        delay = backoff.next_delay()
        try:
            await start()
            return
        except Exception:  # noqa: BLE001 - report, wait, try again
            log.exception("%s bot stopped with an error; starting it again in %.0f s", name, delay)
        await wait_event(stop, delay)


async def _logged(name: str, part: Awaitable[Any]) -> None:
    """One part of `up` failing is reported at once; the other parts keep running."""
    try:
        await part
    except Exception:  # noqa: BLE001 - report and let the rest of the system carry on
        log.exception("%s stopped with an error", name)


def _port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _start_embedded_redis(settings: Settings) -> tuple[subprocess.Popen[bytes], int] | None:
    """A private redis-server with AOF under ./var/, for a single-machine start with no setup."""
    binary = shutil.which("redis-server")
    if binary is None:
        print(
            "No Redis answers on 127.0.0.1:6379 and redis-server is not installed.\n"
            "Install it (apt-get install -y redis-server), or point REDIS_URL at a Redis >= 7.0.",
            file=sys.stderr,
        )
        return None
    data_dir = (settings.var_dir / "redis").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = 6379
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--appendonly", "yes",
         "--appendfsync", "always", "--save", "", "--logfile", str(data_dir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if _port_open("127.0.0.1", port):
            print(f"started a private redis-server (AOF in {data_dir})")
            return proc, port
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    print(f"redis-server did not start; see {data_dir / 'redis.log'}", file=sys.stderr)
    return None


async def cmd_submit(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    path = Path(args.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"Cannot read {path}: {exc.strerror}. [unreadable_file]", file=sys.stderr)
        return EXIT_REFUSED
    async with Services.open(settings, comfyui=False) as services:
        start_id = await _last_result_id(services, settings)
        try:
            submitted = await services.intake.submit(
                data, mode=args.mode or settings.default_mode, reply={"platform": "cli"}, user=f"cli:{_local_user()}", exempt=True
            )
        except Refused as exc:
            print(f"{exc.user_message()} [{exc.code}]", file=sys.stderr)
            return EXIT_REFUSED
        print(submitted.task_id, flush=True)
        if not args.wait:
            return EXIT_OK
        say_progress(f"queued: #{submitted.position} in line, about {submitted.eta_s} s")
        try:
            result = await asyncio.wait_for(
                _wait_for_result(services, settings, submitted.task_id, start_id, stop), timeout=args.timeout
            )
        except asyncio.TimeoutError:
            print(f"No result within {args.timeout:g} s; the task is still queued. [timeout]", file=sys.stderr)
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
        out = Path(args.out) if args.out else path.with_name(f"{path.stem}.color.png")
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


async def _last_result_id(services: Services, settings: Settings) -> str:
    last = await services.redis.xrevrange(settings.results_stream, count=1)
    return last[0][0].decode() if last else "0-0"


async def _wait_for_result(
    services: Services, settings: Settings, task_id: str, start_id: str, stop: asyncio.Event
) -> Result | None:
    """Follow the results stream from before the submit until our task's result shows up."""
    cursor = start_id
    while not stop.is_set():
        stored = await services.redis.hgetall(keys.result(task_id))
        if stored:
            return Result.decode(stored)
        reply = await services.redis.xread({settings.results_stream: cursor}, count=100, block=1000)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                cursor = entry_id.decode()
                if fields.get(b"task_id", b"").decode() == task_id:
                    with contextlib.suppress(MalformedRecord):
                        return Result.decode(fields)
    return None


async def cmd_status(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with Services.open(settings) as services:
        status = await services.admin.status()
    from backend.admin import format_status

    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return EXIT_OK


async def cmd_dlq(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with Services.open(settings) as services:
        admin = services.admin
        if args.action == "list":
            from backend.admin import format_dead_letters

            print(format_dead_letters(await admin.dead_letters(limit=args.limit)))
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
    async with Services.open(settings) as services:
        if args.command == "pause":
            await services.admin.pause()
            print("paused: workers finish what they hold and start nothing new; bots refuse new photos")
        else:
            await services.admin.resume()
            print("resumed")
    return EXIT_OK


async def cmd_stats(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    async with Services.open(settings) as services:
        stats = await services.admin.stats(window_s=args.window)
    from backend.admin import format_stats

    print(json.dumps(stats) if args.json else format_stats(stats))
    return EXIT_OK


async def cmd_doctor(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from backend.workflows import WorkflowError, check_against_object_info

    problems = 0

    def report(ok: bool, line: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {line}")

    try:
        services = Services.create(settings)
    except WorkflowError as exc:
        report(False, f"workflows: {exc}")
        return EXIT_ERROR
    report(True, f"workflows: {', '.join(services.workflows.names)}")
    try:
        info = await asyncio.wait_for(services.redis.info("server"), timeout=5)
        version = str(info.get("redis_version", "0"))
        major_minor = tuple(int(x) for x in version.split(".")[:2])
        report(major_minor >= (7, 0), f"Redis {redact_url(settings.redis_url)} version {version} (needs >= 7.0)")
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        report(False, f"Redis {redact_url(settings.redis_url)} not reachable: {exc}")
    finally:
        await services.close()
    for client in comfy_clients(settings):
        try:
            if not await client.health():
                report(False, f"ComfyUI {redact_url(client.base_url)} not reachable")
                continue
            report(True, f"ComfyUI {redact_url(client.base_url)} reachable")
            object_info = await client.object_info()
            for name, mode in services.workflows.modes.items():
                issues = check_against_object_info(mode, object_info)
                report(not issues, f"  mode {name}: " + ("; ".join(issues) if issues else "all nodes and values accepted"))
            from backend import comfyui_doctor

            await comfyui_doctor.check_checkpoints(client, services.workflows.modes, settings, report)
            if getattr(args, "probe", False):
                await comfyui_doctor.probe_all(client, services.workflows.modes, report)
        finally:
            await client.close()
    print("all good" if not problems else f"{problems} problem(s)")
    return EXIT_OK if not problems else EXIT_ERROR


# --- argument parsing ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repairbot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run tasks through ComfyUI")
    sub.add_parser("notifier", help="deliver results to the chats")
    up = sub.add_parser("up", help="worker + notifier + every bot whose token is set, in one process")
    up.add_argument("--install-comfyui", action="store_true",
                    help="install ComfyUI first when COMFYUI_URL is unset and none is installed")
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
    doctor.add_argument("--probe", action="store_true",
                        help="also run every mode on a small generated image and check size and colour")
    comfyui = sub.add_parser("comfyui", help="a local ComfyUI with the DDColor node: install")
    comfyui_sub = comfyui.add_subparsers(dest="comfyui_command", required=True)
    from backend.comfyui_install import add_install_arguments

    add_install_arguments(comfyui_sub.add_parser("install", help="install ComfyUI, the DDColor node and its weights"))
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    setup_logging(settings)
    if args.command == "comfyui":
        from backend.comfyui_install import run_install

        return run_install(settings, args)
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
