"""Task, Result, Event and DeadLetter records and their stream encoding.

Entries are flat field maps with a schema version `v`; JSON only inside structured fields (`reply`,
`params`); the reply channel decodes into its typed model (`backend.replies`). Decoding validates every field and raises `MalformedRecord` with a reason, so a loop can
dead-letter a bad entry instead of crashing. Nothing decoded here is ever used as a file path.
"""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from backend.blobs import BLOB_KEY
from backend.redact import scrub
from backend.replies import REPLY, Reply, problem, reply_json

SCHEMA_VERSION = "1"
RESULT_STATUSES = ("ok", "failed", "cancelled")
EVENT_STATES = ("queued", "started", "progress", "retrying")

_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_MODE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_USER = re.compile(r"^[a-z]+:[A-Za-z0-9_.-]{1,64}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DIGEST = re.compile(r"^[0-9a-f]{32}$")
_MAX_REPLY_BYTES = 2048
_MAX_TEXT = 2000


class MalformedRecord(ValueError):
    """A stream entry that cannot be trusted; `reason` goes into the dead letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def new_task_id() -> str:
    return uuid.uuid4().hex


def now_ms() -> int:
    return int(time.time() * 1000)


def _text(fields: Mapping[Any, Any], name: str, *, required: bool = True, default: str = "") -> str:
    raw = fields.get(name)
    if raw is None:
        raw = fields.get(name.encode())
    if raw is None:
        if required:
            raise MalformedRecord(f"missing field {name!r}")
        return default
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRecord(f"field {name!r} is not UTF-8") from exc
    if not isinstance(raw, str):
        raw = str(raw)
    if len(raw) > _MAX_TEXT * 4:
        raise MalformedRecord(f"field {name!r} is too long")
    return raw


def _matching(fields: Mapping[Any, Any], name: str, pattern: re.Pattern[str], **kw: Any) -> str:
    value = _text(fields, name, **kw)
    if value == "" and not kw.get("required", True):
        return value
    if not pattern.fullmatch(value):
        raise MalformedRecord(f"field {name!r} is not valid")
    return value


def _integer(fields: Mapping[Any, Any], name: str, *, required: bool = True, default: int = 0) -> int:
    raw = _text(fields, name, required=required, default=str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise MalformedRecord(f"field {name!r} is not an integer") from exc
    if value < 0:
        raise MalformedRecord(f"field {name!r} is negative")
    return value


def _check_version(fields: Mapping[Any, Any]) -> None:
    version = _text(fields, "v")
    if version != SCHEMA_VERSION:
        raise MalformedRecord(f"unknown schema version {version!r}")


def decode_reply(raw: str | bytes | None) -> Reply:
    """The one place a reply channel's JSON becomes its typed model (`backend.replies`)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRecord("field 'reply' is not UTF-8") from exc
    if not raw:
        raise MalformedRecord("missing field 'reply'")
    if len(raw) > _MAX_REPLY_BYTES:
        raise MalformedRecord("field 'reply' is too long")
    try:
        return _validated_reply(raw)
    except ValidationError as exc:
        raise MalformedRecord(problem(exc)) from exc


@functools.lru_cache(maxsize=4096)
def _validated_reply(raw: str) -> Reply:
    """Validated once per distinct JSON: the notifier reads an entry's reply to pick its chat queue and
    again with the record, and a chat's events and results carry the same one (the models are frozen)."""
    return REPLY.validate_json(raw)


def _json_field(fields: Mapping[Any, Any], name: str, *, required: bool = True) -> Any:
    raw = _text(fields, name, required=required, default="")
    if raw == "" and not required:
        return None
    if len(raw) > _MAX_REPLY_BYTES:
        raise MalformedRecord(f"field {name!r} is too long")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise MalformedRecord(f"field {name!r} is not JSON") from exc


def _params(fields: Mapping[Any, Any]) -> dict[str, Any]:
    value = _json_field(fields, "params", required=False)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MalformedRecord("params is not an object")
    for item in value.values():
        if not isinstance(item, (str, int, float, bool)):
            raise MalformedRecord("params values must be scalars")
    return value


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Task:
    task_id: str
    mode: str
    input: str
    reply: Reply
    user: str
    submitted_at: int = field(default_factory=now_ms)
    params: dict[str, Any] = field(default_factory=dict)
    # images.content_digest of the input blob as intake stored it (optional: older producers don't write it); a
    # worker that reads the same bytes back trusts them instead of decoding them again.
    digest: str = ""

    def encode(self) -> dict[str, str]:
        fields = {
            "v": SCHEMA_VERSION,
            "task_id": self.task_id,
            "mode": self.mode,
            "input": self.input,
            "reply": reply_json(self.reply),
            "user": self.user,
            "submitted_at": str(self.submitted_at),
        }
        if self.params:
            fields["params"] = _dumps(self.params)
        if self.digest:
            fields["digest"] = self.digest
        return fields

    @classmethod
    def decode(cls, fields: Mapping[Any, Any]) -> Task:
        _check_version(fields)
        return cls(
            task_id=_matching(fields, "task_id", _TASK_ID),
            mode=_matching(fields, "mode", _MODE),
            input=_matching(fields, "input", BLOB_KEY),
            reply=decode_reply(_text(fields, "reply")),
            user=_matching(fields, "user", _USER),
            submitted_at=_integer(fields, "submitted_at"),
            params=_params(fields),
            digest=_matching(fields, "digest", _DIGEST, required=False),
        )


@dataclass(frozen=True)
class Result:
    task_id: str
    status: Literal["ok", "failed", "cancelled"]
    reply: Reply
    mode: str = ""
    input: str = ""
    output: str = ""
    error: str = ""
    message: str = ""
    user: str = ""
    queued_ms: int = 0
    run_ms: int = 0
    worker: str = ""
    finished_at: int = field(default_factory=now_ms)

    def encode(self) -> dict[str, str]:
        return {
            "v": SCHEMA_VERSION,
            "task_id": self.task_id,
            "status": self.status,
            "reply": reply_json(self.reply),
            "mode": self.mode,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "message": self.message,
            "user": self.user,
            "queued_ms": str(self.queued_ms),
            "run_ms": str(self.run_ms),
            "worker": self.worker,
            "finished_at": str(self.finished_at),
        }

    @classmethod
    def decode(cls, fields: Mapping[Any, Any]) -> Result:
        _check_version(fields)
        status = _text(fields, "status")
        if status not in RESULT_STATUSES:
            raise MalformedRecord(f"unknown result status {status!r}")
        output = _matching(fields, "output", BLOB_KEY, required=False)
        if status == "ok" and not output:
            raise MalformedRecord("ok result without output")
        return cls(
            task_id=_matching(fields, "task_id", _TASK_ID),
            status=status,  # type: ignore[arg-type]
            reply=decode_reply(_text(fields, "reply")),
            mode=_matching(fields, "mode", _MODE, required=False),
            input=_matching(fields, "input", BLOB_KEY, required=False),
            output=output,
            error=_matching(fields, "error", _CODE, required=False),
            message=_text(fields, "message", required=False)[:_MAX_TEXT],
            user=_matching(fields, "user", _USER, required=False),
            queued_ms=_integer(fields, "queued_ms", required=False),
            run_ms=_integer(fields, "run_ms", required=False),
            worker=_text(fields, "worker", required=False)[:128],
            finished_at=_integer(fields, "finished_at", required=False),
        )


@dataclass(frozen=True)
class Event:
    task_id: str
    state: Literal["queued", "started", "progress", "retrying"]
    reply: Reply
    percent: int = 0
    at: int = field(default_factory=now_ms)
    position: int = 0  # "queued": the place in line
    eta_s: int = 0  # "queued": the estimated wait; 0 when run times are not known yet
    count: int = 0  # "queued": photos still waiting under the same status message
    backlogged: int = 0  # "queued": photos of the same status message still in the user's backlog

    def encode(self) -> dict[str, str]:
        fields = {
            "v": SCHEMA_VERSION,
            "task_id": self.task_id,
            "state": self.state,
            "reply": reply_json(self.reply),
            "percent": str(self.percent),
            "at": str(self.at),
            "position": str(self.position),
            "eta_s": str(self.eta_s),
            "count": str(self.count),
        }
        if self.backlogged:
            fields["backlogged"] = str(self.backlogged)
        return fields

    @classmethod
    def decode(cls, fields: Mapping[Any, Any]) -> Event:
        _check_version(fields)
        state = _text(fields, "state")
        if state not in EVENT_STATES:
            raise MalformedRecord(f"unknown event state {state!r}")
        percent = _integer(fields, "percent", required=False)
        if percent > 100:
            raise MalformedRecord("percent over 100")
        return cls(
            task_id=_matching(fields, "task_id", _TASK_ID),
            state=state,  # type: ignore[arg-type]
            reply=decode_reply(_text(fields, "reply")),
            percent=percent,
            at=_integer(fields, "at", required=False),
            position=_integer(fields, "position", required=False),
            eta_s=_integer(fields, "eta_s", required=False),
            count=_integer(fields, "count", required=False),
            backlogged=_integer(fields, "backlogged", required=False),
        )


def _without_tokens(raw: str) -> str:
    """Dead letters live long and admins read them: a reply channel's interaction token stays out."""
    try:
        reply = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(reply, dict) and "interaction_token" in reply:
        reply.pop("interaction_token")
        reply.pop("token_expires_at", None)
        return _dumps(reply)
    return raw


def dead_letter_fields(
    original: Mapping[Any, Any], *, source: str, entry_id: str, reason: str, deliveries: int, last_error: str
) -> dict[str, str]:
    """The original fields plus why and when it died; original values are kept as text, truncated."""
    fields: dict[str, str] = {}
    for key, value in list(original.items())[:32]:
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if name in ("reason", "deliveries", "last_error", "dead_at", "source", "source_id"):
            name = f"orig_{name}"
        if name == "reply":
            text = _without_tokens(text)
        fields[name[:64]] = text[:_MAX_TEXT]
    fields.update(
        {
            "reason": scrub(reason)[:_MAX_TEXT],
            "deliveries": str(deliveries),
            "last_error": scrub(last_error)[:_MAX_TEXT],
            "dead_at": str(now_ms()),
            "source": source,
            "source_id": entry_id,
        }
    )
    return fields


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    fields: dict[str, str]

    @property
    def task_id(self) -> str:
        return self.fields.get("task_id", "")

    @property
    def reason(self) -> str:
        return self.fields.get("reason", "")

    @property
    def source(self) -> str:
        return self.fields.get("source", "")

    @property
    def dead_at(self) -> int:
        try:
            return int(self.fields.get("dead_at", "0"))
        except ValueError:
            return 0

    @classmethod
    def from_entry(cls, entry_id: Any, raw: Mapping[Any, Any]) -> DeadLetter:
        def text(v: Any) -> str:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

        return cls(entry_id=text(entry_id), fields={text(k): text(v) for k, v in raw.items()})
