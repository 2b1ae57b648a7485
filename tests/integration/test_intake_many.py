"""submit_many against a real redis-server: one call per chat event, one photo or many, with the
limits, the downloads through the bot's callback, the backlog and the refusals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend import keys
from backend.errors import Refused
from backend.intake_many import Fate, PhotoSource
from backend.replies import TelegramReply
from backend.services import Services

USER = "test:many"


class Event:
    """A chat event's photos as a bot would describe them, recording what intake asked of it."""

    def __init__(self, *payloads: bytes | BaseException, key: str = "ev", **declared: Any):
        self.fetched: list[int] = []
        self.asked: list[list[int]] = []  # the photos each call of `replies` was given, by index
        self.sources = [
            self._source(index, payload, f"test:{key}:{index}", declared) for index, payload in enumerate(payloads)
        ]

    def _source(self, index: int, payload: bytes | BaseException, event_key: str, declared: dict) -> PhotoSource:
        async def fetch() -> bytes:
            self.fetched.append(index)
            if isinstance(payload, BaseException):
                raise payload
            return payload

        size = declared.get("sizes", {}).get(index)
        mime = declared.get("mimes", {}).get(index)
        return PhotoSource(
            fetch, event_key=event_key, size=size, mime=mime, size_limit=declared.get("limit"), ref=index
        )

    async def replies(self, usable: Sequence[PhotoSource]) -> list[TelegramReply]:
        self.asked.append([photo.ref for photo in usable])
        return [reply(photo.ref) for photo in usable]


def reply(index: int) -> TelegramReply:
    """The reply channel of the event's photo `index`: a reply to its message, under one status."""
    return TelegramReply(chat_id=5, message_id=100 + index, status_message_id=99, lang="en")


def with_limits(settings, **limits):
    return settings.model_copy(update=limits)


async def stream_tasks(services: Services) -> list[dict[str, str]]:
    entries = await services.redis.xrange(services.settings.tasks_stream)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_one_photo_is_one_task_with_its_place_and_the_reply_it_was_given(settings, photo_bytes):
    async with Services.open(settings) as services:
        event = Event(photo_bytes)
        intook = await services.intake.submit_many(event.sources, user=USER, replies=event.replies)
        [photo] = intook.photos
        assert photo.fate is Fate.QUEUED and photo.reply == reply(0)
        assert event.asked == [[0]] and event.fetched == [0]
        assert intook.place == (1, photo.submitted.eta_s) and intook.taken == 1 and intook.first_refusal is None
        [task] = await stream_tasks(services)
        assert task["task_id"] == photo.submitted.task_id and task["mode"] == settings.default_mode
        assert (
            task["reply"] == '{"platform":"telegram","chat_id":5,"message_id":100,"status_message_id":99,"lang":"en"}'
        )


async def test_many_photos_keep_their_order_and_only_those_worth_downloading_are_fetched(settings, photo_bytes):
    async with Services.open(with_limits(settings, user_max_active=10)) as services:
        event = Event(
            photo_bytes,
            photo_bytes,
            photo_bytes,
            photo_bytes,
            mimes={1: "application/pdf"},
            sizes={2: 9 * 1024 * 1024},
            limit=8 * 1024 * 1024,  # the platform's cap, under ours: its number is the one the user must meet
        )
        intook = await services.intake.submit_many(event.sources, user=USER, replies=event.replies, mode="building")
        assert [p.fate for p in intook.photos] == [Fate.QUEUED, Fate.REFUSED, Fate.REFUSED, Fate.QUEUED]
        assert intook.photos[1].refusal.code == "not_an_image" and intook.photos[1].reply is None
        assert intook.photos[2].refusal.code == "too_large" and intook.photos[2].refusal.values == {"max_mb": 8}
        assert event.asked == [[0, 3]] and event.fetched == [0, 3]
        tasks = await stream_tasks(services)
        assert [t["task_id"] for t in tasks] == [s.task_id for s in intook.queued]
        assert {t["mode"] for t in tasks} == {"building"}


