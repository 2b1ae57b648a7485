"""Logging for every process: one line per event, plain text or JSON, and no secret in any line.

- `LOG_FORMAT=json` writes one JSON object per line: time, level, logger, message, `task_id` when
  the line is about a task, and the traceback (as one string) when there is one.
- `task_id` comes from a context variable: the worker and the notifier call `about_task(task_id)`
  where they start handling a task, and every line logged from there on (in that asyncio task and
  the ones it creates) carries it, whichever library logs it.
- Secrets are removed by one `logging.Filter` on the root handler (`Redactor`), for every logger,
  tracebacks and stack traces included: the configured tokens and passwords verbatim, plus whatever
  `backend.redact.scrub` recognises (Telegram `/bot<token>/` URLs that httpx logs at INFO, Discord
  webhook tokens, credentials in URLs). Call sites log freely and never scrub for the log's sake.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterable
from urllib.parse import quote

from backend.redact import scrub

task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)
HIDDEN = "<secret>"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Noise, not secrets (the filter handles those): per-heartbeat gateway lines, per-request access logs,
# the Updater's retry chatter, discord.py's per-request DEBUG lines.
QUIET_LOGGERS = {
    "discord.gateway": logging.WARNING,
    "aiohttp.access": logging.WARNING,
    "telegram.ext.Updater": logging.WARNING,
    "httpcore": logging.WARNING,
    "discord.http": logging.INFO,
    "discord.webhook": logging.INFO,
}


def about_task(task_id: str | None) -> None:
    """Every log line from here on in this asyncio task (and those it spawns) carries `task_id`;
    None ends that (an asyncio task that handles one entry after another)."""
    task_id_var.set(task_id)


class Redactor(logging.Filter):
    """Rewrites each record so its message, traceback and stack hold no secret; never drops one."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        variants = {form for secret in secrets for form in (secret, quote(secret, safe=""))}  # as in URLs too
        self.secrets = sorted(variants, key=len, reverse=True)  # longest first: no partial leftovers
        self._formatter = logging.Formatter()

    def clean(self, text: str) -> str:
        text = scrub(text)  # first, so a token in a URL reads /bot<token>/
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.clean(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        record.task_id = getattr(record, "task_id", None) or task_id_var.get()
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [task=...]`, a traceback folded into the same line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        if task_id and task_id not in record.getMessage():
            first, newline, rest = line.partition("\n")
            line = f"{first} [task {task_id}]{newline}{rest}"
        return line.replace("\n", " | ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, task_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = getattr(record, "task_id", None)
        if task_id:
            entry["task_id"] = task_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(secrets: Iterable[str] = (), *, log_level: str = "INFO", log_format: str = "text") -> None:
    """Configure the root logger once per process: one handler, the redactor of `secrets` on it, the
    format (`text` or `json`) and the level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redactor(list(secrets)))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(log_level.upper())
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(level, root.level))
