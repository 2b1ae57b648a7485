"""Reply channel models: each platform's rules, the discriminator, and the wire format old producers wrote."""

import json
import typing

import pytest
from pydantic import ValidationError

from backend.replies import (
    PLATFORMS,
    REPLY,
    CliReply,
    DiscordReply,
    LoopbackReply,
    Reply,
    TelegramReply,
    problem,
    reply_json,
    user_lang,
)

# Exactly what the builders wrote before the models (dicts through json.dumps(separators=(",", ":"),
# ensure_ascii=False)), in their key order: entries like these are in streams and hashes already.
OLD_WIRE = [
    # Telegram, one photo sent as a file (bots/telegram/handlers.py queue_single)
    '{"platform":"telegram","chat_id":42,"message_id":10,"status_message_id":11,"lang":"en","as_file":true}',
    # Telegram, an album, and photos sent one by one under one status
    '{"platform":"telegram","chat_id":-1001234567890,"message_id":10,"status_message_id":12,"lang":"zh","album":"13579"}',
    '{"platform":"telegram","chat_id":42,"message_id":10,"status_message_id":12,"lang":"en","burst":true,"as_file":true}',
    # Telegram, a note with no status message (a reply-less admin chat)
    '{"platform":"telegram","chat_id":42}',
    # Discord (bots/discord/replies.py reply_for), in a guild and in a DM, one of several parts
    '{"platform":"discord","application_id":"1111111111111111111","interaction_token":"aW50ZXJhY3Rpb24",'
    '"token_expires_at":1764640810.1234567,"channel_id":"2222222222222222222","user_id":"3333333333333333333",'
    '"guild_id":"4444444444444444444","lang":"en","private":false,"upload_limit":10485760}',
    '{"platform":"discord","application_id":"1","interaction_token":"t","token_expires_at":1764640810.5,'
    '"channel_id":"2","user_id":"3","guild_id":null,"lang":"zh","private":true,"upload_limit":8388608,"part":"2/4"}',
    '{"platform":"discord","application_id":"1","channel_id":"500","user_id":"42"}',
    '{"platform":"cli"}',
    '{"platform":"test"}',
]


@pytest.mark.parametrize("wire", OLD_WIRE)
def test_old_wire_decodes_and_encodes_back_byte_for_byte(wire):
    reply = REPLY.validate_json(wire)
    assert reply_json(reply) == wire
    assert reply_json(REPLY.validate_python(json.loads(wire))) == wire


def test_built_models_encode_as_the_old_dicts_did():
    old = {"platform": "telegram", "chat_id": 42, "message_id": 10, "status_message_id": 11, "lang": "zh"}
    built = TelegramReply(chat_id=42, message_id=10, status_message_id=11, lang="zh")
    assert reply_json(built) == json.dumps(old, separators=(",", ":"), ensure_ascii=False)
    assert reply_json(CliReply()) == '{"platform":"cli"}'  # the discriminator is written though defaulted
    assert reply_json(LoopbackReply()) == '{"platform":"test"}'
    copied = built.model_copy(update={"as_file": True})
    assert reply_json(copied) == reply_json(built)[:-1] + ',"as_file":true}'
    assert REPLY.validate_json(reply_json(copied)) == copied


def test_non_ascii_and_floats_are_written_as_json_dumps_wrote_them():
    for expires in (1764640810.1234567, 1764640000.0, 0.5, 1e16):
        reply = DiscordReply(application_id=1, channel_id=2, user_id=3, token_expires_at=expires, lang="中文")
        old = {"platform": "discord", "application_id": 1, "token_expires_at": expires, "channel_id": 2}
        old |= {"user_id": 3, "lang": "中文"}
        assert reply_json(reply) == json.dumps(old, separators=(",", ":"), ensure_ascii=False)
    assert isinstance(
        REPLY.validate_json(
            '{"platform":"discord","application_id":1,"channel_id":2,"user_id":3,"token_expires_at":17}'
        ).token_expires_at,
        int,
    )


def test_the_discriminator_picks_the_model():
    assert isinstance(REPLY.validate_json('{"platform":"telegram","chat_id":1}'), TelegramReply)
    assert isinstance(
        REPLY.validate_json('{"platform":"discord","application_id":"1","channel_id":"2","user_id":"3"}'), DiscordReply
    )
    assert isinstance(REPLY.validate_json('{"platform":"cli"}'), CliReply)
    assert isinstance(REPLY.validate_json('{"platform":"test"}'), LoopbackReply)
    tags = [
        typing.get_args(model.model_fields["platform"].annotation)[0]
        for model in typing.get_args(typing.get_args(Reply)[0])
    ]
    assert tuple(tags) == PLATFORMS


