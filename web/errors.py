"""One error body everywhere: ``{"error": {"code", "message", "field"?, ...}}``.

One table (``ANSWERS``) says how each error is answered: a domain error's status, and the
database being unavailable. ``error_answer`` turns any exception into a body and a status
from it, for the API's responses and the relay's acknowledgements alike. Werkzeug's HTTP
errors (404, 405, 413) come back as JSON too, and a 5xx is logged with its traceback and
leaks nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from dispatch import errors as domain
from dispatch import quotes
from dispatch.drivers import LocationRequired
from dispatch.ratings import AlreadyRated, RatingWindowClosed, RideNotCompleted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """How an error is answered: a status, and the body's code, message and field (for a
    domain error, None keeps the error's own code and message)."""

    status: int
    code: str | None = None
    message: str | None = None
    field: str | None = None


DATABASE_UNAVAILABLE = Answer(
    503, "database_unavailable", "the database is unavailable; try again shortly"
)
INTERNAL_ERROR = Answer(500, "internal_error", "something went wrong on our side")

# Looked up along the error's class hierarchy: the most specific entry wins.
ANSWERS: dict[type[Exception], Answer] = {
    domain.NotFound: Answer(404),
    domain.InvalidTransition: Answer(409),
    domain.NotOfferedToYou: Answer(409),
    domain.DriverBusy: Answer(409),
    LocationRequired: Answer(409),
    RideNotCompleted: Answer(409),
    AlreadyRated: Answer(409),
    RatingWindowClosed: Answer(409),
    domain.IdempotencyConflict: Answer(422),
    quotes.QuoteExpired: Answer(409, field="quote_id"),
    quotes.QuoteUsed: Answer(409, field="quote_id"),
    quotes.QuoteNotFound: Answer(422, field="quote_id"),
    quotes.QuoteMismatch: Answer(422, field="quote_id"),
    domain.DispatchError: Answer(400),
    OperationalError: DATABASE_UNAVAILABLE,
    PoolTimeout: DATABASE_UNAVAILABLE,
}


class InvalidInput(Exception):
    """A request body or query string that failed validation."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


class ApiError(Exception):
    """An error raised at the edge (bad input, bad token), already knowing its status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = (
            status,
            code,
            message,
            field,
            extra,
        )
        self.headers = headers or {}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict:
    """The ``{"error": …}`` body, for HTTP answers and the relay's acknowledgements alike."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return {"error": body}


def error_response(
    status: int, code: str, message: str, field: str | None = None, **extra: Any
) -> tuple[Response, int]:
    return jsonify(error_body(code, message, field, **extra)), status


def answer_for(exc: Exception) -> Answer:
    """The table's entry for ``exc``: its own class's, else its nearest base's, else a 500."""
    return next((ANSWERS[cls] for cls in type(exc).__mro__ if cls in ANSWERS), INTERNAL_ERROR)


def error_answer(exc: Exception) -> tuple[dict, int]:
    """The error body answering ``exc``, and its status: an edge error's own, the first bad
    field of a validation error, else the table's (``ANSWERS``)."""
    if isinstance(exc, ApiError):
        return error_body(exc.code, exc.message, exc.field, **exc.extra), exc.status
    if isinstance(exc, InvalidInput):
        return validation_error(exc.error)
    if isinstance(exc, ValidationError):
        return validation_error(exc)
    answer = answer_for(exc)
    if isinstance(exc, domain.DispatchError):
        return error_body(
            answer.code or exc.code, answer.message or exc.message, answer.field, **exc.details
        ), answer.status
    assert answer.code is not None and answer.message is not None
    return error_body(answer.code, answer.message, answer.field), answer.status


def _field_name(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p != "__root__"]
    return ".".join(parts) or None


_PYDANTIC_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "json_invalid": "malformed_json",
    "model_type": "invalid_body",
    "model_attributes_type": "invalid_body",
}


def validation_error(exc: ValidationError) -> tuple[dict, int]:
    """The error body naming the first bad field (all of them in ``details``), and its
    status: 400 for a body that is not an object at all, else 422."""
    found = [
        (
            _field_name(tuple(err["loc"])),
            _PYDANTIC_CODES.get(err["type"], "invalid_field"),
            err["msg"],
        )
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    details = [{"field": field, "code": code, "message": message} for field, code, message in found]
    field, code, message = found[0]
    status = 400 if code in ("malformed_json", "invalid_body") else 422
    return error_body(code, message, field, details=details), status


def register_error_handlers(app: Flask) -> None:
    def _answered(exc: Exception) -> tuple[Response, int]:
        body, status = error_answer(exc)
        return jsonify(body), status

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = _answered(exc)
        if exc.status == 401:
            response[0].headers["WWW-Authenticate"] = 'Bearer realm="smartroute"'
        response[0].headers.update(exc.headers)
        return response

    @app.errorhandler(InvalidInput)
    def _invalid_input(exc: InvalidInput):
        return _answered(exc)

    @app.errorhandler(domain.DispatchError)
    def _domain_error(exc: domain.DispatchError):
        return _answered(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response[0].headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_unavailable(exc: Exception):
        log.error("database unavailable: %s", exc.__class__.__name__)
        response = _answered(exc)
        response[0].headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return _answered(exc)
