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


def workflows_with_new_mode(tmp_path: Path) -> Path:
    """The shipped modes plus `sepia`, a choosable mode that exists only in the manifest and its template."""
    folder = tmp_path / "workflows-sepia"
    shutil.copytree(REPO_ROOT / "workflows", folder)
    shutil.copy(folder / "preview.json", folder / "sepia.json")
    with (folder / "modes.toml").open("a") as manifest:
        manifest.write(
            '\n[modes.sepia]\ntemplate = "sepia.json"\ninput_node = "1"\noutput_node = "3"\nchoosable = true\n'
            'caption_words = ["sepia", "棕褐"]\nlabel = { en = "sepia", zh = "棕褐色" }\n'
            'description = { en = "warm old-print tones", zh = "温暖的老照片色调" }\n'
        )
    return folder
