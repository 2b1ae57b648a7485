"""`repairbot status` and `repairbot submit` load only what they need, so they start fast (issue #12).

Each command runs in a fresh interpreter against the suite's Redis; the interpreter then reports
which modules it had loaded. Start-up time itself is measured by bench/status.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.settings import REPO_ROOT
from tests.conftest import PHOTOS

# Runs the command in-process and prints what it printed plus every loaded module's name.
PROBE = """
import contextlib, io, json, sys
import backend.cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = backend.cli.main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""

NEVER = ("PIL", "prometheus_client", "aiohttp", "telegram", "discord", "matplotlib", "huggingface_hub")
NOT_FOR_A_LOOK = ("backend.streams", "backend.intake", "backend.images", "backend.metrics", "backend.workflows")
NOT_FOR_A_SUBMIT = (
    "aiohttp",
    "telegram",
    "discord",
    "matplotlib",
    "huggingface_hub",
    "backend.worker",
    "backend.executors",
    "backend.comfyui",
    "backend.notifier",
    "backend.comfyui_install",
    "PIL.ImageCms",  # a photo kept as sent needs neither the colour engine nor EXIF rotation
    "PIL.ImageOps",
)
# redis-py imports PyJWT, which imports cryptography's X.509 and key code; backend/lazy_imports.py
# defers PyJWT until something uses it, and nothing here does.
UNUSED_CRYPTO = ("jwt.algorithms", "cryptography.x509", "cryptography.hazmat.primitives.asymmetric.ec")


def run_cli(redis_url: str, tmp_path: Path, *argv: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": redis_url,
        "COMFYUI_URL": "http://127.0.0.1:9",  # the discard port: nothing answers, status says DOWN
        "WORKFLOWS_DIR": str(REPO_ROOT / "workflows"),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == name or m.startswith(name + ".") for name in names)]


def test_status_loads_no_images_metrics_streams_or_chat_libraries(redis_url, tmp_path):
    report = run_cli(redis_url, tmp_path, "status")

    assert report["code"] == 0
    assert "Queued: 0" in report["out"] and "ComfyUI http://127.0.0.1:9: DOWN" in report["out"]
    assert loaded(report["modules"], NEVER + NOT_FOR_A_LOOK + UNUSED_CRYPTO) == []
    assert "backend.comfyui_install" not in report["modules"]


def test_status_json_loads_the_same_few_modules(redis_url, tmp_path):
    report = run_cli(redis_url, tmp_path, "status", "--json")

    assert json.loads(report["out"])["queued"] == 0
    assert loaded(report["modules"], NEVER + NOT_FOR_A_LOOK + UNUSED_CRYPTO) == []


def test_submit_queues_without_loading_the_worker_side_or_unused_crypto(redis_url, tmp_path):
    report = run_cli(redis_url, tmp_path, "submit", str(PHOTOS / "astronaut_gray.jpg"))

    assert report["code"] == 0
    assert len(report["out"].strip()) == 32  # the task id
    assert loaded(report["modules"], NOT_FOR_A_SUBMIT + UNUSED_CRYPTO) == []


def test_a_deferred_module_works_once_used(redis_url, tmp_path):
    """PyJWT, deferred at `import backend`, is whole on first use (redis-py's token auth needs it)."""
    code = (
        "import sys, backend, redis.asyncio, jwt\n"
        "assert 'jwt.algorithms' not in sys.modules\n"
        "token = jwt.encode({'sub': 'x', 'exp': 4102444800}, 'k' * 32, algorithm='HS256')\n"
        "assert jwt.decode(token, 'k' * 32, algorithms=['HS256'])['sub'] == 'x'\n"
        "from jwt import PyJWK\n"
        "from redis.auth.token import JWToken\n"
        "assert JWToken(token).try_get('sub') == 'x'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "ok", done.stderr
