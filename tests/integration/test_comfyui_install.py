"""`repairbot comfyui install` and the supervised ComfyUI, against local stand-ins only (no network):
git repositories playing ComfyUI and the DDColor node, and a local Hugging Face endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from backend import comfyui_install as ci
from backend.comfyui_supervisor import ComfyUISupervisor, answers
from tests.support.comfyui_standin import FakeHub, comfyui_repo, node_repo

CHECKPOINT = "ddcolor_modelscope.pth"
WEIGHTS = bytes(range(256)) * 4096  # 1 MiB standing in for a checkpoint


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, str]:
    return {
        "source": str(tmp_path / "src-comfyui"),
        "ref": comfyui_repo(tmp_path / "src-comfyui"),
        "node_source": str(tmp_path / "src-node"),
        "node_ref": node_repo(tmp_path / "src-node"),
    }


@pytest.fixture
async def hub():
    fake = FakeHub({CHECKPOINT: WEIGHTS})
    await fake.start()
    yield fake
    await fake.stop()


async def run_install(opts: ci.InstallOptions) -> ci.Layout:
    """In a thread: the install blocks, and the hub stand-in serves from this test's event loop."""
    return await asyncio.to_thread(ci.install, opts)


def options(tmp_path: Path, repos: dict[str, str], lines: list[str], **extra) -> ci.InstallOptions:
    return ci.InstallOptions(
        root=tmp_path / "comfy",
        checkpoints=(CHECKPOINT,),
        device="cpu",
        torch_spec="",
        python=Path(sys.executable),
        extra_requirements=(),
        say=lines.append,
        **repos,
        **extra,
    )


async def test_install_from_local_sources_and_the_hub_is_idempotent(tmp_path, repos, hub):
    lines: list[str] = []
    layout = await run_install(options(tmp_path, repos, lines, hf_endpoint=hub.url))
    assert layout.installed()
    stored = layout.checkpoints / CHECKPOINT
    assert stored.read_bytes() == WEIGHTS  # where kijai's nodes.py reads: <node>/checkpoints/<name>
    assert stored.parent == layout.comfyui / "custom_nodes" / "ComfyUI-DDColor" / "checkpoints"
    assert layout.read_state()["checkpoints"][CHECKPOINT]["sha256"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert any("[6/6]" in line for line in lines)

    again: list[str] = []
    await run_install(options(tmp_path, repos, again, hf_endpoint=hub.url))
    assert hub.gets == 1, "nothing downloaded twice"
    assert sum("already" in line for line in again) >= 4, again


async def test_a_download_cut_short_is_resumed(tmp_path, repos, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)  # real checkpoints span many 10 MB chunks
    hub.cut_first_get_at = len(WEIGHTS) // 3
    layout = None
    for _ in range(2):  # huggingface_hub resumes within one call; a rerun of the install would too
        try:
            layout = await run_install(options(tmp_path, repos, [], hf_endpoint=hub.url))
            break
        except ci.InstallError as exc:
            assert "run the install again" in str(exc)
    assert layout is not None and (layout.checkpoints / CHECKPOINT).read_bytes() == WEIGHTS
    resumed_at = int(hub.ranges[0].split("=")[1].split("-")[0]) if hub.ranges else 0
    assert 0 < resumed_at <= len(WEIGHTS) // 3, hub.ranges  # picked up where the cut left it, not from 0


async def test_a_bad_checksum_is_refused_and_the_file_removed(tmp_path, repos, hub):
    hub.serve_instead[CHECKPOINT] = bytes(len(WEIGHTS))
    with pytest.raises(ci.InstallError, match="does not match its published SHA-256"):
        await run_install(options(tmp_path, repos, [], hf_endpoint=hub.url))
    layout = ci.Layout(tmp_path / "comfy")
    assert not (layout.checkpoints / CHECKPOINT).exists() and not layout.installed()
    assert not (layout.checkpoints / f"{CHECKPOINT}.part").exists()


def test_weights_copied_from_a_path(tmp_path, repos):
    local = tmp_path / "mine.pth"
    local.write_bytes(WEIGHTS)
    layout = ci.install(options(tmp_path, repos, [], weights=local))
    assert (layout.checkpoints / CHECKPOINT).read_bytes() == WEIGHTS


async def test_no_network_no_disk_and_a_broken_driver_say_so(tmp_path, repos, hub, monkeypatch):
    unreachable = dict(repos, source="http://127.0.0.1:9/ComfyUI.git")
    with pytest.raises(ci.InstallError, match="no network"):
        await run_install(options(tmp_path, unreachable, [], hf_endpoint=hub.url))
    with pytest.raises(ci.InstallError, match="cannot reach .* no network"):
        await run_install(options(tmp_path, repos, [], hf_endpoint="http://127.0.0.1:9"))
    monkeypatch.setitem(ci.FREE_GB_NEEDED, "cpu", 10**9)
    with pytest.raises(ci.InstallError, match="not enough disk"):
        await run_install(options(tmp_path, repos, [], hf_endpoint=hub.url))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2\nexit 9\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ci.InstallError, match="NVIDIA driver is not working.*--device cpu"):
        ci.detect_device("auto", lambda line: None)


