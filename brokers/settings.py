"""Settings read from the environment, shared by actors, the edge and ops."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from limits import parse_many
from limits.storage import SCHEMES as RATE_LIMIT_STORAGE_SCHEMES
from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

_DEV_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
_DEV_MONGODB_URL = "mongodb://127.0.0.1:27017/?directConnection=true"
# Where secret files are mounted (Docker and Kubernetes secrets: /run/secrets); see Settings.
SECRETS_DIR_VARIABLE = "EMPORIUM_SECRETS_DIR"


def _one_rate_limit(value: str) -> str:
    """A rate limit in the `limits` notation ("300/minute", "10 per 5 minutes"), exactly one."""
    if len(parse_many(value)) != 1:  # parse_many raises ValueError naming a string it cannot read
        raise ValueError(f"{value!r} holds several rate limits; give exactly one")
    return value


def _rate_limit_storage(value: str) -> str:
    scheme = urlsplit(value).scheme.removeprefix("async+")
    if f"async+{scheme}" not in RATE_LIMIT_STORAGE_SCHEMES:
        raise ValueError(f"{value!r} is not a storage the limits library knows (memory://, redis://...)")
    return value


def _web_origin(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or "*" in value:
        raise ValueError(f"{value!r} is not a web origin such as https://shop.example (no path, no *)")
    return value


RateLimit = Annotated[str, AfterValidator(_one_rate_limit)]


class SecretFileSettings(BaseSettings):
    """Settings from the environment and, with EMPORIUM_SECRETS_DIR set, from files named after them."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Secrets from files as well: with EMPORIUM_SECRETS_DIR=/run/secrets, a file named after a
        setting (rabbitmq_url, mongodb_url, ...) holds its value. The environment still wins."""
        secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE)
        if not secrets_dir:
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        if not Path(secrets_dir).is_dir():
            # pydantic-settings would only warn; a deployment whose secrets are not mounted must not start.
            raise SettingsError(f"{SECRETS_DIR_VARIABLE}={secrets_dir!r} is not a directory")
        return init_settings, env_settings, dotenv_settings, SecretsSettingsSource(settings_cls, secrets_dir)


class Settings(SecretFileSettings):
    emporium_env: Literal["development", "test", "production"] = "development"
    rabbitmq_url: str = _DEV_RABBITMQ_URL
    rabbitmq_management_url: str = "http://guest:guest@127.0.0.1:15672"
    mongodb_url: str = _DEV_MONGODB_URL
    # Every actor database is named "<prefix>_<actor>"; tests use their own prefix.
    emporium_db_prefix: str = Field("emporium", pattern=r"^[a-z][a-z0-9_]{0,30}$")

    # Unacked messages a consumer may hold. Twice the batch size lets the next batch gather while
    # one commits.
    emporium_prefetch: int = Field(64, ge=1, le=1000)
    # Group commit (actors.runtime.batches): at most this many messages share one transaction, and a
    # batch waits this long for more once its first message is in (0: take only what is waiting).
    emporium_batch_size: int = Field(32, ge=1, le=1000)
    emporium_batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    # How long the inbox remembers an applied message id: longer than any copy of a message can take
    # to come again (redeliveries, retries, the outbox sweeper's republishing); 7 days.
    emporium_inbox_retention_s: int = Field(7 * 24 * 3600, ge=3600)
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
    emporium_log_level: str = "INFO"
    # One INFO line per message an actor took (its type, ids and outcome): follow one order
    # through the logs by its correlation id. Off by default: on the hot path it is a line a message.
    emporium_log_messages: bool = False

    # --- edge limits and HTTP hardening (edge/limits.py, edge/hardening.py) ---
    # Requests per caller (a verified user, else a client address), in the `limits` notation.
    emporium_rate_limit: RateLimit = "300/minute"
    # Login and registration attempts per client address.
    emporium_login_rate_limit: RateLimit = "10/minute"
    # Failed logins for one email from one client address before that pair is refused (429)...
    emporium_login_failure_limit: RateLimit = "5/15 minutes"
    # ...and for one email from all addresses before every login for it is paused (never refused).
    emporium_account_failure_limit: RateLimit = "50/15 minutes"
    emporium_login_slowdown_s: float = Field(2.0, ge=0, le=30)
    # Where rate-limit counters live. memory:// counts per edge process; several edge replicas share
    # one budget through a shared store, e.g. redis://redis:6379 (needs the limits[async-redis] extra).
    emporium_rate_limit_storage: Annotated[str, AfterValidator(_rate_limit_storage)] = "memory://"
    # Orders are refused (503) while a queue on the way to a confirmation (orders, inventory,
    # payments) holds more than this many messages. The bound must be a backlog the saga clears well
    # inside the order deadline, so that what the edge accepts is confirmed in time: one actor here
    # handles some 40-50 messages/s, so 300 waits under 10 s, against a 120 s deadline. 10,000 (the
    # earlier bound) let every accepted order time out.
    emporium_saga_backlog_bound: int = Field(300, ge=1)
    # Request bodies larger than this are refused (413); the edge's JSON bodies are far smaller.
    emporium_max_body_bytes: int = Field(64 * 1024, ge=1)
    # Browser origins allowed to call the edge (CORS); none by default. From the environment as JSON:
    # EMPORIUM_CORS_ORIGINS='["https://shop.example"]'.
    emporium_cors_origins: tuple[Annotated[str, AfterValidator(_web_origin)], ...] = ()
    # Slow clients (edge/server.py): a request's head and body must arrive within this many seconds
    # of its first byte (or of the connection's start), else the connection is closed with a 408.
    emporium_request_read_timeout_s: float = Field(15.0, gt=0)
    # Open connections one client address may hold at once (0: no cap). Behind a reverse proxy
    # every connection comes from the proxy: set 0 there and let the proxy cap per client.
    emporium_max_connections_per_client: int = Field(128, ge=0)
    # Open connections the edge holds at once (SSE streams included); past it, new requests get 503.
    emporium_max_connections: int = Field(2048, ge=1)

    # --- /metrics (brokers/health.py) ---
    # The bearer token /metrics asks for (Prometheus: authorization.credentials_file). Unset, anyone
    # who reaches the port reads the metrics: refused in production.
    emporium_metrics_token: SecretStr | None = Field(None, min_length=32)
    # How long one rendering of /metrics is served again: scrapers cost one rendering per period.
    emporium_metrics_max_age_s: float = Field(2.0, ge=0)

    # --- least privilege (ops/production.py, ops/rabbitmq/README.md) ---
    # Declaring the topology at start needs RabbitMQ's "configure" permission, which also allows
    # deleting. In production the definitions are imported once by an operator and this is false:
    # actors and the edge then only check (passively) that their exchanges and queues are there.
    emporium_declare_topology: bool = True

    @model_validator(mode="after")
    def _refuse_dev_defaults_in_production(self) -> "Settings":
        if self.emporium_env != "production":
            return self
        # What every process uses; the database and the management API are checked where they are
        # used (``require_production_database``, the operators' tools), since the edge has neither.
        if "guest:guest@" in self.rabbitmq_url:
            raise ValueError("refusing to start in production: RABBITMQ_URL uses the guest account")
        if self.emporium_metrics_token is None:
            raise ValueError(
                "refusing to start in production: EMPORIUM_METRICS_TOKEN is not set (/metrics would be public)"
            )
        return self

    def require_production_database(self) -> None:
        """Refuse, in production, the development MongoDB (no credentials): for processes with actors."""
        if self.emporium_env == "production" and self.mongodb_url == _DEV_MONGODB_URL:
            raise ValueError("refusing to start in production: MONGODB_URL is the development default")

    def database_name(self, actor: str) -> str:
        return f"{self.emporium_db_prefix}_{actor}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
