"""Settings read from the environment, shared by actors, the edge and ops."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_ADMIN_TOKEN = "dev-admin"
_DEV_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    emporium_env: Literal["development", "test", "production"] = "development"
    rabbitmq_url: str = _DEV_RABBITMQ_URL
    rabbitmq_management_url: str = "http://guest:guest@127.0.0.1:15672"
    mongodb_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    # Every actor database is named "<prefix>_<actor>"; tests use their own prefix.
    emporium_db_prefix: str = Field("emporium", pattern=r"^[a-z][a-z0-9_]{0,30}$")

    # Unacked messages a consumer may hold: the concurrency of one actor process.
    emporium_prefetch: int = Field(32, ge=1, le=1000)
    # Delays of the retry tiers; a message is dead-lettered after the last one.
    # Each delay has its own queue ("<actor>.delay.<ms>ms"), so changing them adds queues
    # instead of silently changing the arguments of existing ones.
    emporium_retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000)
    # Redeliveries (consumer crashes) before a quorum queue dead-letters a message on its own.
    emporium_delivery_limit: int = Field(10, ge=1)
    emporium_query_timeout_s: float = Field(5.0, gt=0)
    # Unsent outbox entries older than this are republished by the sweeper.
    emporium_outbox_sweep_s: float = Field(5.0, gt=0)
    # An order not confirmed this long after it was placed is cancelled (reason "timeout").
    emporium_order_deadline_ms: int = Field(120_000, ge=100)
    # The payment provider (ops/payment_provider.py simulates one for development and tests).
    emporium_payment_provider_url: str = "http://127.0.0.1:8090"
    # The carrier simulation moves a shipment on (scheduled -> dispatched -> delivered) after this.
    emporium_carrier_step_ms: int = Field(3_000, ge=100)
    # Notifications go to the log/store channel unless an SMTP server is configured.
    emporium_smtp_url: str | None = None
    emporium_dev_admin_token: str = DEV_ADMIN_TOKEN
    emporium_log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_dev_defaults_in_production(self) -> "Settings":
        if self.emporium_env != "production":
            return self
        problems = []
        if self.emporium_dev_admin_token == DEV_ADMIN_TOKEN:
            problems.append("EMPORIUM_DEV_ADMIN_TOKEN is the development default")
        if "guest:guest@" in self.rabbitmq_url:
            problems.append("RABBITMQ_URL uses the guest account")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def database_name(self, actor: str) -> str:
        return f"{self.emporium_db_prefix}_{actor}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
