"""The JSON API under /v1: views validate, call one dispatch service, serialise."""

from __future__ import annotations

from typing import TypeVar

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError
from werkzeug.routing import IntegerConverter

from web.errors import InvalidInput

api = Blueprint("api", __name__, url_prefix="/v1")

M = TypeVar("M", bound=BaseModel)


class IdConverter(IntegerConverter):
    """A positive id that fits in a BIGINT, so a huge number is a 404 rather than a 500."""

    def __init__(self, url_map, *args, **kwargs):
        super().__init__(url_map, min=1, max=2**63 - 1)


def parse_body(model: type[M]) -> M:
    """The request body validated as ``model``; a 4xx naming the field otherwise."""
    try:
        return model.model_validate_json(request.get_data(cache=True) or b"")
    except ValidationError as exc:
        raise InvalidInput(exc) from None


def parse_query(model: type[M]) -> M:
    """The query string validated as ``model``; a 4xx naming the parameter otherwise."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidInput(exc) from None


# Imported for their routes.
from web.api import (  # noqa: E402, F401
    admin,
    bookings,
    drivers,
    history,
    quotes,
    ratings,
    stats,
    tokens,
    users,
)
