"""`submit_many`: the one intake call for a chat event, one photo or many (an album, a burst, a
message's attachments).

A bot describes each photo (`PhotoSource`: what the platform declares about it, its event key, and
how to download it) and says how to answer; this module does the rest in the order that spends the
least: photos queued by an earlier delivery of the event are found first, then what the platform
declares is checked (type, size), then whether the user and the queue are open at all, and only then
is anything downloaded. Each photo is then shrunk if over the pixel limit, queued, kept in the
user's backlog when over the concurrent cap, or refused. The bot gets one `Intook` back and turns it
into messages: nothing in it is platform-specific.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from backend import images
from backend.errors import Refused
from backend.oversize import shrink_to_limit
from backend.replies import Reply, user_lang
from backend.status_line import StatusLines, line_id
from backend.texts import text

if TYPE_CHECKING:
    from backend.intake import Intake, Submitted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoSource:
    """One photo of a chat event, as the bot knows it before downloading.

    :param fetch: downloads the photo; may raise Refused (the platform said it is too big), any
        other error is logged and the photo refused with the generic apology
    :param event_key: the photo's idempotency key (see `keys.event_claim`); a redelivered event is
        answered with its first tasks, never queued again
    :param size: the size the platform declares, when it does
    :param mime: the declared content type; one that is not `image/*` is refused without a download
    :param size_limit: the platform's own download cap, if it has one under ours
    :param ref: anything the bot wants back with this photo's outcome (its message, its attachment)
    """

    fetch: Callable[[], Awaitable[bytes]]
    event_key: str | None = None
    size: int | None = None
    mime: str | None = None
    size_limit: int | None = None
    ref: Any = None


class Fate(StrEnum):
    QUEUED = "queued"  # a new task
    AGAIN = "again"  # this photo's event was queued before (a redelivery): `submitted` is that task
    HELD = "held"  # over the concurrent cap: kept in the user's backlog, starts by itself
    DROPPED = "dropped"  # over the backlog too: the user must send it again
    REFUSED = "refused"  # not taken; `refusal` says why


@dataclass
class PhotoOutcome:
    source: PhotoSource
    fate: Fate
    submitted: Submitted | None = None  # QUEUED and AGAIN
    refusal: Refused | None = None  # REFUSED and DROPPED
    reply: Reply | None = None  # the reply channel it got; None when settled before one was made


@dataclass
class Intook:
    """What became of a chat event's photos, in the order they were given."""

    photos: list[PhotoOutcome]
    refusal: Refused | None = None  # the whole event was refused before any download (paused, limits, queue full);
    # the photos it stopped carry it as their refusal too
    notes: list[str] = field(default_factory=list)  # "your image was shrunk", in the reply's language

    def of(self, *fates: Fate) -> list[PhotoOutcome]:
        return [photo for photo in self.photos if photo.fate in fates]

    @property
    def queued(self) -> list[Submitted]:
        return [photo.submitted for photo in self.of(Fate.QUEUED) if photo.submitted is not None]

    @property
    def held(self) -> int:
        return len(self.of(Fate.HELD))

    @property
    def dropped(self) -> int:
        return len(self.of(Fate.DROPPED))

    @property
    def taken(self) -> int:
        """Queued or waiting in the backlog: the photos that will come back."""
        return len(self.queued) + self.held

    @property
    def first_refusal(self) -> Refused | None:
        """Why nothing was taken: the event's refusal, else the first photo's."""
        return self.refusal or next((p.refusal for p in self.of(Fate.REFUSED, Fate.DROPPED) if p.refusal), None)

    @property
    def place(self) -> tuple[int, int]:
        """The first queued photo's place in line and wait (s), as intake answered it; (0, 0) if none."""
        first = next(iter(self.queued), None)
        return (first.position, first.eta_s) if first is not None else (0, 0)


MakeReplies = Callable[[Sequence[PhotoSource]], Awaitable[Sequence[Reply]]]
OnEach = Callable[[PhotoOutcome], Awaitable[None]]


