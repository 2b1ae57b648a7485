"""Reply channels: where a task's answers go, one frozen pydantic model per platform.

Every record carries its reply channel as JSON in its `reply` field. Each platform's model names
exactly the fields it may hold (anything else is refused), and the union is discriminated on
`platform`, so a reply is validated once, where its JSON arrives (`REPLY.validate_json`), and
everything after that reads typed attributes. Encoding writes `platform` first and then only the
fields that were set, in the order below: the JSON the producers wrote before these models, byte
for byte, so old and new processes read each other's entries.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError


def _digits(value: str) -> str:
    """Discord snowflakes travel as strings: digits only (a leading minus allowed), at most 24."""
    if not (value.lstrip("-").isdigit() and len(value) <= 24):
        raise ValueError("not an id")
    return value


def _present(value: Any) -> Any:
    """An optional field is left out when unknown; an explicit null is refused."""
    if value is None:
        raise ValueError("null")
    return value


# Platform ids: integers, or digit strings. Strict: no bools, no floats, nothing coerced.
Id = int | Annotated[str, AfterValidator(_digits)]
NotNull = BeforeValidator(_present)
OptId = Annotated[Id | None, NotNull]
OptBool = Annotated[bool | None, NotNull]
Lang = Annotated[str | None, NotNull, Field(max_length=16)]


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def model_post_init(self, context: Any, /) -> None:
        # The discriminator is written even when a builder left it to its default.
        self.__pydantic_fields_set__.add("platform")


class TelegramReply(_Channel):
    """A Telegram chat; `status_message_id` is the "Queued…" message progress edits."""

    platform: Literal["telegram"] = "telegram"
    chat_id: Id
    message_id: OptId = None  # the user's photo message: results reply to it
    status_message_id: OptId = None
    lang: Lang = None
    burst: OptBool = None  # one of several photos sent at once, under one status
    album: Annotated[str | None, NotNull, Field(max_length=64)] = None  # the media group id
    as_file: OptBool = None  # sent as a file: the result comes back as one too


class DiscordReply(_Channel):
    """A Discord interaction, answerable through its token for a while, else in the channel or a DM."""

    platform: Literal["discord"] = "discord"
    application_id: Id
    interaction_token: Annotated[str | None, NotNull, Field(min_length=1, max_length=512)] = None
    token_expires_at: Annotated[int | float | None, NotNull] = None  # epoch seconds
    channel_id: Id
    user_id: Id
    guild_id: Id | None = None  # null in a DM
    lang: Lang = None
    private: OptBool = None
    upload_limit: Annotated[int | None, NotNull, Field(gt=0)] = None  # bytes this interaction may upload
    part: Annotated[str | None, NotNull, Field(pattern=r"^\d{1,2}/\d{1,2}$")] = None  # "2/4": one of several


class CliReply(_Channel):
    """`repairbot submit`: the submitting process reads its result itself, so nothing is sent."""

    platform: Literal["cli"] = "cli"


class LoopbackReply(_Channel):
    """The loopback channel of the benchmarks and tests: their own in-process sender takes it."""

    platform: Literal["test"] = "test"


Reply = Annotated[TelegramReply | DiscordReply | CliReply | LoopbackReply, Field(discriminator="platform")]
REPLY: TypeAdapter[Reply] = TypeAdapter(Reply)
PLATFORMS = ("telegram", "discord", "cli", "test")


def reply_json(reply: Reply) -> str:
    """The `reply` field as it goes into a stream entry: compact, non-ASCII kept, unset fields left out
    (what `json.dumps(..., separators=(",", ":"), ensure_ascii=False)` of the old dicts wrote)."""
    return reply.model_dump_json(exclude_unset=True)


def user_lang(reply: Reply) -> str:
    """The language to answer in: the one the bot recorded, else English."""
    lang = reply.lang if isinstance(reply, TelegramReply | DiscordReply) else None
    return lang or "en"


def problem(exc: ValidationError) -> str:
    """Why a reply was refused, as the dead letter says it (the first error is enough)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    kind, where = error["type"], error["loc"]
    name = str(where[1]) if len(where) > 1 else ""
    if kind == "json_invalid":
        return "field 'reply' is not JSON"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "reply is not an object"
    if kind == "union_tag_not_found":
        return "unknown reply platform None"
    if kind == "union_tag_invalid":
        return f"unknown reply platform {error.get('ctx', {}).get('tag')!r}"
    if kind == "extra_forbidden":
        return f"unexpected reply field {name!r}"
    if kind == "missing":
        return f"reply lacks {name!r}"
    return f"reply field {name!r} is not valid"
