"""Records: round trips, and every way a stream entry can be malformed is caught with a reason."""

import json

import pytest

from backend.replies import CliReply, DiscordReply, TelegramReply
from backend.tasks import (
    SCHEMA_VERSION,
    DeadLetter,
    Event,
    MalformedRecord,
    Result,
    Task,
    dead_letter_fields,
    decode_reply,
    new_task_id,
)

BLOB = "blob:in:" + "a" * 32


def make_task(**overrides):
    fields = dict(
        task_id=new_task_id(),
        mode="person",
        input=BLOB,
        reply=TelegramReply(chat_id=42, status_message_id=7, lang="zh"),
        user="telegram:42",
        params={"model_input_size": 512},
    )
    fields.update(overrides)
    return Task(**fields)


def as_redis(fields):
    """What redis-py hands back: bytes keys and values."""
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_task_round_trip_through_bytes():
    task = make_task()
    assert Task.decode(as_redis(task.encode())) == task


def test_result_and_event_round_trip():
    result = Result(
        new_task_id(),
        "ok",
        CliReply(),
        mode="person",
        input=BLOB,
        output="blob:out:" + "b" * 32,
        run_ms=1200,
        worker="host-worker-0",
    )
    assert Result.decode(as_redis(result.encode())) == result
    event = Event(new_task_id(), "progress", CliReply(), percent=40)
    assert Event.decode(as_redis(event.encode())) == event


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"v": "99"}, "unknown schema version"),
        ({"task_id": "../../etc/passwd"}, "task_id"),
        ({"input": "/etc/passwd"}, "input"),
        ({"mode": "Person; rm -rf"}, "mode"),
        ({"reply": "{not json"}, "not JSON"),
        ({"reply": json.dumps({"platform": "irc", "chat_id": 1})}, "unknown reply platform"),
        ({"reply": json.dumps({"platform": "telegram"})}, "lacks 'chat_id'"),
        ({"reply": json.dumps({"platform": "telegram", "chat_id": 1, "path": "/etc/x"})}, "unexpected reply field"),
        ({"reply": json.dumps({"platform": "telegram", "chat_id": "abc"})}, "chat_id"),
        ({"submitted_at": "yesterday"}, "not an integer"),
        ({"params": json.dumps({"a": {"nested": 1}})}, "scalars"),
        ({"user": ""}, "user"),
    ],
)
def test_malformed_task_fields_are_named(change, reason):
    fields = make_task().encode()
    fields.update(change)
    with pytest.raises(MalformedRecord) as caught:
        Task.decode(as_redis(fields))
    assert reason in caught.value.reason


def test_missing_field_and_non_utf8_are_malformed():
    fields = as_redis(make_task().encode())
    del fields[b"mode"]
    with pytest.raises(MalformedRecord, match="missing field 'mode'"):
        Task.decode(fields)
    fields = as_redis(make_task().encode())
    fields[b"mode"] = b"\xff\xfe"
    with pytest.raises(MalformedRecord, match="not UTF-8"):
        Task.decode(fields)


def test_ok_result_needs_an_output_and_status_is_checked():
    base = Result(new_task_id(), "failed", CliReply(), error="comfyui_failed").encode()
    with pytest.raises(MalformedRecord, match="without output"):
        Result.decode({**base, "status": "ok"})
    with pytest.raises(MalformedRecord, match="unknown result status"):
        Result.decode({**base, "status": "maybe"})


def test_discord_reply_channel_requires_its_ids():
    reply = {
        "platform": "discord",
        "application_id": "111",
        "channel_id": "222",
        "user_id": "333",
        "interaction_token": "tok",
        "token_expires_at": 1.5,
        "private": True,
    }
    decoded = decode_reply(json.dumps(reply).encode())
    assert isinstance(decoded, DiscordReply) and decoded.model_dump(exclude_unset=True) == reply
    with pytest.raises(MalformedRecord, match="reply field 'private' is not valid"):
        decode_reply(json.dumps({**reply, "private": "yes"}))
    with pytest.raises(MalformedRecord, match="reply lacks 'channel_id'"):
        decode_reply('{"platform":"discord","application_id":"1"}')


def test_the_reply_field_is_bounded_and_must_be_there():
    padded = '{"platform":"telegram","chat_id":1,"album":"' + "x" * 64 + '"}' + " " * 2000
    with pytest.raises(MalformedRecord, match="field 'reply' is too long"):
        decode_reply(padded)
    assert isinstance(decode_reply(padded[:2048]), TelegramReply)  # the limit itself is fine
    fields = make_task().encode()
    del fields["reply"]
    with pytest.raises(MalformedRecord, match="missing field 'reply'"):
        Task.decode(fields)
    with pytest.raises(MalformedRecord, match="not UTF-8"):
        decode_reply(b'{"platform":"telegram","chat_id":1,"lang":"\xff"}')


def test_records_write_the_reply_json_old_producers_wrote():
    wire = '{"platform":"telegram","chat_id":42,"message_id":9,"status_message_id":7,"lang":"zh","as_file":true}'
    task = make_task(reply=decode_reply(wire))
    assert task.encode()["reply"] == wire
    result = Result(task.task_id, "failed", task.reply, error="timeout")
    assert Result.decode(as_redis(result.encode())).encode()["reply"] == wire


def test_dead_letter_keeps_original_fields_and_reason():
    original = as_redis(make_task().encode())
    fields = dead_letter_fields(
        original, source="photo_repair_tasks", entry_id="1-1", reason="poison", deliveries=4, last_error="boom"
    )
    letter = DeadLetter.from_entry(b"5-0", as_redis(fields))
    assert letter.reason == "poison" and letter.source == "photo_repair_tasks"
    assert Task.decode(letter.fields).task_id == letter.task_id
    assert letter.fields["v"] == SCHEMA_VERSION and letter.fields["deliveries"] == "4"
