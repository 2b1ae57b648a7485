"""Secrets never reach a log line, a dead letter or an admin chat."""

from backend.redact import redact_url, scrub
from backend.tasks import dead_letter_fields


def test_urls_lose_their_credentials():
    assert redact_url("redis://user:s3cret@redis.example:6379/0") == "redis://redis.example:6379/0"
    assert redact_url("http://admin:pw@10.0.0.5:8188") == "http://10.0.0.5:8188"
    assert redact_url("http://127.0.0.1:8188") == "http://127.0.0.1:8188"


def test_tokens_in_error_text_are_replaced():
    token = "123456789:" + "AAbbCCddEE" * 3 + "ffGGh"  # built here so no token-shaped literal sits in git
    text = (
        f"POST https://api.telegram.org/bot{token}/sendPhoto failed; "
        "404, url='https://discord.com/api/v10/webhooks/1111/aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldA'"
    )
    cleaned = scrub(text)
    assert token not in cleaned and "aW50ZXJhY3Rpb24" not in cleaned
    assert "/bot<token>/sendPhoto" in cleaned and "/webhooks/1111/<token>" in cleaned


def test_dead_letters_keep_no_interaction_token():
    reply = (
        '{"platform":"discord","application_id":"1","channel_id":"2","user_id":"3",'
        '"interaction_token":"very-secret-interaction-token"}'
    )
    fields = dead_letter_fields(
        {b"reply": reply.encode(), b"task_id": b"x" * 32},
        source="s",
        entry_id="1-0",
        reason="boom at https://discord.com/api/v10/webhooks/1/abcdefghijklmnopqrstuvwxyz",
        deliveries=1,
        last_error="",
    )
    assert "very-secret" not in fields["reply"] and '"channel_id":"2"' in fields["reply"]
    assert "abcdefghijklmnop" not in fields["reason"]
