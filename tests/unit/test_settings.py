"""Settings: comma lists, secrets kept out of reprs, and every setting documented."""

from backend.settings import REPO_ROOT, Settings


def test_comma_separated_lists(monkeypatch):
    monkeypatch.setenv("COMFYUI_URL", "http://a:8188/, http://b:8188")
    monkeypatch.setenv("TELEGRAM_ADMIN_IDS", "1001,1002")
    monkeypatch.setenv("DISCORD_GUILD_IDS", "")
    settings = Settings(_env_file=None)
    assert settings.comfyui_urls == ["http://a:8188", "http://b:8188"]
    assert settings.telegram_admin_ids == [1001, 1002]
    assert settings.discord_guild_ids == []


def test_tokens_never_show_in_repr(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123456:very-secret-value")
    settings = Settings(_env_file=None)
    assert "very-secret-value" not in repr(settings)
    assert settings.telegram_bot_token.get_secret_value() == "123456:very-secret-value"


def test_env_example_documents_every_setting():
    documented = (REPO_ROOT / "config" / ".env.example").read_text()
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in documented]
    assert missing == []


def test_block_must_be_shorter_than_the_socket_timeout():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="BLOCK_MS"):
        Settings(_env_file=None, block_ms=10_000, redis_socket_timeout_s=5)


def test_sentinel_url_gives_a_client_that_follows_the_master():
    from backend.redis_conn import connect

    client = connect(Settings(_env_file=None, redis_url="redis+sentinel://s1:26379,s2:26380/photos/2"))
    pool = client.connection_pool
    assert pool.service_name == "photos"
    assert [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in pool.sentinel_manager.sentinels
    ] == [("s1", 26379), ("s2", 26380)]
    assert pool.connection_kwargs["db"] == 2
