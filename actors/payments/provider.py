"""The payment provider as payments calls it: HTTP (httpx), quick retries (tenacity), a circuit breaker.

One call to ``charge``, ``refund`` or ``lookup`` makes a few quick attempts with backoff on trouble
(timeouts, connection errors, 5xx). Every attempt goes through a circuit breaker: after repeated
trouble it opens, and while it is open no request reaches the provider; the call fails at once with
``ProviderUnavailable``, a transient error, so the message waits in the runtime's delay queues. After
its reset time the breaker lets calls through again (half-open); one success closes it, one more
failure opens it again. Its state is shown as an Enum: opening and closing happen in calls, but
half-opening comes with time alone, so an open breaker is looked at again once its reset time is up.

Answers are never retried here: a capture, a decline (402), a lookup that finds nothing (404) or a
refusal (other 4xx) is final. A lookup only reads what the provider holds under a charge's key. The
idempotency keys (the order id for a charge, "refund-" + order id for a refund) make every retry and
every re-run of a handler safe: the provider answers a repeated key with its first answer.

One client (one connection pool, one breaker) serves a payments actor's host: one per process.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Literal
from urllib.parse import quote

import httpx
from circuitbreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker, CircuitBreakerError
from prometheus_client import Counter, Enum
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from actors.payments.domain import Captured, ChargeRequest, Declined, RefundRequest
from actors.runtime.errors import RuleViolation, Transient
from brokers.settings import Settings

BREAKER_STATE = Enum(
    "emporium_payments_breaker_state",
    "The payment provider's circuit breaker (half_open: the next call is let through, as a trial)",
    ["provider"],
    states=[STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN],
)
PROVIDER_CALLS = Counter(
    "emporium_payments_provider_calls_total",
    "HTTP requests to the payment provider, by operation and answer (status code or 'unreachable')",
    ["operation", "answer"],
)


class PaymentSettings(BaseSettings):
    """How payments talks to its provider (environment: EMPORIUM_PAYMENT_<NAME>)."""

    model_config = SettingsConfigDict(env_prefix="emporium_payment_", extra="ignore", frozen=True)

    provider_url: str
    # Its short name: the `provider` label of the metrics (a URL may carry credentials, and is long).
    provider_name: str = Field("simulator", pattern=r"^[a-z][a-z0-9-]{0,31}$")
    # Per request; a slow answer counts as trouble.
    provider_timeout_s: float = Field(2.0, gt=0, le=30)
    # Requests within one handling of a message (the first one included).
    provider_attempts: int = Field(3, ge=1, le=10)
    # Consecutive troubled requests that open the breaker, and how long it then stays open. A
    # provider failing half its calls at random fails 5 in a row every ~60 calls, which opened the
    # breaker for nothing and cost a tenth of the orders; 20 in a row is one in a million by chance,
    # and a provider that is really down still reaches it within a second of traffic.
    breaker_failures: int = Field(20, ge=1, le=1_000)
    breaker_reset_s: float = Field(15.0, gt=0, le=3_600)

    @classmethod
    def of(cls, settings: Settings) -> PaymentSettings:
        return cls(provider_url=settings.emporium_payment_provider_url)


class ProviderUnavailable(Transient):
    """The provider cannot be reached, keeps failing, or the breaker is open. Not a decline: transient."""

    def __init__(self, detail: str, attempts: int) -> None:
        super().__init__(detail)
        self.attempts = attempts


class ProviderRefused(RuleViolation):
    """The provider refused a request (a 4xx other than a decline): retrying cannot change that."""


class _Trouble(Exception):
    """A failed request worth retrying, counted by the breaker: timeout, connection error, 5xx."""


class _CaptureAnswer(BaseModel):
    charge_id: str = Field(min_length=1, max_length=128)


class _DeclineAnswer(BaseModel):
    reason: str = "declined"


class _RefundAnswer(BaseModel):
    refund_id: str = Field(min_length=1, max_length=128)


class _LedgerAnswer(BaseModel):
    """What the provider holds under a key: a capture (refunded in part, in whole, or not), or a decline."""

    charge_id: str = Field(min_length=1, max_length=128)
    status: Literal["captured", "refunded", "partially_refunded", "declined"]


class ProviderClient:
    def __init__(self, settings: PaymentSettings) -> None:
        self.settings = settings
        self.breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            recovery_timeout=settings.breaker_reset_s,
            expected_exception=_Trouble,
            name=f"payment provider {settings.provider_name}",
        )
        self._request_through_breaker = self.breaker.decorate(self._request)
        self._http: httpx.AsyncClient | None = None
        self._breaker_state = BREAKER_STATE.labels(settings.provider_name)
        self._look_again: asyncio.TimerHandle | None = None
        self._show_breaker_state()

    async def charge(self, request: ChargeRequest) -> Captured | Declined:
        response, attempts = await self._send("charge", "POST", "/charges", asdict(request))
        if response.status_code == 201:
            return Captured(_read(_CaptureAnswer, response).charge_id, attempts)
        if response.status_code == 402:
            return Declined(_read(_DeclineAnswer, response).reason, attempts)
        raise _refused("charge", request.idempotency_key, response)

    async def refund(self, request: RefundRequest) -> str:
        """Refund a charge; the provider's refund id."""
        response, _ = await self._send("refund", "POST", "/refunds", asdict(request))
        if response.status_code == 201:
            return _read(_RefundAnswer, response).refund_id
        raise _refused("refund", request.idempotency_key, response)

    async def lookup(self, idempotency_key: str) -> Captured | None:
        """The capture held under a charge's key, refunded or not; None for no charge or a decline."""
        path = f"/charges/by-key/{quote(idempotency_key, safe='')}"
        response, attempts = await self._send("lookup", "GET", path)
        if response.status_code == 404:
            return None
        if response.status_code == 200:
            held = _read(_LedgerAnswer, response)
            return None if held.status == "declined" else Captured(held.charge_id, attempts)
        raise _refused("lookup", idempotency_key, response)

    async def close(self) -> None:
        if self._look_again is not None:
            self._look_again.cancel()
            self._look_again = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _send(
        self, operation: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, int]:
        """A request with quick retries on trouble: the answer and the number of requests it took."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.provider_attempts),
            wait=wait_exponential_jitter(multiplier=0.05, max=0.5, jitter=0.05),
            retry=retry_if_exception_type(_Trouble),
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    response = await self._attempt(operation, method, path, body)
        except CircuitBreakerError as exc:
            raise ProviderUnavailable(str(exc), attempts - 1) from exc
        except _Trouble as exc:
            raise ProviderUnavailable(f"{operation} failed {attempts} times, last: {exc}", attempts) from exc
        return response, attempts

    async def _attempt(
        self, operation: str, method: str, path: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        """One request through the breaker (refused at once while it is open); its state shown after."""
        try:
            return await self._request_through_breaker(operation, method, path, body)
        finally:
            self._show_breaker_state()

    def _show_breaker_state(self) -> None:
        state = self.breaker.state
        self._breaker_state.state(state)
        if self._look_again is not None:
            self._look_again.cancel()
            self._look_again = None
        if state == STATE_OPEN:
            # It half-opens once its reset time is up, called or not (open_remaining is rounded up
            # to whole seconds: this shows it at most a second late).
            loop = asyncio.get_running_loop()
            self._look_again = loop.call_later(self.breaker.open_remaining, self._show_breaker_state)

    async def _request(
        self, operation: str, method: str, path: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        try:
            response = await self._client().request(method, path, json=body)
        except httpx.TransportError as exc:  # timeouts, refused or dropped connections
            PROVIDER_CALLS.labels(operation, "unreachable").inc()
            raise _Trouble(f"{type(exc).__name__}: {exc}") from exc
        PROVIDER_CALLS.labels(operation, str(response.status_code)).inc()
        if response.status_code >= 500:
            raise _Trouble(f"HTTP {response.status_code}: {response.text[:200]}")
        return response

    def _client(self) -> httpx.AsyncClient:
        # Made on first use, inside the event loop that uses it.
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.settings.provider_url, timeout=self.settings.provider_timeout_s
            )
        return self._http


def _read(answer: type[BaseModel], response: httpx.Response) -> Any:
    try:
        return answer.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProviderRefused(
            f"the provider's HTTP {response.status_code} answer is malformed: {exc}"
        ) from exc


def _refused(operation: str, key: str, response: httpx.Response) -> ProviderRefused:
    return ProviderRefused(
        f"the provider refused {operation} {key}: HTTP {response.status_code} {response.text[:300]}"
    )


# One client (and so one breaker) per provider configuration in the process, shared by every handling.
_clients: dict[PaymentSettings, ProviderClient] = {}


def client_for(settings: Settings) -> ProviderClient:
    """The process's client of the provider these settings name."""
    wanted = PaymentSettings.of(settings)
    if wanted not in _clients:
        _clients[wanted] = ProviderClient(wanted)
    return _clients[wanted]