def refusal(wire: str) -> str:
    with pytest.raises(ValidationError) as caught:
        REPLY.validate_json(wire)
    return problem(caught.value)


TG = '{"platform":"telegram","chat_id":1'
DC = '{"platform":"discord","application_id":"1","channel_id":"2","user_id":"3"'


@pytest.mark.parametrize(
    "wire, reason",
    [
        ("{not json", "field 'reply' is not JSON"),
        ("[1]", "reply is not an object"),
        ('"telegram"', "reply is not an object"),
        ('{"chat_id":1}', "unknown reply platform None"),
        ('{"platform":"irc","chat_id":1}', "unknown reply platform 'irc'"),
        ('{"platform":"telegram"}', "reply lacks 'chat_id'"),
        (TG + ',"path":"/etc/x"}', "unexpected reply field 'path'"),
        ('{"platform":"cli","chat_id":1}', "unexpected reply field 'chat_id'"),
        ('{"platform":"test","inbox":"x"}', "unexpected reply field 'inbox'"),
        ('{"platform":"telegram","chat_id":"abc"}', "reply field 'chat_id' is not valid"),
        ('{"platform":"telegram","chat_id":true}', "reply field 'chat_id' is not valid"),
        ('{"platform":"telegram","chat_id":1.0}', "reply field 'chat_id' is not valid"),
        ('{"platform":"telegram","chat_id":"' + "1" * 25 + '"}', "reply field 'chat_id' is not valid"),
        (TG + ',"message_id":null}', "reply field 'message_id' is not valid"),
        (TG + ',"lang":"' + "x" * 17 + '"}', "reply field 'lang' is not valid"),
        (TG + ',"album":"' + "x" * 65 + '"}', "reply field 'album' is not valid"),
        (TG + ',"as_file":1}', "reply field 'as_file' is not valid"),
        (TG + ',"burst":"true"}', "reply field 'burst' is not valid"),
        ('{"platform":"discord","application_id":"1"}', "reply lacks 'channel_id'"),
        (DC + ',"interaction_token":""}', "reply field 'interaction_token' is not valid"),
        (DC + ',"interaction_token":"' + "t" * 513 + '"}', "reply field 'interaction_token' is not valid"),
        (DC + ',"token_expires_at":true}', "reply field 'token_expires_at' is not valid"),
        (DC + ',"token_expires_at":"soon"}', "reply field 'token_expires_at' is not valid"),
        (DC + ',"guild_id":"g1"}', "reply field 'guild_id' is not valid"),
        (DC + ',"private":"yes"}', "reply field 'private' is not valid"),
        (DC + ',"upload_limit":0}', "reply field 'upload_limit' is not valid"),
        (DC + ',"upload_limit":1.5}', "reply field 'upload_limit' is not valid"),
        (DC + ',"part":"1/222"}', "reply field 'part' is not valid"),
        (DC + ',"part":"1/2\\n"}', "reply field 'part' is not valid"),
    ],
)
def test_each_refusal_is_named(wire, reason):
    assert refusal(wire) == reason


def test_ids_are_integers_or_short_digit_strings_kept_as_they_came():
    reply = REPLY.validate_json('{"platform":"telegram","chat_id":"-100123","message_id":7}')
    assert reply.chat_id == "-100123" and reply.message_id == 7
    assert REPLY.validate_json('{"platform":"telegram","chat_id":"' + "9" * 24 + '"}').chat_id == "9" * 24
    with pytest.raises(ValidationError):
        TelegramReply(chat_id="12a")


def test_models_are_frozen_and_refuse_explicit_nulls_and_extras():
    reply = TelegramReply(chat_id=1)
    with pytest.raises(ValidationError):
        reply.chat_id = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TelegramReply(chat_id=1, lang=None)
    with pytest.raises(ValidationError):
        TelegramReply(chat_id=1, inbox="x")  # type: ignore[call-arg]
    assert DiscordReply(application_id=1, channel_id=2, user_id=3, guild_id=None).guild_id is None


def test_user_lang_defaults_to_english():
    assert user_lang(TelegramReply(chat_id=1, lang="zh")) == "zh"
    assert user_lang(TelegramReply(chat_id=1)) == "en"
    assert user_lang(CliReply()) == "en"
