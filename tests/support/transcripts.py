"""What a user saw, read back from a platform fake's recorded calls: every message sent, edited or
deleted in one chat, in order, with the time since the first.

Tests assert on the whole sequence (no status ever goes backwards, it is gone at the end) and
bench/chat_transcripts.py prints them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backend.texts import CATALOG

# A status message's stage, from its text in either language (the order they must come in).
_STAGE_PATTERNS = [
    (0, [CATALOG[lang][key].split("{")[0] for lang in CATALOG for key in ("received", "received_many")]),
    (1, ["Queued", "已排队"]),
    (2, ["Colorizing", "Still working", "正在上色", "仍在处理"]),
    (3, [CATALOG[lang]["sending"] for lang in CATALOG]),
]
_PART_PREFIX = re.compile(r"^(Photo \d+ of \d+: |第 \d+/\d+ 张：)")


def stage_of(text: str) -> int:
    """0 received, 1 queued, 2 running, 3 sending, 4 anything else (a final sentence)."""
    text = _PART_PREFIX.sub("", text or "")
    for stage, starts in _STAGE_PATTERNS:
        if any(text.startswith(start) for start in starts):
            return stage
    return 4


@dataclass
class Line:
    at: float
    kind: str  # sent | edited | deleted | photo | document | album | callback
    message_id: Any
    text: str = ""
    buttons: list[str] = field(default_factory=list)

    def show(self, start: float) -> str:
        buttons = f"  [{' | '.join(self.buttons)}]" if self.buttons else ""
        body = self.text.replace("\n", " / ")
        return f"{self.at - start:6.2f} s  {self.kind:<8} #{self.message_id}: {body}{buttons}"


def _buttons(markup: Any) -> list[str]:
    if not isinstance(markup, dict):
        return []
    return [b.get("text", "") for row in markup.get("inline_keyboard", []) for b in row]


def telegram_chat(fake: Any, chat_id: int) -> list[Line]:
    """Everything the bot did in one Telegram chat, from the Bot API fake's calls."""
    lines: list[Line] = []
    for call in fake.calls:
        params = call.params
        if str(params.get("chat_id")) != str(chat_id):
            continue
        result = call.result if isinstance(call.result, dict) else {}
        if call.method == "sendMessage" and result:
            lines.append(
                Line(
                    call.at, "sent", result["message_id"], str(params.get("text")), _buttons(params.get("reply_markup"))
                )
            )
        elif call.method == "editMessageText" and result:
            lines.append(
                Line(
                    call.at,
                    "edited",
                    params["message_id"],
                    str(params.get("text")),
                    _buttons(params.get("reply_markup")),
                )
            )
        elif call.method == "deleteMessage" and call.result is True:
            lines.append(Line(call.at, "deleted", params["message_id"]))
        elif call.method in ("sendPhoto", "sendDocument") and result:
            kind = "photo" if call.method == "sendPhoto" else "document"
            size = len(call.files.get(kind, b""))
            lines.append(
                Line(
                    call.at,
                    kind,
                    result["message_id"],
                    f"{params.get('caption') or ''} ({size} bytes)",
                    _buttons(params.get("reply_markup")),
                )
            )
        elif call.method == "sendMediaGroup" and isinstance(call.result, list):
            kinds = {m.get("type") for m in params.get("media", [])}
            captions = [m.get("caption") for m in params.get("media", []) if m.get("caption")]
            lines.append(
                Line(
                    call.at,
                    "album",
                    call.result[0]["message_id"],
                    f"{len(call.result)} {'/'.join(sorted(kinds))}s, caption: {captions[0] if captions else ''}",
                )
            )
    return lines


def status_histories(lines: list[Line]) -> dict[Any, list[str]]:
    """Text messages the bot sent and then edited, each with the texts it showed, in order; a
    deleted one ends with "<deleted>"."""
    histories: dict[Any, list[str]] = {}
    for line in lines:
        if line.kind == "sent":
            histories[line.message_id] = [line.text]
        elif line.kind == "edited" and line.message_id in histories:
            histories[line.message_id].append(line.text)
        elif line.kind == "deleted" and line.message_id in histories:
            histories[line.message_id].append("<deleted>")
    return histories


def never_backwards(history: list[str]) -> bool:
    stages = [stage_of(text) for text in history if text != "<deleted>"]
    return stages == sorted(stages)


def discord_interaction(fake: Any, token: str) -> list[Line]:
    """What one interaction's user saw: the deferral, edits of the original, follow-ups, deletions."""
    lines: list[Line] = []
    for call in fake.calls:
        if token not in call.path or call.status >= 300:
            continue
        body = call.json if isinstance(call.json, dict) else {}
        buttons = [c.get("label", "") for row in body.get("components", []) for c in row.get("components", [])]
        if call.path.endswith("/callback"):
            data = body.get("data") or {}
            lines.append(Line(call.at, "callback", "@original", data.get("content") or f"type {body.get('type')}"))
        elif call.method == "PATCH" and call.path.endswith("@original"):
            lines.append(Line(call.at, "edited", "@original", str(body.get("content")), buttons))
        elif call.method == "DELETE":
            lines.append(Line(call.at, "deleted", "@original"))
        elif call.method == "POST":
            embeds = " ".join(e.get("description", "") for e in body.get("embeds", []))
            files = f" +{len(call.files)} {'file' if len(call.files) == 1 else 'files'}" if call.files else ""
            lines.append(
                Line(call.at, "followup", "new", f"{body.get('content') or ''} {embeds}{files}".strip(), buttons)
            )
    return lines
