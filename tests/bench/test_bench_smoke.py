"""Every benchmark still runs: each one in --quick mode (tiny sizes, one run) completes and writes its
JSON. No timing is asserted here: numbers belong to bench/, and are noisy by nature."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = {
    "intake": "sizes",
    "queue": "figures",
    "queue_cpu": "figures",
    "latency": "figures",
    "memory": "figures",
    "status": "startup",
    "roundtrips": "figures",
    "gpu_duty": "figures",
    "comfy_e2e": "figures",
}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}  # each starts its own
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=240
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_runs_quick_and_writes_its_json(name: str, tmp_path: Path):
    out = tmp_path / f"{name}.json"
    done = run([f"bench/{name}.py", "--quick", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["bench"] == name and report[BENCHES[name]]
    assert "|" in done.stdout  # the table


@pytest.mark.timeout(300)
def test_peer_adapter_prints_one_result_line():
    done = run(["bench/peer_adapter.py"], N="60", WORKERS="2")
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["delivered"] == 60 and result["enqueue_per_s"] > 0 and result["drain_per_s"] > 0
