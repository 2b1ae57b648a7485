"""Delivers results and progress to Discord for the notifier, over REST only (no gateway connection).

While the interaction token lives, the result is a follow-up on the interaction (ephemeral when the
user asked for privacy) and progress edits the deferred "thinking" message. After that, the result is
a channel message that mentions the user, or a DM when the channel is not writable (always a DM for
private requests). discord.py sleeps through 429s itself; what is left becomes SendRetry or
SendPermanent for the notifier.

A result is one message, whichever way it goes; it is recorded in Redis before it is sent and once
Discord answered (`backend.delivery`), so a notifier restarted after a kill does not post it again
unless its answer was in flight.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord
from redis.asyncio import Redis

from backend.blobs import BlobStore
from backend.delivery import PartStore
from backend.errors import RepairError
from backend.notifier import SendPermanent, SendRetry
from backend.redis_conn import connect
from backend.replies import DiscordReply, Reply, user_lang
from backend.settings import Settings
from backend.status_line import StatusLines, known_run_s, line_id, render_event
from backend.stored_results import stored_results
from backend.tasks import Event, Result
from backend.texts import text
from backend.workflows import Workflows
from bots.discord.endpoints import bot_token, point_at
from bots.discord.messages import (
    ResultImage,
    cancel_view,
    failure_text,
    failure_view,
    group_embed,
    group_view,
    result_embed,
    result_view,
)
from bots.discord.replies import DEFAULT_UPLOAD_LIMIT, token_alive, upload_limit

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 3.0


@contextlib.asynccontextmanager
async def notifier_errors() -> AsyncIterator[None]:
    """Turn discord.py and network errors into what the notifier should do next."""
    try:
        yield
    except (SendRetry, SendPermanent):
        raise
    except discord.RateLimited as exc:
        raise SendRetry("rate limited", after_s=exc.retry_after) from exc
    except discord.DiscordServerError as exc:
        raise SendRetry(f"Discord server error {exc.status}") from exc
    except discord.HTTPException as exc:
        if exc.status == 429:
            raise SendRetry("rate limited without retry_after") from exc
        raise SendPermanent(f"Discord refused: {exc.status} {exc.code} {exc.text}") from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise SendRetry(f"network: {type(exc).__name__}: {exc}") from exc


class DiscordSender:
    """The notifier's Discord sender.

    :param parts: where a result's send progress is recorded (survives a restart)
    :param progress_every_s: at most one progress edit per task this often (state changes always show)
    :param clock: wall-clock seconds (status lines are shared by processes), replaceable in tests
    :param owned: closed with the sender (its Redis connection)
    """

    def __init__(
        self,
        settings: Settings,
        blobs: BlobStore,
        *,
        parts: PartStore,
        progress_every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.time,
        owned: Redis | None = None,
    ):
        self.settings = settings
        self.parts = parts
        self._owned = owned
        self.workflows = Workflows.load(settings.workflows_dir)  # mode labels and the other modes to offer
        self.blobs = blobs
        self.progress_every_s = progress_every_s
        self.clock = clock
        self.client: discord.Client | None = None
        # The status lines (forward-only gate, photos of one message): the owned connection, else our own.
        self._own_redis = owned is None
        self.redis = owned if owned is not None else connect(settings)
        self.lines = StatusLines(self.redis)

    async def start(self) -> None:
        point_at(self.settings)
        self.client = discord.Client(intents=discord.Intents(guilds=True))
        async with notifier_errors():
            await self.client.login(bot_token(self.settings))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._owned is not None:
            await self._owned.aclose()
        elif self._own_redis:
            await self.redis.aclose()

    async def send_admin_alert(self, message: str, admin_ids: list[int]) -> int:
        """An operations alert (backend.alerts) to each admin by direct message; how many got it."""
        reached = 0
        for admin in admin_ids:
            try:
                channel = await self._client().http.start_private_message(admin)
                dm = self._client().get_partial_messageable(int(channel["id"]), type=discord.ChannelType.private)
                await dm.send(content=message)
                reached += 1
            except discord.HTTPException as exc:
                log.warning("alert not delivered to Discord admin %s: %s", admin, exc)
        return reached

    # --- results -------------------------------------------------------------------------------
    async def send_result(self, result: Result) -> None:
        parts = await self.parts.parts(result.task_id)
        if parts.sent("result"):
            return
        await parts.sending("result")
        try:
            await self._send_result(result)
        except SendPermanent:
            await parts.forget()
            raise
        await parts.done("result")

    async def _send_result(self, result: Result) -> None:
        """The result as a follow-up; the photos of one message together in one follow-up once the last
        is in. Then the "thinking" status message goes."""
        reply = discord_reply(result.reply)
        lang = user_lang(reply)
        line = line_id(reply)
        async with notifier_errors():
            if reply.part and line is not None:
                if not await self.lines.part_finished(line, result.task_id):
                    return  # the message's other photos are still on their way
                results = await self._line_results(line, result)
                message = (
                    await self._compose(result, lang) if len(results) == 1 else await self._compose_group(results, lang)
                )
            else:
                message = await self._compose(result, lang)
            await self._deliver(reply, message, result.task_id)
            if line is not None:
                await self.lines.finish(line)
            await self._delete_status(reply)

    async def _line_results(self, line: str, last: Result) -> list[Result]:
        """Every finished photo of the status line, in the order they were attached."""
        found = {r.task_id: r for r in await stored_results(self.redis, await self.lines.tasks(line))}
        found[last.task_id] = last
        return sorted(found.values(), key=lambda r: int((discord_reply(r.reply).part or "1/1").split("/")[0]))

    async def _delete_status(self, reply: DiscordReply) -> None:
        """The "thinking"/status message goes once the result is there (while the token lives)."""
        if not token_alive(reply):
            return
        with contextlib.suppress(discord.HTTPException):  # gone already, or an ephemeral one Discord won't delete
            await self._webhook(reply).delete_message("@original")  # type: ignore[arg-type]

    async def _deliver(self, reply: DiscordReply, message: Callable[..., dict[str, Any]], task_id: str) -> None:
        """A follow-up while the interaction token lives, else a channel message, else a DM."""
        if token_alive(reply):
            try:
                await _send(
                    self._webhook(reply).send,
                    message(mention=False, outside_interaction=False),
                    ephemeral=bool(reply.private),
                    wait=True,
                )
                return
            except discord.HTTPException as exc:
                if exc.status not in (401, 403, 404):
                    raise
                log.info("interaction token of %s no longer works (%s); using the channel", task_id, exc)
        if not reply.private:
            try:
                await _send(self._channel(int(reply.channel_id)).send, message(mention=True, outside_interaction=True))
                return
            except (discord.Forbidden, discord.NotFound) as exc:
                log.info("channel %s not writable for %s (%s); sending a DM", reply.channel_id, task_id, exc)
        await self._direct_message(reply, message)

    async def _compose(self, result: Result, lang: str) -> Callable[..., dict[str, Any]]:
        """A factory of send() keyword arguments; files are rebuilt for each attempt.

        Only the interaction may upload up to its attachment_size_limit (boosted guilds allow more);
        a channel message or a DM from the bot gets the standard 10 MiB, so those get a smaller image."""
        reply = discord_reply(result.reply)
        user_id = int(reply.user_id)
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)])
        data = await self.blobs.get(result.output) if result.status == "ok" else None
        sentence = failure_text(result, lang) if result.status != "ok" else None
        if result.status == "ok" and data is None:
            sentence = text("output_expired", lang)  # the user still hears what happened
        if data is not None:
            limit = upload_limit(reply)
            try:
                image = await ResultImage.fit(data, limit)
                standard_image = (
                    image if limit <= DEFAULT_UPLOAD_LIMIT else await ResultImage.fit(data, DEFAULT_UPLOAD_LIMIT)
                )
            except RepairError:
                sentence = text("output_invalid", lang)
        if sentence is not None:

            def failure(*, mention: bool, outside_interaction: bool) -> dict[str, Any]:
                message = {"content": f"<@{user_id}> {sentence}" if mention else sentence, "allowed_mentions": mentions}
                if (view := failure_view(result, lang, self.workflows)) is not None:
                    message["view"] = view
                return message

            return failure

        def success(*, mention: bool, outside_interaction: bool) -> dict[str, Any]:
            chosen = standard_image if outside_interaction else image
            return {
                "content": f"<@{user_id}>" if mention else None,
                "embed": result_embed(result, chosen, lang, self.workflows),
                "file": chosen.file(),
                "view": result_view(result.task_id, lang, self.workflows, result.mode),
                "allowed_mentions": mentions,
            }

        return success

    async def _compose_group(self, results: list[Result], lang: str) -> Callable[..., dict[str, Any]]:
        """Up to ten images of one message in one follow-up, numbered, with one embed (mode, total time);
        a photo that failed is named in the text. Each file gets its share of the upload limit."""
        reply = discord_reply(results[0].reply)
        user_id = int(reply.user_id)
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(user_id)])
        count = len(results)
        share = max(1, upload_limit(reply) // count)
        standard_share = max(1, min(share, DEFAULT_UPLOAD_LIMIT // count))
        pictures: list[tuple[int, Result, ResultImage, ResultImage]] = []
        notes: list[str] = []
        for index, result in enumerate(results[:10], start=1):
            data = await self.blobs.get(result.output) if result.status == "ok" else None
            problem = failure_text(result, lang) if result.status != "ok" else None
            if result.status == "ok" and data is None:
                problem = text("output_expired", lang)
            if data is not None:
                try:
                    image = await ResultImage.fit(data, share, stem=f"colorized-{index}")
                    standard = (
                        image
                        if share <= standard_share
                        else await ResultImage.fit(data, standard_share, stem=f"colorized-{index}")
                    )
                    pictures.append((index, result, image, standard))
                except RepairError:
                    problem = text("output_invalid", lang)
            if problem:
                notes.append(text("photo_part", lang, index=index, count=count) + problem)

        def group(*, mention: bool, outside_interaction: bool) -> dict[str, Any]:
            lines = ([f"<@{user_id}>"] if mention else []) + notes
            message: dict[str, Any] = {"content": "\n".join(lines) or None, "allowed_mentions": mentions}
            if pictures:
                chosen = [(i, r, standard if outside_interaction else image) for i, r, image, standard in pictures]
                message["embed"] = group_embed([r for _, r, _ in chosen], lang, self.workflows)
                message["files"] = [image.file() for _, _, image in chosen]
                message["view"] = group_view([(i, r) for i, r, _ in chosen], lang, self.workflows)
            return message

        return group

    async def _direct_message(self, reply: DiscordReply, message: Callable[..., dict[str, Any]]) -> None:
        try:
            channel = await self._client().http.start_private_message(int(reply.user_id))
            dm = self._client().get_partial_messageable(int(channel["id"]), type=discord.ChannelType.private)
            await _send(dm.send, message(mention=False, outside_interaction=True))
        except (discord.Forbidden, discord.NotFound) as exc:
            raise SendPermanent(f"user {reply.user_id} can't be reached: {exc}") from exc

    # --- progress ------------------------------------------------------------------------------
    async def send_event(self, event: Event) -> None:
        """Edit the status message ("thinking" at first) with Cancel under it: only forward, only when its
        text changes, refreshes within a stage at most every `progress_every_s`; nothing once the token is gone."""
        reply = discord_reply(event.reply)
        line = line_id(reply)
        if not token_alive(reply) or line is None:
            return
        lang = user_lang(reply)
        current = await self.lines.current(line)
        stage, content = render_event(event, current, await known_run_s(self.redis), lang)
        if reply.part and event.state != "queued":
            index, count = reply.part.split("/")
            content = text("photo_part", lang, index=index, count=count) + content
        if current is not None:
            if stage < current.stage or content == current.text:
                return
            if stage == current.stage and self.clock() * 1000 - current.at_ms < self.progress_every_s * 1000:
                return
        if not await self.lines.advance(line, stage, content):
            return
        async with notifier_errors():
            # "@original" is the deferred response; discord.py puts the id into the URL as given.
            await self._webhook(reply).edit_message(
                "@original",
                content=content,  # type: ignore[arg-type]
                view=cancel_view(line, lang),
            )

    # --- plumbing ------------------------------------------------------------------------------
    def _client(self) -> discord.Client:
        if self.client is None:
            raise RuntimeError("DiscordSender.start() was not called")
        return self.client

    def _webhook(self, reply: DiscordReply) -> discord.Webhook:
        """The interaction's follow-up webhook, built from its application id and token alone."""
        hook = discord.Webhook.partial(int(reply.application_id), reply.interaction_token or "", client=self._client())
        # As Interaction.followup does: an application webhook may send ephemeral messages.
        hook.type = discord.WebhookType.application
        return hook

    def _channel(self, channel_id: int) -> discord.PartialMessageable:
        return self._client().get_partial_messageable(channel_id)


async def _send(send: Callable[..., Any], message: dict[str, Any], **extra: Any) -> None:
    """Send, then drop the buttons' View from discord.py's view store: presses are handled by the bot
    process by custom_id, and a long-running notifier must not keep one View per result forever."""
    try:
        await send(**message, **extra)
    finally:
        if (view := message.get("view")) is not None:
            view.stop()


def build_sender(settings: Settings, blobs: BlobStore, *, progress_every_s: float = PROGRESS_EVERY_S) -> DiscordSender:
    """What `repairbot notifier` and `repairbot up` register for the "discord" platform."""
    redis = connect(settings)
    return DiscordSender(
        settings,
        blobs,
        parts=PartStore(redis, ttl_s=settings.delivered_ttl_s),
        owned=redis,
        progress_every_s=progress_every_s,
    )


def discord_reply(reply: Reply) -> DiscordReply:
    """The notifier routes by platform, so anything else here is a wiring mistake: never retried."""
    if not isinstance(reply, DiscordReply):
        raise SendPermanent(f"a {reply.platform} reply channel reached the Discord sender")
    return reply
