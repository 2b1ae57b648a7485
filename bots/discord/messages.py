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
from backend.reruns import retry_offers
from backend.tasks import Result
from backend.texts import text
from backend.workflows import Workflows

OTHER_MODE_PREFIX = "repairbot:other:"
COMPARE_PREFIX = "repairbot:compare:"
CANCEL_PREFIX = "repairbot:cancel:"
RETRY_PREFIX = "repairbot:retry:"
DEAD_RETRY_PREFIX = "repairbot:dlq-retry:"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mode_label(workflows: Workflows | None, mode: str, lang: str) -> str:
    """The manifest's label for `mode` in `lang` (the bare name without a manifest)."""
    return workflows.get(mode).label(lang) if workflows is not None and mode in workflows else mode


def cancel_view(line: str, lang: str) -> discord.ui.View:
    """Cancel under a queued or running status: every photo of that status message at once."""
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label=text("button_cancel", lang),
            style=discord.ButtonStyle.danger,
            custom_id=f"{CANCEL_PREFIX}{line}"[:100],
        )
    )
    return view


def result_view(task_id: str, lang: str, workflows: Workflows | None = None, mode: str = "") -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for other in workflows.others(mode) if workflows is not None else []:
        view.add_item(
            discord.ui.Button(
                label=text("button_other_mode", lang, mode=other.label(lang)),
                style=discord.ButtonStyle.primary,
                custom_id=f"{OTHER_MODE_PREFIX}{task_id}:{other.name}"[:100],
            )
        )
    view.add_item(
        discord.ui.Button(
            label=text("button_compare", lang), style=discord.ButtonStyle.secondary, custom_id=COMPARE_PREFIX + task_id
        )
    )
    return view


@dataclass(frozen=True)
class ResultImage:
    """The bytes to upload, already under the upload limit, and whether they had to be shrunk."""

    data: bytes
    filename: str
    downscaled: bool

    @classmethod
    async def fit(cls, data: bytes, limit: int, *, stem: str = "colorized") -> ResultImage:
        fitted = await asyncio.to_thread(images.fit_for_upload, data, max_bytes=limit)
        extension = "png" if fitted.startswith(PNG_SIGNATURE) else "jpg"
        return cls(fitted, f"{stem}.{extension}", downscaled=fitted is not data)

    def file(self) -> discord.File:
        """A fresh File each time: discord.py closes it after one send."""
        return discord.File(io.BytesIO(self.data), filename=self.filename)


def result_embed(result: Result, image: ResultImage, lang: str, workflows: Workflows | None = None) -> discord.Embed:
    """The mode and the time the user waited (and how much of it was colorizing)."""
    embed = discord.Embed(
        description=text(
            "result_caption",
            lang,
            mode=mode_label(workflows, result.mode, lang),
            seconds=_total_s(result),
            run=round(result.run_ms / 1000, 1),
        ),
        colour=discord.Colour.teal(),
    )
    embed.set_image(url=f"attachment://{image.filename}")
    if image.downscaled:
        embed.set_footer(text=text("downscaled_note", lang))
    return embed


def failure_text(result: Result, lang: str) -> str:
    """The catalog sentence for a failed or cancelled task."""
    if result.status == "cancelled":
        return text("cancelled", lang)
    return result.message or text(result.error or "internal", lang)  # the worker's, in the user's language


def _total_s(result: Result) -> float:
    return round((result.queued_ms + result.run_ms) / 1000, 1)


def group_embed(results: list[Result], lang: str, workflows: Workflows | None = None) -> discord.Embed:
    """One embed for the photos of one message: how many, the mode, the time until the last was done."""
    modes = ", ".join(dict.fromkeys(mode_label(workflows, r.mode, lang) for r in results))
    return discord.Embed(
        description=text(
            "result_caption_album", lang, count=len(results), mode=modes, seconds=max(_total_s(r) for r in results)
        ),
        colour=discord.Colour.teal(),
    )


def group_view(numbered: list[tuple[int, Result]], lang: str, workflows: Workflows | None = None) -> discord.ui.View:
    """Other mode and Compare for each numbered photo (Discord allows 25 buttons, five rows of five)."""
    view = discord.ui.View(timeout=None)
    for index, result in numbered:
        others = workflows.others(result.mode) if workflows is not None else []
        buttons = [
            discord.ui.Button(
                label=f"{index}: " + text("button_other_mode", lang, mode=o.label(lang)),
                style=discord.ButtonStyle.primary,
                custom_id=f"{OTHER_MODE_PREFIX}{result.task_id}:{o.name}"[:100],
            )
            for o in others
        ]
        buttons.append(
            discord.ui.Button(
                label=f"{index}: " + text("button_compare", lang),
                style=discord.ButtonStyle.secondary,
                custom_id=f"{COMPARE_PREFIX}{result.task_id}",
            )
        )
        for button in buttons:
            if len(view.children) < 25:
                view.add_item(button)
    return view


def failure_view(result: Result, lang: str, workflows: Workflows | None = None) -> discord.ui.View | None:
    """Retry under a failure, and the other modes when another mode could help."""
    if result.status != "failed" or not result.input:
        return None
    retry, other_modes = retry_offers(result.error)
    view = discord.ui.View(timeout=None)
    if retry:
        view.add_item(
            discord.ui.Button(
                label=text("button_retry", lang),
                style=discord.ButtonStyle.primary,
                custom_id=f"{RETRY_PREFIX}{result.task_id}",
            )
        )
    for other in workflows.others(result.mode) if other_modes and workflows is not None else []:
        view.add_item(
            discord.ui.Button(
                label=text("button_other_mode", lang, mode=other.label(lang)),
                style=discord.ButtonStyle.secondary,
                custom_id=f"{OTHER_MODE_PREFIX}{result.task_id}:{other.name}"[:100],
            )
        )
    return view if view.children else None
