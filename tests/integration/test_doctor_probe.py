"""`repairbot doctor` on checkpoints and `repairbot doctor --probe`, against the ComfyUI fake."""

from __future__ import annotations

import asyncio

import pytest

from backend import cli
from tests.support.comfyui_standin import install_standins

CHECKPOINT = "ddcolor_modelscope.pth"


@pytest.fixture
def doctor_env(monkeypatch, settings, comfy_fake, tmp_path):
    for name in ("REDIS_URL", "COMFYUI_URL", "COMFYUI_PORT", "COMFYUI_DIR", "COMFYUI_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("COMFYUI_URL", comfy_fake.url)
    monkeypatch.setenv("COMFYUI_QUIET_POLL_S", "0.5")
    return monkeypatch


async def doctor(*args: str) -> int:
    from backend.settings import Settings

    parsed = cli.build_parser().parse_args(["doctor", *args])
    return await cli.cmd_doctor(Settings(), parsed, asyncio.Event())


async def test_probe_passes_on_a_healthy_comfyui(doctor_env, comfy_fake, capsys):
    assert await doctor("--probe") == 0
    out = capsys.readouterr().out
    assert "probe person: 160x120 in colour" in out and "probe building: 160x120 in colour" in out
    assert "probe preview: 80x60 as expected" in out and "all good" in out


async def test_probe_says_what_to_do_when_the_checkpoint_is_missing(doctor_env, comfy_fake, capsys):
    comfy_fake.missing_checkpoints = {CHECKPOINT}
    assert await doctor("--probe") == 1
    out = capsys.readouterr().out
    assert "FAIL   probe person: FileNotFoundError" in out
    assert "what to do: the DDColor checkpoint is missing" in out and "repairbot comfyui install" in out
    assert ("POST", "/free") in comfy_fake.requests


async def test_probe_catches_a_stale_model_and_frees_it(doctor_env, comfy_fake, capsys):
    comfy_fake.executor.objects[("2", "DDColor_Colorize")] = {"checkpoint": CHECKPOINT, "loaded": False}
    assert await doctor("--probe") == 1
    out = capsys.readouterr().out
    assert "probe person: the output is grey" in out and "POST /free" in out
    assert await doctor("--probe") == 0, "freed by the first probe, the second one colours"


async def test_plain_doctor_flags_a_listed_checkpoint_missing_from_our_install(
    doctor_env, comfy_fake, tmp_path, capsys
):
    layout = await asyncio.to_thread(install_standins, tmp_path)
    doctor_env.setenv("COMFYUI_DIR", str(layout.root))
    doctor_env.setenv("COMFYUI_PORT", str(comfy_fake.port))
    assert await doctor() == 1
    out = capsys.readouterr().out
    assert f"FAIL   checkpoint {CHECKPOINT}: listed by the node but" in out and "cannot load" in out
    (layout.checkpoints / CHECKPOINT).write_bytes(b"weights")
    assert await doctor() == 0
    assert f"ok     checkpoint {CHECKPOINT}: {layout.checkpoints / CHECKPOINT}" in capsys.readouterr().out


async def test_plain_doctor_on_a_foreign_comfyui_says_it_cannot_see_the_files(doctor_env, capsys):
    assert await doctor() == 0
    assert "doesn't show the node's files" in capsys.readouterr().out
