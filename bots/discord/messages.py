"""What a finished task looks like in Discord: the image, an embed (mode, time taken) and two buttons.

The buttons carry the task id in their custom_id (`repairbot:other:<id>:<mode>`, one per other mode users
may choose in the manifest, and `repairbot:compare:<id>`); the bot looks the task up when one is
pressed, so they keep working after a restart.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import discord

from backend import images
from backend.tasks import Result
from backend.texts import text
from backend.workflows import Workflows

OTHER_MODE_PREFIX = "repairbot:other:"
COMPARE_PREFIX = "repairbot:compare:"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mode_label(workflows: Workflows | None, mode: str, lang: str) -> str:
    """The manifest's label for `mode` in `lang` (the bare name without a manifest)."""
    return workflows.get(mode).label(lang) if workflows is not None and mode in workflows else mode


def result_view(task_id: str, lang: str, workflows: Workflows | None = None, mode: str = "") -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for other in workflows.others(mode) if workflows is not None else []:
        view.add_item(discord.ui.Button(label=text("button_other_mode", lang, mode=other.label(lang)),
                                        style=discord.ButtonStyle.primary,
                                        custom_id=f"{OTHER_MODE_PREFIX}{task_id}:{other.name}"[:100]))
    view.add_item(discord.ui.Button(label=text("button_compare", lang), style=discord.ButtonStyle.secondary,
                                    custom_id=COMPARE_PREFIX + task_id))
    return view


@dataclass(frozen=True)
class ResultImage:
    """The bytes to upload, already under the upload limit, and whether they had to be shrunk."""

    data: bytes
    filename: str
    downscaled: bool

    @classmethod
    async def fit(cls, data: bytes, limit: int, *, stem: str = "colorized") -> "ResultImage":
        fitted = await asyncio.to_thread(images.fit_for_upload, data, max_bytes=limit)
        extension = "png" if fitted.startswith(PNG_SIGNATURE) else "jpg"
        return cls(fitted, f"{stem}.{extension}", downscaled=fitted is not data)

    def file(self) -> discord.File:
        """A fresh File each time: discord.py closes it after one send."""
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def result_embed(result: Result, image: ResultImage, lang: str, workflows: Workflows | None = None) -> discord.Embed:
    seconds = round(result.run_ms / 1000, 1)
    embed = discord.Embed(description=text("result_caption", lang, mode=mode_label(workflows, result.mode, lang),
                                           seconds=seconds), colour=discord.Colour.teal())
    embed.set_image(url=f"attachment://{image.filename}")
    if image.downscaled:
        embed.set_footer(text=text("downscaled_note", lang))
    return embed


def failure_text(result: Result, lang: str) -> str:
    """The catalog sentence for a failed or cancelled task."""
    if result.status == "cancelled":
        return text("cancelled", lang)
    return result.message or text(result.error or "internal", lang)  # the worker's, in the user's language
