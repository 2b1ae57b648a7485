"""Exceptions that say what should happen next, each carrying a stable error code.

Codes are keys of `backend.texts.CATALOG`, so every bot can show the same polite sentence in the
user's language; `values` fill the sentence's placeholders (limits and the like).
"""

from __future__ import annotations

from typing import Any

from backend.texts import text


class RepairError(Exception):
    """Base: a stable `code` plus the values its user-facing sentence needs."""

    code = "internal"

    def __init__(self, code: str | None = None, detail: str = "", **values: Any):
        self.code = code or self.code
        self.detail = detail
        self.values = values
        super().__init__(detail or self.code)

    def user_message(self, lang: str | None = "en") -> str:
        return text(self.code, lang, **self.values)


class Refused(RepairError):
    """Intake said no (bad image, limits, paused). Nothing was queued."""

    code = "not_an_image"


class PermanentTaskError(RepairError):
    """Running the task again would fail the same way: fail it now, no retry."""

    code = "comfyui_failed"


class TransientTaskError(RepairError):
    """Worth retrying after a pause: the service was unreachable, reset, busy or timed out."""

    code = "timeout"


class HandedBack(Exception):
    """The worker is stopping and this task was only waiting (for a slot, or before a retry): it
    goes back to the stream for the next worker at once instead of holding up the shutdown."""
