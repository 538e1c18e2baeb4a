"""Every error the edge answers is an RFC 9457 problem (``application/problem+json``).

Handlers here turn each kind of failure into a problem with a useful detail: HTTP errors, invalid
requests (listing every bad field), problems reported by an actor, query timeouts, RabbitMQ being
unreachable, and, last, anything unexpected (a generic 500, logged, with no stack trace sent).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from brokers.rpc import BrokerUnavailable, QueryFailed, QueryTimeout
from edge.headers import API_CSP, CSP, SECURITY_HEADERS
from edge.observe import REQUEST_ID_HEADER, request_id_of

log = structlog.get_logger()

PROBLEM_JSON = "application/problem+json"

# Problem types a client can act on differently; anything else is "about:blank" + the status phrase.
INVALID_REQUEST = "urn:emporium:problem:invalid-request"
BROKER_UNAVAILABLE = "urn:emporium:problem:broker-unavailable"
QUERY_TIMEOUT = "urn:emporium:problem:query-timeout"
IDEMPOTENCY_KEY_REUSED = "urn:emporium:problem:idempotency-key-reused"
ORDER_NOT_CANCELLABLE = "urn:emporium:problem:order-not-cancellable"
EMAIL_TAKEN = "urn:emporium:problem:email-taken"
DEACTIVATION_REFUSED = "urn:emporium:problem:deactivation-refused"

# How long a client should wait before retrying when RabbitMQ cannot take a request.
RETRY_AFTER_S = 5
_MAX_LISTED_ERRORS = 20
_SCHEMAS = "#/components/schemas/"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    location: str
    message: str


class ProblemDetails(BaseModel):
    """An RFC 9457 problem; ``errors`` lists the bad fields of an invalid request."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[FieldError] | None = None


class Refused(HTTPException):
    """A request refused for a reason a client can act on, named by a problem type."""

    def __init__(
        self, status: int, detail: str, *, type_: str, title: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.type_ = type_
        self.title = title


class OrderNotFound(HTTPException):
    """404 for an order that does not exist or is another customer's: the two are answered alike."""

    def __init__(self, order_id: str) -> None:
        super().__init__(404, f"there is no order {order_id} of yours")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemResponse:
    problem = ProblemDetails(
        type=type_,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request_id_of(request),
        errors=errors,
    )
    return ProblemResponse(problem.model_dump(exclude_none=True), status_code=status, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI documentation of the problems a route can answer (see ``document_problems``)."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": f"{_SCHEMAS}{ProblemDetails.__name__}"}}},
        }
        for status in statuses
    }


def document_problems(app: FastAPI) -> None:
    """Put the problem schemas into the OpenAPI document.

    FastAPI would register them if the routes' error responses named a model, but it would then
    also document them as application/json, which they never are.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        first_time = app.openapi_schema is None
        document = generate()
        if first_time:
            schema = ProblemDetails.model_json_schema(ref_template=_SCHEMAS + "{model}")
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update({ProblemDetails.__name__: schema, **schema.pop("$defs", {})})
            _document_body_limit(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _document_body_limit(document: dict[str, Any]) -> None:
    """Every operation that takes a body may answer 413: the size limit runs before any route."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation.setdefault("responses", {}).update(problem_responses(413))


def field_errors(exc: RequestValidationError) -> list[FieldError]:
    return [
        FieldError(location=".".join(str(part) for part in error["loc"]), message=error["msg"])
        for error in exc.errors()[:_MAX_LISTED_ERRORS]
    ]


def validation_detail(errors: list[FieldError]) -> str:
    listed = "; ".join(f"{error.location}: {error.message}" for error in errors)
    return f"{len(errors)} invalid field{'s' if len(errors) != 1 else ''}: {listed}"


# FastAPI answers 422 to a body that is not JSON but 400 to JSON Python's parser cannot read: not
# UTF-8, an integer of more digits than Python converts, nesting deeper than its recursion limit. To
# a client all are an invalid body, answered alike (422) with what is wrong.
def _unreadable_json(exc: HTTPException) -> RequestValidationError | None:
    cause = exc.__cause__
    if exc.status_code != 400 or not isinstance(cause, ValueError | RecursionError):
        return None
    if isinstance(cause, UnicodeDecodeError):
        message = "the body is not JSON encoded in UTF-8"
    elif isinstance(cause, RecursionError):
        message = "the body's JSON nests arrays or objects too deeply"
    elif "digits" in str(cause):
        message = f"the body holds an integer of more than {sys.get_int_max_str_digits()} digits"
    else:
        message = "the body's JSON cannot be read"
    return RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": message}])


async def _http_error(request: Request, exc: HTTPException) -> ProblemResponse:
    if (invalid := _unreadable_json(exc)) is not None:
        return await _invalid_request(request, invalid)
    phrase = HTTPStatus(exc.status_code).phrase
    # Starlette's own 404/405 carry only the phrase; say what was asked instead.
    detail = (
        exc.detail
        if exc.detail and exc.detail != phrase
        else f"{request.method} {request.url.path}: {phrase}"
    )
    if isinstance(exc, Refused):
        return problem_response(
            request, exc.status_code, str(detail), type_=exc.type_, title=exc.title, headers=exc.headers
        )
    return problem_response(request, exc.status_code, str(detail), headers=exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> ProblemResponse:
    errors = field_errors(exc)
    return problem_response(
        request,
        422,
        validation_detail(errors),
        type_=INVALID_REQUEST,
        title="The request is invalid",
        errors=errors,
    )


async def _actor_problem(request: Request, exc: QueryFailed) -> ProblemResponse:
    problem = exc.problem
    return problem_response(request, problem.status, problem.detail, title=problem.title)


async def _query_timeout(request: Request, exc: QueryTimeout) -> ProblemResponse:
    detail = f"{exc}: the actor that answers it is slow or not running; try again later"
    return problem_response(request, 504, detail, type_=QUERY_TIMEOUT, title="No answer in time")


async def _broker_unavailable(request: Request, exc: BrokerUnavailable) -> ProblemResponse:
    log.warning("edge.broker_unavailable", path=request.url.path, error=str(exc))
    return problem_response(
        request,
        503,
        str(exc),
        type_=BROKER_UNAVAILABLE,
        title="Messaging is unavailable",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.error("edge.unexpected_error", method=request.method, path=request.url.path, exc_info=exc)
    return problem_response(
        request,
        500,
        "the edge failed unexpectedly; the error is logged under this request id",
        # Answered outside every middleware (by Starlette's outermost one), so the request id and
        # the security headers are added here.
        headers={REQUEST_ID_HEADER: request_id_of(request), **SECURITY_HEADERS, CSP: API_CSP},
    )


def install_problem_handlers(app: FastAPI) -> None:
    document_problems(app)
    # Through FastAPI's decorator: Starlette's add_exception_handler types every handler as taking
    # any Exception, though each is only called with the class it is registered for.
    app.exception_handler(HTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(QueryFailed)(_actor_problem)
    app.exception_handler(QueryTimeout)(_query_timeout)
    app.exception_handler(BrokerUnavailable)(_broker_unavailable)
    app.exception_handler(Exception)(_unexpected)
