"""The compose file's promises: ComfyUI pinned and built here, on the GPU, healthy, unreachable from
outside; the app non-root with a writable blob volume; nothing needs a .env. (`.ci/run` also runs
Debian's `docker-compose config -q` on it, which checks the schema.)"""

from __future__ import annotations

import yaml

from backend.settings import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_comfyui_is_built_here_on_the_gpu_with_a_health_check_and_no_way_in():
    comfyui, weights = SERVICES["comfyui"], SERVICES["comfyui-weights"]
    assert weights["build"]["dockerfile"] == "config/Dockerfile.comfyui" and comfyui["image"] == weights["image"]
    [device] = comfyui["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "healthcheck" in comfyui and "ports" not in comfyui
    assert comfyui["networks"] == ["internal"] and COMPOSE["networks"]["internal"]["internal"] is True
    assert comfyui["depends_on"]["comfyui-weights"]["condition"] == "service_completed_successfully"
    checkpoints = "/opt/comfyui/ComfyUI/custom_nodes/ComfyUI-DDColor/checkpoints"
    assert any(v.endswith(":" + checkpoints) for v in comfyui["volumes"])
    assert any(v.endswith(":" + checkpoints) for v in weights["volumes"])


def test_nothing_requires_a_dotenv_and_the_worker_stays_inside():
    for name, service in SERVICES.items():
        assert "env_file" not in service, name
    assert SERVICES["worker"]["networks"] == ["internal"]
    assert "egress" in SERVICES["notifier"]["networks"]


def test_the_comfyui_image_pins_through_the_installer():
    dockerfile = (REPO_ROOT / "config" / "Dockerfile.comfyui").read_text()
    assert "repairbot comfyui install --device" in dockerfile and "--skip-weights" in dockerfile
    assert "USER comfy" in dockerfile and "HEALTHCHECK" in dockerfile


def test_the_app_image_is_not_root_and_its_blob_volume_is_writable():
    dockerfile = (REPO_ROOT / "config" / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert "chown -R repairbot /app/var" in dockerfile and "VOLUME /app/var/blobs" in dockerfile
    assert all("blobs:/app/var/blobs" in SERVICES[name]["volumes"] for name in ("worker", "notifier", "telegram"))