async def submit_many(
    intake: Intake,
    photos: Sequence[PhotoSource],
    *,
    user: str,
    replies: MakeReplies,
    mode: str | None = None,
    exempt: bool = False,
    backlog: bool = True,
    on_each: OnEach | None = None,
) -> Intook:
    """Queue a chat event's photos; see the module docstring for the order of the checks.

    :param replies: called once, when at least one photo passed the checks that need no download,
        with those photos; returns each one's reply channel (a bot sends its status message here)
    :param mode: the mode the user asked for; None: the user's default
    :param backlog: photos over the concurrent cap wait in the user's backlog (when it has room)
        rather than being refused
    :param on_each: told each downloaded photo's outcome as soon as it is known (before the next
        photo is fetched), for bookkeeping that must not wait for the whole event
    """
    if not photos:
        return Intook([], refusal=Refused("not_an_image", detail="no photo in the event"))
    outcomes: dict[int, PhotoOutcome] = {}
    for index, photo in enumerate(photos):
        first = await intake.claimed(photo.event_key) if photo.event_key else None
        if first is not None:
            log.info("event %s delivered again; answered with task %s", photo.event_key, first.task_id)
            outcomes[index] = PhotoOutcome(photo, Fate.AGAIN, submitted=first)
            continue
        try:
            _check_declared(intake, photo)
        except Refused as refusal:
            outcomes[index] = PhotoOutcome(photo, Fate.REFUSED, refusal=refusal)
    usable = [index for index in range(len(photos)) if index not in outcomes]
    result = Intook([])
    if usable:
        try:  # room for one at least; each photo is then checked on its own
            await _check_open(intake, user, exempt=exempt, backlog=backlog, event_key=photos[usable[0]].event_key)
        except Refused as refusal:  # each photo not taken for the same reason, said once for the event
            result.refusal = refusal
            outcomes.update({index: PhotoOutcome(photos[index], Fate.REFUSED, refusal=refusal) for index in usable})
            usable = []
    if usable:
        made = list(await replies([photos[index] for index in usable]))
        if len(made) != len(usable):
            raise ValueError(f"replies made {len(made)} reply channels for {len(usable)} photos")
        chosen = mode or await intake.default_mode(user)
        for index, reply in zip(usable, made):
            outcomes[index] = outcome = await _take(
                intake, photos[index], reply, user=user, mode=chosen, exempt=exempt, backlog=backlog, notes=result.notes
            )
            if on_each is not None:
                await on_each(outcome)
    result.photos = [outcomes[index] for index in range(len(photos))]
    return result


def _check_declared(intake: Intake, photo: PhotoSource) -> None:
    """Refuse by what the platform declares, before a download: the type, then the size against the
    tighter of our limit and the platform's (its refusal names the limit the user must meet)."""
    if photo.mime is not None and not photo.mime.startswith("image/"):
        raise Refused("not_an_image", detail=f"content type {photo.mime}")
    if photo.size_limit is not None and photo.size_limit < intake.max_image_bytes:
        images.check_size(photo.size, photo.size_limit)
    intake.check_size(photo.size)


async def _check_open(intake: Intake, user: str, *, exempt: bool, backlog: bool, event_key: str | None) -> None:
    """Intake's check_open, except that a user at the concurrent cap may still send while the backlog
    has room."""
    try:
        await intake.check_open(user, exempt=exempt, event_key=event_key)
    except Refused as refusal:
        if not backlog or refusal.code != "too_many_active" or intake.backlog is None:
            raise
        if await intake.backlog.room(user) <= 0:
            raise


async def _take(
    intake: Intake,
    photo: PhotoSource,
    reply: Reply,
    *,
    user: str,
    mode: str,
    exempt: bool,
    backlog: bool,
    notes: list[str],
) -> PhotoOutcome:
    """Download one photo and queue it (or hold it in the backlog); a refusal is its outcome."""
    try:
        data = await _fetch(photo, user)
        shrunk = await _shrunk_if_over(intake, data, reply)
        if shrunk is not None:
            data, note = shrunk
            notes.append(note)
            if (line := line_id(reply)) is not None:  # every later status text repeats it, from the start
                await StatusLines(intake.redis).keep_note(line, "\n".join(notes))
        try:
            submitted = await intake.submit(
                data, mode=mode, reply=reply, user=user, exempt=exempt, event_key=photo.event_key
            )
        except Refused as refusal:
            if not backlog or refusal.code != "too_many_active" or intake.backlog is None:
                raise
            try:
                await intake.backlog.hold(data, user=user, mode=mode, reply=reply, exempt=exempt)
            except Refused as full:
                if full.code != "too_many_active":
                    raise
                return PhotoOutcome(photo, Fate.DROPPED, refusal=full, reply=reply)
            return PhotoOutcome(photo, Fate.HELD, reply=reply)
    except Refused as refusal:
        return PhotoOutcome(photo, Fate.REFUSED, refusal=refusal, reply=reply)
    # A duplicate here: another delivery of the same event raced this one to the XADD; its task stands.
    return PhotoOutcome(photo, Fate.AGAIN if submitted.duplicate else Fate.QUEUED, submitted=submitted, reply=reply)


async def _fetch(photo: PhotoSource, user: str) -> bytes:
    try:
        return await photo.fetch()
    except Refused:
        raise
    except Exception as exc:  # noqa: BLE001 - the platform's download failed: an apology, not a crash
        log.warning("photo from %s could not be downloaded: %s: %s", user, type(exc).__name__, exc)
        raise Refused("error_generic", detail=f"download failed: {exc}") from exc


async def _shrunk_if_over(intake: Intake, data: bytes, reply: Reply) -> tuple[bytes, str] | None:
    """An image over the pixel limit becomes a copy shrunk to it, with a note saying so."""
    shrunk = await asyncio.to_thread(
        shrink_to_limit, data, max_pixels=intake.max_image_pixels, ceiling_pixels=intake.max_image_pixels_ceiling
    )
    if shrunk is None:
        return None
    return shrunk.data, text("shrunk_note", user_lang(reply), **shrunk.note_values())