async def test_over_the_concurrent_cap_photos_wait_in_the_backlog_then_must_be_sent_again(settings, photo_bytes):
    async with Services.open(with_limits(settings, user_max_active=1, user_backlog=2)) as services:
        event = Event(*[photo_bytes] * 5)
        seen: list[Fate] = []

        async def each(photo) -> None:
            seen.append(photo.fate)

        intook = await services.intake.submit_many(event.sources, user=USER, replies=event.replies, on_each=each)
        assert (
            seen == [p.fate for p in intook.photos] == [Fate.QUEUED, Fate.HELD, Fate.HELD, Fate.DROPPED, Fate.DROPPED]
        )
        assert (len(intook.queued), intook.held, intook.dropped, intook.taken) == (1, 2, 2, 3)
        assert intook.photos[3].refusal.code == "too_many_active"
        assert len(await stream_tasks(services)) == 1
        assert await services.backlog.room(USER) == 0
        # Without the backlog, the cap refuses.
        other = Event(photo_bytes, key="nobacklog")
        refused = await services.intake.submit_many(
            other.sources, user="test:other", replies=other.replies, backlog=False
        )
        assert refused.photos[0].fate is Fate.QUEUED
        again = Event(photo_bytes, key="nobacklog2")
        refused = await services.intake.submit_many(
            again.sources, user="test:other", replies=again.replies, backlog=False
        )
        assert refused.refusal is not None and refused.refusal.code == "too_many_active"
        assert again.asked == [] and again.fetched == []


async def test_a_refusal_mix_each_photo_gets_its_own_reason(settings, photo_bytes):
    async with Services.open(with_limits(settings, user_max_active=10)) as services:
        event = Event(
            photo_bytes,
            b"not an image at all" * 10,
            ConnectionResetError("the CDN hung up"),
            Refused("too_large", max_mb=20),
            photo_bytes,
        )
        intook = await services.intake.submit_many(event.sources, user=USER, replies=event.replies)
        fates = [p.fate for p in intook.photos]
        assert fates == [Fate.QUEUED, Fate.REFUSED, Fate.REFUSED, Fate.REFUSED, Fate.QUEUED]
        codes = [p.refusal.code for p in intook.photos[1:4]]
        assert codes[0] in ("not_an_image", "image_broken", "unsupported_format") and codes[1:] == [
            "error_generic",
            "too_large",
        ]
        assert all(p.reply is not None for p in intook.photos), "each was downloaded under its reply channel"
        assert intook.first_refusal is intook.photos[1].refusal
        assert len(await stream_tasks(services)) == 2
        assert await services.redis.scard(keys.user_active(USER)) == 2, "refused photos gave their places back"


async def test_an_event_delivered_again_is_answered_with_its_first_tasks_without_a_download(settings, photo_bytes):
    async with Services.open(with_limits(settings, user_max_active=10)) as services:
        first = Event(photo_bytes, photo_bytes, key="album")
        queued = await services.intake.submit_many(first.sources, user=USER, replies=first.replies)
        again = Event(photo_bytes, photo_bytes, photo_bytes, key="album")  # the same two, and one more
        answered = await services.intake.submit_many(again.sources, user=USER, replies=again.replies)
        assert [p.fate for p in answered.photos] == [Fate.AGAIN, Fate.AGAIN, Fate.QUEUED]
        assert [p.submitted.task_id for p in answered.photos[:2]] == [s.task_id for s in queued.queued]
        assert all(p.submitted.duplicate and p.reply is None for p in answered.photos[:2])
        assert answered.photos[0].submitted.reply == reply(0), "where the first was answered"
        assert again.fetched == [2] and again.asked == [[2]]
        assert len(await stream_tasks(services)) == 3


async def test_a_closed_queue_refuses_the_event_before_anything_is_made_or_fetched(settings, photo_bytes):
    async with Services.open(settings) as services:
        await services.admin.pause()
        event = Event(photo_bytes, photo_bytes)
        intook = await services.intake.submit_many(event.sources, user=USER, replies=event.replies)
        assert intook.refusal is not None and intook.refusal.code == "paused"
        assert [p.refusal for p in intook.photos] == [intook.refusal, intook.refusal]
        assert event.asked == [] and event.fetched == []
        nothing = await services.intake.submit_many([], user=USER, replies=event.replies)
        assert nothing.refusal is not None and nothing.refusal.code == "not_an_image"
        assert await stream_tasks(services) == []


async def test_a_photo_over_the_pixel_limit_is_shrunk_and_its_status_line_keeps_the_note(settings, photo_bytes):
    import io

    from PIL import Image

    from backend.status_line import QUEUED, line_id

    async with Services.open(
        with_limits(settings, max_image_pixels=100_000, max_image_pixels_ceiling=1_000_000)
    ) as services:
        event = Event(photo_bytes)  # 512×512: over the limit, under the ceiling
        intook = await services.intake.submit_many(event.sources, user=USER, replies=event.replies)
        [photo] = intook.photos
        assert photo.fate is Fate.QUEUED
        [note] = intook.notes
        assert "512×512" in note
        line = line_id(reply(0))
        await services.lines.advance(line, QUEUED, "Queued")
        assert (await services.lines.current(line)).note == note
        [task] = await stream_tasks(services)
        stored = await services.blobs.get(task["input"])
        width, height = Image.open(io.BytesIO(stored)).size
        assert width * height <= 100_000
