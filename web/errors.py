"""One error body everywhere: ``{"error": {"code", "message", "field"?, ...}}``.

Domain errors map to statuses in one table; Werkzeug's HTTP errors (404, 405, 413)
come back as JSON too, and a 5xx is logged with its traceback and leaks nothing.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from dispatch import errors as domain
from dispatch.drivers import LocationRequired

log = logging.getLogger(__name__)

STATUS_BY_DOMAIN_ERROR: dict[type[domain.DispatchError], int] = {
    domain.NotFound: 404,
    domain.InvalidTransition: 409,
    domain.NotOfferedToYou: 409,
    domain.DriverBusy: 409,
    LocationRequired: 409,
    domain.IdempotencyConflict: 422,
}


class InvalidInput(Exception):
    """A request body or query string that failed validation."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


class ApiError(Exception):
    """An error raised at the edge (bad input, bad token), already knowing its status."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, *,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = (
            status, code, message, field, extra,
        )
        self.headers = headers or {}


def error_body(code: str, message: str, field: str | None = None, **extra) -> dict:
    """The ``{"error": …}`` body, for HTTP answers and the relay's acknowledgements alike."""
    body: dict = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return {"error": body}


def error_response(status: int, code: str, message: str, field: str | None = None, **extra):
    return jsonify(error_body(code, message, field, **extra)), status


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


def validation_error_response(exc: ValidationError):
    body, status = validation_error(exc)
    return jsonify(body), status


def validation_error(exc: ValidationError) -> tuple[dict, int]:
    """The error body naming the first bad field (all of them in ``details``), and its
    status: 400 for a body that is not an object at all, else 422."""
    details = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        field = _field_name(tuple(err["loc"]))
        details.append(
            {"field": field, "code": _PYDANTIC_CODES.get(err["type"], "invalid_field"),
             "message": err["msg"]}
        )
    first = details[0]
    status = 400 if first["code"] in ("malformed_json", "invalid_body") else 422
    return error_body(first["code"], first["message"], first["field"], details=details), status


def domain_error(exc: domain.DispatchError) -> tuple[dict, int]:
    """A domain error's body and status, from the one table above."""
    status = next((s for cls, s in STATUS_BY_DOMAIN_ERROR.items() if isinstance(exc, cls)), 400)
    return error_body(exc.code, exc.message, **exc.details), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = error_response(exc.status, exc.code, exc.message, exc.field, **exc.extra)
        if exc.status == 401:
            response[0].headers["WWW-Authenticate"] = 'Bearer realm="smartroute"'
        response[0].headers.update(exc.headers)
        return response

    @app.errorhandler(InvalidInput)
    def _invalid_input(exc: InvalidInput):
        return validation_error_response(exc.error)

    @app.errorhandler(domain.DispatchError)
    def _domain_error(exc: domain.DispatchError):
        body, status = domain_error(exc)
        return jsonify(body), status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response[0].headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_unavailable(exc: Exception):
        log.error("database unavailable: %s", exc.__class__.__name__)
        response = error_response(
            503, "database_unavailable", "the database is unavailable; try again shortly"
        )
        response[0].headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "something went wrong on our side")
