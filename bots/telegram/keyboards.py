"""Inline buttons and their callback data.

Telegram caps callback_data at 64 bytes, so ids travel compactly: a 32-hex task or blob id becomes
22 base64url characters. Everything a button needs is in its data, so any bot process can answer it.

  c:<task>              cancel one task (t:<task id as is> when it isn't 32 hex)
  C:<status_message_id> cancel all under a status message (an album, a burst, backlogged photos)
  o:<input>:<mode>      run the stored input again in another mode
  x:<input><output>     before/after comparison
  m:<mode>              make this mode the user's default
  r:<input>:<mode>      run a failed photo again
  d:<task>              an admin's Retry of a dead letter
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from backend.replies import TelegramReply
from backend.texts import text
from backend.workflows import Mode

_HEX32 = re.compile(r"[0-9a-f]{32}")
CALLBACK_DATA_MAX = 64


def pack_hex(hex_id: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_id)).decode().rstrip("=")


def unpack_hex(packed: str) -> str:
    return base64.urlsafe_b64decode(packed + "==").hex()


def _blob_id(key: str) -> str:
    return key.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Button:
    """A decoded callback: what to do and with which ids (blob keys restored)."""

    action: str  # cancel | cancel_album | other_mode | retry | compare | set_mode | dead_retry
    task_id: str = ""
    status_message_id: int = 0
    input_key: str = ""
    output_key: str = ""
    mode: str = ""


def status_cancel_markup(status_message_id: int, lang: str) -> InlineKeyboardMarkup:
    """Cancel everything under a status message (its tasks and its photos waiting in the backlog)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text("button_cancel", lang), callback_data=f"C:{status_message_id}")]]
    )


def cancel_markup(reply: TelegramReply, task_id: str, lang: str) -> InlineKeyboardMarkup:
    """The Cancel button under a status message (the whole album's when the task is in one)."""
    if reply.album or reply.burst:
        return status_cancel_markup(reply.status_message_id or 0, lang)
    if _HEX32.fullmatch(task_id):
        data = f"c:{pack_hex(task_id)}"
    else:
        data = f"t:{task_id}"
    return InlineKeyboardMarkup([[InlineKeyboardButton(text("button_cancel", lang), callback_data=data)]])


def other_mode_buttons(
    input_key: str, others: Sequence[Mode], lang: str, *, label_prefix: str = ""
) -> list[InlineKeyboardButton]:
    """One "Try <mode>" button per other mode users may choose (from the manifest)."""
    buttons = []
    for other in others:
        data = f"o:{pack_hex(_blob_id(input_key))}:{other.name}"
        if len(data.encode()) <= CALLBACK_DATA_MAX:
            label = label_prefix + text("button_other_mode", lang, mode=other.label(lang))
            buttons.append(InlineKeyboardButton(label, callback_data=data))
    return buttons


def _result_row(
    input_key: str, output_key: str, lang: str, others: Sequence[Mode], *, label_prefix: str = ""
) -> list[InlineKeyboardButton]:
    """ "Other mode" (one per other choosable mode) and "Compare" for one result (only the buttons
    whose ids are known)."""
    row = []
    if input_key and _HEX32.fullmatch(_blob_id(input_key)):
        row += other_mode_buttons(input_key, others, lang, label_prefix=label_prefix)
    if input_key and output_key:
        data = f"x:{pack_hex(_blob_id(input_key))}{pack_hex(_blob_id(output_key))}"
        row.append(InlineKeyboardButton(label_prefix + text("button_compare", lang), callback_data=data))
    return row


def result_markup(
    input_key: str, output_key: str, lang: str, others: Sequence[Mode] = ()
) -> InlineKeyboardMarkup | None:
    """The buttons under one result."""
    row = _result_row(input_key, output_key, lang, others)
    return InlineKeyboardMarkup([row]) if row else None


def album_markup(numbered: Sequence[tuple[int, str, str, Sequence[Mode]]], lang: str) -> InlineKeyboardMarkup | None:
    """A media group can't carry buttons: one row per numbered photo of the album, each button named
    "<n>: Try <mode>" / "<n>: Compare", for the message that follows the group.

    :param numbered: (number in the album, input key, output key, the other modes) per photo
    """
    rows = [_result_row(inp, out, lang, others, label_prefix=f"{n}: ") for n, inp, out, others in numbered]
    rows = [row for row in rows if row]
    return InlineKeyboardMarkup(rows) if rows else None


def failure_markup(input_key: str, mode: str, lang: str, others: Sequence[Mode] = ()) -> InlineKeyboardMarkup | None:
    """Retry under a failure, and "Try <mode>" when another mode could help (the caller decides)."""
    if not input_key or not _HEX32.fullmatch(_blob_id(input_key)):
        return None
    row = []
    data = f"r:{pack_hex(_blob_id(input_key))}:{mode}"
    if mode and len(data.encode()) <= CALLBACK_DATA_MAX:
        row.append(InlineKeyboardButton(text("button_retry", lang), callback_data=data))
    row += other_mode_buttons(input_key, others, lang)
    return InlineKeyboardMarkup([row]) if row else None


def dead_retry_data(task_id: str) -> str:
    """Callback data of a dead letter's Retry button ("" when the id can't fit)."""
    data = f"d:{pack_hex(task_id)}" if _HEX32.fullmatch(task_id) else f"d:{task_id}"
    return data if len(data.encode()) <= CALLBACK_DATA_MAX else ""


def mode_markup(modes: Sequence[Mode], current: str, lang: str) -> InlineKeyboardMarkup:
    """A button per mode users may choose; the current default is ticked."""
    row = [
        InlineKeyboardButton(("✓ " if mode.name == current else "") + mode.label(lang), callback_data=f"m:{mode.name}")
        for mode in modes
        if len(f"m:{mode.name}".encode()) <= CALLBACK_DATA_MAX
    ]
    return InlineKeyboardMarkup([row[i : i + 3] for i in range(0, len(row), 3)])


def parse(data: str) -> Button | None:
    """The button a callback_data string stands for, or None if it isn't one of ours."""
    try:
        kind, _, rest = data.partition(":")
        if kind == "c":
            return Button("cancel", task_id=unpack_hex(rest))
        if kind == "t":
            return Button("cancel", task_id=rest)
        if kind == "C":
            return Button("cancel_album", status_message_id=int(rest))
        if kind in ("o", "r"):
            packed, mode = rest.split(":")
            action = "other_mode" if kind == "o" else "retry"
            return Button(action, input_key=f"blob:in:{unpack_hex(packed)}", mode=mode)
        if kind == "d" and rest:
            return Button("dead_retry", task_id=unpack_hex(rest) if len(rest) == 22 else rest)
        if kind == "m" and rest:
            return Button("set_mode", mode=rest)
        if kind == "x" and len(rest) == 44:
            return Button(
                "compare", input_key=f"blob:in:{unpack_hex(rest[:22])}", output_key=f"blob:out:{unpack_hex(rest[22:])}"
            )
    except ValueError:
        return None
    return None
