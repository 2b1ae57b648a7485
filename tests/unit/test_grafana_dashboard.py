"""The Grafana dashboard reads only metrics the code exports, and covers each area the issue names."""

from __future__ import annotations

import json
import re

from backend import metrics
from backend.settings import REPO_ROOT

DASHBOARD = REPO_ROOT / "config" / "grafana" / "repairbot.json"
SUFFIXES = ("_bucket", "_count", "_sum")


def exported_names() -> set[str]:
    names = {family.name for family in metrics.REGISTRY.collect()}
    collector = metrics.QueueCollector()
    collector.numbers = metrics.QueueNumbers(
        streams={"s": 0}, groups={"g": {"lag": 0, "pending": 0, "oldest_pending_s": 0}}
    )
    names |= {family.name for family in collector.collect()}
    return names | {f"{name}_total" for name in names}  # counters are collected without the suffix


def test_every_expression_reads_an_exported_metric():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"repairbot_[a-z_]+", expr)}
    used = {next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name) for name in used}
    assert used and used <= exported_names(), used - exported_names()
    titles = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert {"Queue", "Throughput and failures", "Run time", "ComfyUI", "Sends"} <= titles
