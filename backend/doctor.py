"""`repairbot doctor`: check the workflows, Redis and every ComfyUI, one line per check, and say what is wrong."""

from __future__ import annotations

import asyncio
from typing import Any

from backend.redact import redact_url
from backend.services import Services
from backend.settings import Settings
from backend.streams import require_redis_7

EXIT_OK, EXIT_PROBLEMS = 0, 1


async def run_doctor(settings: Settings, *, probe: bool = False) -> int:
    """0 when every check passed, else 1; `probe` also runs each mode on a small generated image."""
    from backend import comfyui_doctor
    from backend.comfyui import ComfyUIClient
    from backend.workflows import WorkflowError, check_against_object_info

    problems = 0

    def report(ok: bool, line: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {line}")

    try:
        services = Services.create(settings, comfyui=False)
    except WorkflowError as exc:
        report(False, f"workflows: {exc}")
        return EXIT_PROBLEMS
    report(True, f"workflows: {', '.join(services.workflows.names)}")
    redis = redact_url(settings.redis_url)
    try:
        version = await asyncio.wait_for(require_redis_7(services.redis), timeout=5)
        report(True, f"Redis {redis} version {version} (needs >= 7.0)")
    except RuntimeError as exc:  # too old
        report(False, f"Redis {redis}: {exc}")
    except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
        report(False, f"Redis {redis} not reachable: {exc}")
    finally:
        await services.close()
    modes: dict[str, Any] = services.workflows.modes
    for url in settings.comfyui_urls:
        client = ComfyUIClient(url, quiet_poll_s=settings.comfyui_quiet_poll_s)
        try:
            if not await client.health():
                report(False, f"ComfyUI {redact_url(client.base_url)} not reachable")
                continue
            report(True, f"ComfyUI {redact_url(client.base_url)} reachable")
            object_info = await client.object_info()
            for name, mode in modes.items():
                issues = check_against_object_info(mode, object_info)
                report(
                    not issues, f"  mode {name}: " + ("; ".join(issues) if issues else "all nodes and values accepted")
                )
            await comfyui_doctor.check_checkpoints(
                client,
                modes,
                report,
                comfyui_port=settings.comfyui_port,
                comfyui_dir=settings.comfyui_dir,
                comfyui_python=settings.comfyui_python,
            )
            if probe:
                await comfyui_doctor.probe_all(client, modes, report)
        finally:
            await client.close()
    print("all good" if not problems else f"{problems} problem(s)")
    return EXIT_OK if not problems else EXIT_PROBLEMS