def test_a_commit_the_source_lacks_is_a_clear_error(tmp_path, repos):
    with pytest.raises(ci.InstallError, match="has no commit"):
        ci.install(options(tmp_path, dict(repos, ref="0" * 40), []))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(check, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.1)


async def test_supervisor_restarts_comfyui_that_dies_and_stops_it_cleanly(tmp_path, repos):
    layout = ci.install(options(tmp_path, repos, [], weights=_weights(tmp_path)))
    supervisor = ComfyUISupervisor(layout, free_port(), cpu=True, backoff_s=(0.2, 1.0), stop_grace_s=5)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.supervise(stop))
    await wait_until(lambda: answers(supervisor.url))
    first = supervisor.proc.pid
    started = (layout.comfyui / "started.txt").read_text().split()
    assert started == ["main.py", "--listen", "127.0.0.1", "--port", str(supervisor.port), "--cpu"][1:]

    os.kill(first, signal.SIGKILL)  # ComfyUI dies
    await wait_until(lambda: supervisor.starts == 2 and answers(supervisor.url))
    assert supervisor.proc.pid != first

    stop.set()
    await asyncio.wait_for(running, timeout=20)
    assert supervisor.proc is None and not answers(supervisor.url)
    assert "repairbot starts ComfyUI" in supervisor.log_path.read_text()


def _weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.pth"
    path.write_bytes(WEIGHTS)
    return path


def test_requirements_leave_torch_to_its_own_step_and_take_headless_opencv(tmp_path):
    comfy, node = tmp_path / "a.txt", tmp_path / "b.txt"
    comfy.write_text("torch\ntorchvision\ntorchaudio\nnumpy>=1.25.0\n#non essential dependencies:\nkornia>=0.7.1\n")
    node.write_text("numpy>=1.24.3\nopencv_python>=4.7.0.72\ntimm>=0.9.2\n")
    assert ci.requirement_lines(comfy, node) == [
        "numpy>=1.25.0",
        "kornia>=0.7.1",
        "numpy>=1.24.3",
        "opencv-python-headless>=4.7.0.72",
        "timm>=0.9.2",
    ]


async def test_a_download_left_half_done_by_an_earlier_run_resumes(tmp_path, repos, hub):
    """The install was stopped mid-download (Ctrl-C, a crash): the next run asks only for the rest."""
    layout = await run_install(options(tmp_path, repos, [], hf_endpoint=hub.url, skip_weights=True))
    assert not layout.installed()
    (layout.checkpoints / f"{CHECKPOINT}.part").write_bytes(WEIGHTS[: len(WEIGHTS) // 2])  # the stopped run's
    await run_install(options(tmp_path, repos, [], hf_endpoint=hub.url))
    assert (layout.checkpoints / CHECKPOINT).read_bytes() == WEIGHTS
    assert hub.ranges == [f"bytes={len(WEIGHTS) // 2}-"]
    assert not (layout.checkpoints / f"{CHECKPOINT}.part").exists()
