"""Keep secrets out of logs, dead letters and admin chats.

URLs may carry credentials (`redis://:pw@host`, `http://user:pw@comfy`), Telegram request URLs carry
the bot token (`/bot<token>/method`) and Discord webhook URLs carry interaction tokens
(`/webhooks/<app>/<token>`). Anything that shows such text to a person goes through here first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_PATHS = [
    (re.compile(r"/bot\d+(?::|%3A)[A-Za-z0-9_-]+", re.IGNORECASE), "/bot<token>"),  # httpx quotes the colon
    (re.compile(r"/file/bot\d+(?::|%3A)[A-Za-z0-9_-]+", re.IGNORECASE), "/file/bot<token>"),
    (re.compile(r"/(webhooks|interactions)/(\d+)/[A-Za-z0-9_.-]{20,}"), r"/\1/\2/<token>"),
    (re.compile(r"(\w+://)[^/\s:@]*:[^/\s@]*@"), r"\1"),
]


def redact_url(url: str) -> str:
    """The URL without user and password, fit for a log line or a status page."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def scrub(text: str) -> str:
    """`text` with bot tokens, interaction tokens and URL credentials replaced by placeholders."""
    for pattern, replacement in _SECRET_PATHS:
        text = pattern.sub(replacement, text)
    return text
