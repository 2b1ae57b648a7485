"""The colorization mode a user asked for in a photo's caption (English or Chinese words)."""

from __future__ import annotations

CAPTION_WORDS = {
    "person": ("person", "portrait", "人物", "人像"),
    "building": ("building", "landscape", "建筑", "风景"),
}


def mode_from_caption(caption: str | None) -> str | None:
    """`person` or `building` when the caption names one, else None (use the user's default)."""
    if not caption:
        return None
    lowered = caption.lower()
    for mode, words in CAPTION_WORDS.items():
        if any(word in lowered for word in words):
            return mode
    return None
