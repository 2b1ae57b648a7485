"""Workflow folders for tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from backend.settings import REPO_ROOT


def workflows_with_broken_mode(tmp_path: Path) -> Path:
    """The shipped modes plus `broken`, which ComfyUI refuses at validation (a combo value not in its list)."""
    folder = tmp_path / "workflows"
    shutil.copytree(REPO_ROOT / "workflows", folder)
    template = json.loads((folder / "preview.json").read_text())
    template["2"]["inputs"]["upscale_method"] = "sharpest"
    (folder / "broken.json").write_text(json.dumps(template))
    with (folder / "modes.toml").open("a") as manifest:
        manifest.write('\n[modes.broken]\ntemplate = "broken.json"\ninput_node = "1"\noutput_node = "3"\n')
    return folder
