"""Every knob of repairbot, read from the environment and `.env` (pydantic-settings).

Lists are comma-separated (`TELEGRAM_ADMIN_IDS=1001,1002`). Secrets are SecretStr so they never
show up in a repr or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

CommaInts = Annotated[list[int], NoDecode]
CommaStrs = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


class Settings(BaseSettings):
    """Settings shared by every process; names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Redis and stream names (DESIGN.md).
    redis_url: str = "redis://127.0.0.1:6379/0"
    tasks_stream: str = "photo_repair_tasks"
    results_stream: str = "photo_repair_results"
    events_stream: str = "photo_repair_events"
    dead_stream: str = "photo_repair_dead"
    workers_group: str = "repair_workers"
    notifiers_group: str = "notifiers"
    events_maxlen: int = 5000
    status_refresh_s: float = 3.0  # how often waiting photos' place in line and elapsed time are refreshed
    redis_socket_timeout_s: float = 10.0
    redis_max_connections: int = 64
    redis_pool_timeout_s: float = 20.0

    # ComfyUI instances and workflows.
    comfyui_url: CommaStrs = Field(default_factory=lambda: ["http://127.0.0.1:8188"])
    workflows_dir: Path = REPO_ROOT / "workflows"
    default_mode: str = "person"

    # Blobs.
    blob_store: Literal["redis", "fs"] = "redis"
    blob_dir: Path = Path("var/blobs")
    blob_ttl_s: int = 24 * 3600

    # Image limits.
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_image_pixels_ceiling: int = 150_000_000  # over max_image_pixels: shrunk to it up to here, refused past

    # Worker.
    executor: Literal["comfyui", "noop"] = "comfyui"
    worker_concurrency: int = 1
    prefetch: int = 2
    read_batch: int = 16
    block_ms: int = 2000
    max_deliveries: int = 3
    min_idle_ms: int = 60_000
    consumer_lease_s: float = 10.0
    task_timeout_s: float = 600.0
    prompt_queue_timeout_s: float = 1800.0
    transient_retries: int = 5
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0
    shutdown_grace_s: float = 30.0
    comfyui_quiet_poll_s: float = 5.0
    breaker_probe_max_s: float = 15.0

    # Notifier.
    send_retries: int = 5
    max_interrupted_deliveries: int = 20  # rounds cut short by a notifier crash; failed rounds count in max_deliveries
    delivered_ttl_s: int = 7 * 24 * 3600

    # Intake limits (shared by every bot).
    user_max_active: int = 3
    user_backlog: int = 10  # photos beyond user_max_active kept to start by themselves, first in first out
    user_max_per_hour: int = 30
    queue_cap: int = 500
    idempotency_ttl_s: int = 48 * 3600  # how long a chat event is remembered, so a redelivery is not queued again

    # Telegram.
    telegram_bot_token: SecretStr | None = None
    telegram_admin_ids: CommaInts = []
    telegram_api_base: str = "https://api.telegram.org/bot"
    telegram_file_base: str = "https://api.telegram.org/file/bot"
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0"
    telegram_webhook_port: int = 8443

    # Discord.
    discord_bot_token: SecretStr | None = None
    discord_admin_ids: CommaInts = []
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None
    discord_guild_ids: CommaInts = []

    log_level: str = "INFO"

    # Operations (metrics, health, logs, alerts, retention).
    metrics_port: int | None = None
    log_format: Literal["text", "json"] = "text"
    ops_interval_s: float = 5.0
    alert_wait_s: int = 900
    alert_repeat_s: int = 1800
    alert_lang: str = "en"  # the language of the operations alerts pushed to the admins' chats (en, zh)
    dead_max_len: int = 10_000
    dead_max_age_s: int = 14 * 24 * 3600
    blob_sweep_every_s: int = 600

    # `repairbot up` embedded Redis.
    var_dir: Path = Path("var")

    # `repairbot comfyui install` and the ComfyUI that `repairbot up` runs when COMFYUI_URL is unset.
    comfyui_dir: Path = Path("var/comfyui")
    comfyui_auto_install: bool = False
    comfyui_device: Literal["auto", "cpu", "cuda"] = "auto"
    comfyui_torch: str = "torch"
    comfyui_torch_index_url: str = "auto"
    comfyui_python: Path | None = None
    comfyui_source: str | None = None
    comfyui_ref: str | None = None
    comfyui_node_source: str | None = None
    comfyui_node_ref: str | None = None
    comfyui_weights: Path | None = None
    comfyui_port: int = 8188
    hf_endpoint: str | None = None

    _split = field_validator(
        "comfyui_url", "telegram_admin_ids", "discord_admin_ids", "discord_guild_ids", mode="before"
    )(_split_commas)

    @model_validator(mode="after")
    def _block_shorter_than_socket_timeout(self) -> Settings:
        """A blocking read that outlives the socket timeout would look like a dead Redis."""
        if self.block_ms / 1000 >= self.redis_socket_timeout_s:
            raise ValueError("BLOCK_MS must be shorter than REDIS_SOCKET_TIMEOUT_S (in ms)")
        return self

    @model_validator(mode="after")
    def _min_idle_well_above_the_refresh(self) -> Settings:
        """An entry in hand is refreshed every `ownership_refresh_s`; a refresh may come a blocking
        read late. MIN_IDLE_MS at or near that lets a healthy consumer's long task be taken over."""
        if self.consumer_lease_s < 1:
            raise ValueError("CONSUMER_LEASE_S must be at least 1 second")
        refresh_ms = self.ownership_refresh_s * 1000
        needed = 2 * (self.block_ms + refresh_ms)
        if self.min_idle_ms < needed:
            raise ValueError(
                f"MIN_IDLE_MS={self.min_idle_ms} is too close to BLOCK_MS={self.block_ms} plus the ownership "
                f"refresh interval ({refresh_ms:.0f} ms): a healthy worker's long task could be taken over. "
                f"Use MIN_IDLE_MS of at least {needed:.0f} (twice BLOCK_MS plus the refresh interval)."
            )
        return self

    @property
    def ownership_refresh_s(self) -> float:
        """Heartbeat period of every consumer: lease renewal, idle reset of entries in hand, liveness check."""
        return min(self.consumer_lease_s / 3, self.min_idle_ms / 3000)

    @property
    def comfyui_urls(self) -> list[str]:
        return [url.rstrip("/") for url in self.comfyui_url]

    @property
    def slots_per_instance(self) -> int:
        """Prompts one ComfyUI instance holds at once: the running ones plus `prefetch` waiting."""
        return max(1, self.worker_concurrency) + max(0, self.prefetch)

    def secrets(self) -> list[str]:
        """The literal secrets a log line must never contain: tokens, webhook secret, Redis password."""
        found = [
            secret.get_secret_value()
            for secret in (self.telegram_bot_token, self.discord_bot_token, self.telegram_webhook_secret)
            if secret is not None
        ]
        for url in [self.redis_url, *self.comfyui_url]:
            try:
                password = urlsplit(url).password
            except ValueError:
                continue
            if password:
                found.append(password)
        return [s for s in found if len(s) >= 4]
