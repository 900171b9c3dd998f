"""``GET /openapi.json``: the API described for clients and for fuzzing.

Request bodies come from the same pydantic models that validate them; responses are
described here, and the schemathesis run in the test suite checks every answer the
live server gives against this document, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint

from dispatch.states import BOOKING_STATUSES, DRIVER_ACTIONS, DRIVER_STATUSES, ROLES
from web.schemas import (
    CancelBooking,
    DriverStatusChange,
    ForceComplete,
    Location,
    NewBooking,
    NewQuote,
    NewRating,
    NewUser,
)

openapi = Blueprint("openapi", __name__)

NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
POINT = {
    "type": "object",
    "required": ["lat", "lng"],
    "properties": {"lat": {"type": "number"}, "lng": {"type": "number"}},
}
BOOKING = {
    "type": "object",
    "required": ["id", "status", "rider_id", "driver_id", "pickup", "dropoff", "version"],
    "properties": {
        "id": {"type": "integer"},
        "status": {"enum": list(BOOKING_STATUSES)},
        "rider_id": {"type": "integer"},
        "driver_id": {"type": ["integer", "null"]},
        "pickup": POINT,
        "dropoff": POINT,
        "pickup_at": {"type": "string", "format": "date-time"},
        "version": {"type": "integer", "minimum": 1},
        "region": {"type": "string"},
        "offer_expires_at": NULLABLE_TIME,
        "expires_at": NULLABLE_TIME,
        "assigned_at": NULLABLE_TIME,
        "created_at": NULLABLE_TIME,
        "updated_at": NULLABLE_TIME,
        "quote_id": {"type": ["integer", "null"]},
        "fare": {"oneOf": [{"$ref": "#/components/schemas/Fare"}, {"type": "null"}]},
        "accepted_at": NULLABLE_TIME,
        "arrived_at": NULLABLE_TIME,
        "started_at": NULLABLE_TIME,
        "cancelled_by": {"enum": ["rider", "admin", "system", None]},
        "cancel_reason": {"type": ["string", "null"]},
        "cancellation_fee": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "In the currency's minor units; null when it costs nothing.",
        },
        "overrun_at": NULLABLE_TIME,
    },
}
MINOR_UNITS = {"type": "integer", "minimum": 0, "description": "minor units (cents)"}
FARE = {
    "type": "object",
    "description": (
        "Amounts in minor units of currency; base, distance and time are before surge and "
        "the minimum. On a booking, final is false until completion, when amount becomes "
        "the final fare: the quote unless the measured fare exceeds it by more than 20 %, "
        "then the measured fare capped at 150 % of the quote."
    ),
    "required": ["amount", "currency", "base", "distance", "time", "surge_multiplier"],
    "properties": {
        "amount": MINOR_UNITS,
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "base": MINOR_UNITS,
        "distance": MINOR_UNITS,
        "time": MINOR_UNITS,
        "surge_multiplier": {"type": "number", "minimum": 1},
        "distance_m": {"type": "integer", "minimum": 0},
        "duration_s": {"type": "integer", "minimum": 0},
        "quoted_amount": MINOR_UNITS,
        "measured_amount": MINOR_UNITS,
        "final": {"type": "boolean"},
        "policy": {"type": "string"},
    },
}
QUOTE = {
    "type": "object",
    "required": ["quote_id", "fare", "pickup_eta_s", "expires_at"],
    "properties": {
        "quote_id": {"type": "integer"},
        "fare": {"$ref": "#/components/schemas/Fare"},
        "pickup_eta_s": {"type": ["integer", "null"], "minimum": 0},
        "expires_at": {"type": "string", "format": "date-time"},
        "region": {"type": "string"},
    },
}
SURGE = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "required": ["multiplier", "demand", "supply"],
        "properties": {
            "multiplier": {"type": "number", "minimum": 1},
            "demand": {"type": "integer", "minimum": 0},
            "supply": {"type": "integer", "minimum": 0},
            "updated_at": NULLABLE_TIME,
        },
    },
}
# Ride history and ratings.
RATING_AVERAGE = {
    "type": ["object", "null"],
    "required": ["average", "count"],
    "properties": {
        "average": {"type": "number", "minimum": 1, "maximum": 5},
        "count": {"type": "integer", "minimum": 1},
    },
}
RATING = {
    "type": "object",
    "required": ["booking_id", "rater_role", "ratee_id", "stars", "comment", "created_at"],
    "properties": {
        "booking_id": {"type": "integer"},
        "rater_role": {"enum": ["rider", "driver"]},
        "ratee_id": {"type": "integer"},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "comment": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
# A booking as one of its parties reads it: their own rating of it, and for the rider the
# driver's average.
PARTY_BOOKING = {
    **BOOKING,
    "properties": {
        **cast(dict[str, Any], BOOKING["properties"]),
        "driver_rating": RATING_AVERAGE,
        "my_rating": {"anyOf": [RATING, {"type": "null"}]},
    },
}
PAGE_CURSOR = {
    "name": "cursor",
    "in": "query",
    "description": "next_cursor of the page before, as given (opaque)",
    "schema": {"type": "string", "maxLength": 64},
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}
DRIVER = {
    "type": "object",
    "required": ["id", "status", "location"],
    "properties": {
        "id": {"type": "integer"},
        "status": {"enum": list(DRIVER_STATUSES)},
        "location": {"oneOf": [POINT, {"type": "null"}]},
        "last_seen_at": NULLABLE_TIME,
        "current_booking": {"oneOf": [BOOKING, {"type": "null"}]},
    },
}
# A driver in the admins' list: with the average of their riders' ratings (null: unrated).
LISTED_DRIVER = {
    **DRIVER,
    "required": [*cast(list[str], DRIVER["required"]), "rating"],
    "properties": {**cast(dict[str, Any], DRIVER["properties"]), "rating": RATING_AVERAGE},
}
TOKEN: dict[str, Any] = {
    "type": "object",
    "required": ["token", "token_id", "expires_at"],
    "properties": {
        "token": {"type": "string"},
        "token_id": {"type": "integer"},
        "expires_at": NULLABLE_TIME,
    },
}
USER_ID = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}
NULLABLE_SECONDS = {"type": ["number", "null"]}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
OVERVIEW = {
    "type": "object",
    "required": [
        "computed_at",
        "open_by_status",
        "today",
        "time_to_assign_last_hour",
        "queue_depths",
        "minutes",
    ],
    "properties": {
        "computed_at": {"type": "string", "format": "date-time"},
        "open_by_status": COUNTS,
        "today": {
            "type": "object",
            "required": ["total", "by_status"],
            "properties": {
                "total": {"type": "integer"},
                "by_status": COUNTS,
                "by_region": {
                    "type": "object",
                    "description": "each region's bookings since its own local midnight",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "since": {"type": "string", "format": "date-time"},
                            "total": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
        "surge": SURGE,
        "time_to_assign_last_hour": {
            "type": "object",
            "required": ["mean_s", "p95_s", "sample"],
            "properties": {
                "mean_s": NULLABLE_SECONDS,
                "p95_s": NULLABLE_SECONDS,
                "sample": {"type": "integer"},
            },
        },
        "queue_depths": COUNTS,
        "minutes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["minute", "created", "assigned", "completed", "mean_time_to_assign_s"],
                "properties": {
                    "minute": {"type": "string", "format": "date-time"},
                    "created": {"type": "integer"},
                    "assigned": {"type": "integer"},
                    "completed": {"type": "integer"},
                    "mean_time_to_assign_s": NULLABLE_SECONDS,
                },
            },
        },
    },
}
ID = {
    "name": "booking_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict) -> dict:
    return {"name": name, "in": "query", "schema": schema}


def _errors(*statuses: int) -> dict:
    return {
        str(s): _json(ERROR, "an error, naming the field where there is one")
        for s in (400, 401, 403, 404, 413, 422, 429, 503, *statuses)
    }


def _body(model) -> dict:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")
            }
        },
    }


def _operation(summary: str, ok: int, schema: dict, *, body=None, params=(), errors=()) -> dict:
    operation = {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": list(params),
        "responses": {str(ok): _json(schema, "success"), **_errors(*errors)},
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return operation


def document() -> dict:
    components = {}
    for model in (
        NewBooking,
        NewUser,
        Location,
        DriverStatusChange,
        NewQuote,
        NewRating,
        CancelBooking,
        ForceComplete,
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
    components["Fare"] = FARE
    booking_action = _operation("Act on a booking", 200, BOOKING, params=[ID], errors=(409,))
    return {
        "openapi": "3.1.0",
        "info": {"title": "SmartRoute", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/users": {
                "post": _operation(
                    "Create a user (admin)",
                    201,
                    {
                        "type": "object",
                        "required": ["id", "name", "role", "token", "token_id", "expires_at"],
                        "properties": {
                            "id": {"type": "integer"},
                            "name": {"type": "string"},
                            "role": {"enum": list(ROLES)},
                            "created_at": NULLABLE_TIME,
                            **TOKEN["properties"],
                        },
                    },
                    body=NewUser,
                )
            },
            "/v1/tokens": {
                "post": _operation(
                    "Refresh: revoke the presented token and issue its successor", 201, TOKEN
                )
                | {
                    "description": (
                        "The presented token is revoked and its successor issued in one "
                        "transaction. The successor carries over its family's first sign-in and "
                        "never outlives SMARTROUTE_TOKEN_MAX_LIFETIME_S (30 days) after it; past "
                        "that, or for a token already refreshed or revoked, the answer is 401 and "
                        "the user signs in again. The bootstrap admin token is not refreshed "
                        "(403): an admin issues itself a signed token with "
                        "POST /v1/users/{user_id}/tokens."
                    )
                }
            },
            "/v1/tokens/current": {
                "delete": {
                    "summary": "Sign out: revoke the token this request carries",
                    "security": [{"bearer": []}],
                    "parameters": [],
                    "responses": {"204": {"description": "revoked"}, **_errors()},
                }
            },
            "/v1/users/{user_id}/tokens": {
                "post": _operation(
                    "Issue a token for a user (admin)", 201, TOKEN, params=[USER_ID]
                ),
                "delete": _operation(
                    "Revoke every token of a user (admin)",
                    200,
                    {
                        "type": "object",
                        "required": ["user_id", "revoked"],
                        "properties": {
                            "user_id": {"type": "integer"},
                            "revoked": {"type": "integer", "minimum": 0},
                        },
                    },
                    params=[USER_ID],
                ),
            },
            "/v1/quotes": {
                "post": _operation(
                    "Price a trip before booking it (rider); the quote locks the price until "
                    "expires_at",
                    201,
                    QUOTE,
                    body=NewQuote,
                )
            },
            "/v1/bookings": {
                "post": _operation(
                    "Book a ride (rider); with quote_id, at the quoted price (409 quote_expired "
                    "once it has expired, 409 quote_used if it priced a booking already)",
                    202,
                    BOOKING,
                    body=NewBooking,
                    errors=(409,),
                ),
                "get": _operation(
                    "List bookings, newest first (admin)",
                    200,
                    {
                        "type": "object",
                        "required": ["bookings", "next_cursor"],
                        "properties": {
                            "bookings": {"type": "array", "items": BOOKING},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    },
                    params=[
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"enum": list(BOOKING_STATUSES)},
                        },
                        {
                            "name": "date",
                            "in": "query",
                            "schema": {"type": "string", "format": "date"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        },
                        PAGE_CURSOR,
                        _query("rider_id", {"type": "integer", "minimum": 1}),
                        _query("driver_id", {"type": "integer", "minimum": 1}),
                        _query("region", {"type": "string", "minLength": 1, "maxLength": 32}),
                        _query("date_from", {"type": "string", "format": "date"}),
                        _query("date_to", {"type": "string", "format": "date"}),
                    ],
                ),
            },
            "/v1/me/bookings": {
                "get": _operation(
                    "The caller's own rides, newest first (rider or driver)",
                    200,
                    {
                        "type": "object",
                        "required": ["bookings", "next_cursor"],
                        "properties": {
                            "bookings": {"type": "array", "items": PARTY_BOOKING},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    },
                    params=[
                        _query("status", {"enum": list(BOOKING_STATUSES)}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                        PAGE_CURSOR,
                    ],
                )
            },
            "/v1/bookings/{booking_id}": {
                "get": _operation(
                    "Read a booking (its parties also see ratings)",
                    200,
                    PARTY_BOOKING,
                    params=[ID],
                )
            },
            "/v1/bookings/{booking_id}/rating": {
                "post": _operation(
                    "Rate the other party of a completed ride (rider or driver)",
                    201,
                    RATING,
                    body=NewRating,
                    params=[ID],
                    errors=(409,),
                )
                | {
                    "description": (
                        "The rider rates the driver and the driver rates the rider, once each, "
                        "within SMARTROUTE_RATING_WINDOW_S (7 days) of completion. 409 with code "
                        "ride_not_completed, already_rated or rating_window_closed says why not."
                    )
                }
            },
            "/v1/bookings/{booking_id}/cancel": {
                "post": _operation(
                    "Cancel a booking: its rider before pickup (reason optional), its driver "
                    "before pickup (with a reason; back to matching), an admin any open one "
                    "(with a reason)",
                    200,
                    BOOKING,
                    body=CancelBooking,
                    params=[ID],
                    errors=(409,),
                )
                | {"requestBody": {**_body(CancelBooking), "required": False}}
            },
            "/v1/bookings/{booking_id}/force-complete": {
                "post": _operation(
                    "Close a ride under way for its driver (admin)",
                    200,
                    BOOKING,
                    body=ForceComplete,
                    params=[ID],
                    errors=(409,),
                )
            },
            "/v1/bookings/{booking_id}/no-show": {
                "post": _operation(
                    "The rider never came, after the wait at the pickup (driver); earlier, "
                    "409 no_show_too_early with allowed_at",
                    200,
                    BOOKING,
                    params=[ID],
                    errors=(409,),
                )
            },
            **{
                f"/v1/bookings/{{booking_id}}/{action}": {"post": booking_action}
                for action in DRIVER_ACTIONS
            },
            "/v1/bookings/{booking_id}/dispatch-log": {
                "get": _operation(
                    "Why a booking got its driver (admin)",
                    200,
                    {
                        "type": "object",
                        "required": ["booking_id", "status", "attempts"],
                        "properties": {
                            "booking_id": {"type": "integer"},
                            "status": {"enum": list(BOOKING_STATUSES)},
                            "attempts": {"type": "array"},
                        },
                    },
                    params=[ID],
                )
            },
            "/v1/drivers/me": {"get": _operation("The calling driver", 200, DRIVER)},
            "/v1/riders/me": {
                "get": _operation(
                    "The calling rider, with the average of drivers' ratings of them",
                    200,
                    {
                        "type": "object",
                        "required": ["id", "name", "role", "created_at", "rating"],
                        "properties": {
                            "id": {"type": "integer"},
                            "name": {"type": "string"},
                            "role": {"enum": ["rider"]},
                            "created_at": NULLABLE_TIME,
                            "rating": RATING_AVERAGE,
                        },
                    },
                )
            },
            "/v1/drivers/me/location": {
                "put": _operation("Location ping (driver)", 200, DRIVER, body=Location)
            },
            "/v1/drivers/me/status": {
                "put": _operation(
                    "Go available or offline (driver)",
                    200,
                    DRIVER,
                    body=DriverStatusChange,
                    errors=(409,),
                )
            },
            "/v1/admin/drivers": {
                "get": _operation(
                    "Drivers with their status, location and rating, for the map (admin)",
                    200,
                    {
                        "type": "object",
                        "required": ["drivers"],
                        "properties": {"drivers": {"type": "array", "items": LISTED_DRIVER}},
                    },
                    params=[
                        _query("status", {"enum": list(DRIVER_STATUSES)}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000}),
                    ],
                )
            },
            "/v1/admin/bookings/open": {
                "get": _operation(
                    "Bookings waiting for or holding a driver, newest first (admin)",
                    200,
                    {
                        "type": "object",
                        "required": ["bookings"],
                        "properties": {"bookings": {"type": "array", "items": BOOKING}},
                    },
                    params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
                )
            },
            "/v1/admin/overview": {
                "get": _operation(
                    "Open bookings by status, queue depths and the last minutes (admin)",
                    200,
                    OVERVIEW,
                    params=[_query("minutes", {"type": "integer", "minimum": 1, "maximum": 60})],
                )
            },
            "/v1/stats": {"get": _operation("Booking statistics (admin)", 200, {"type": "object"})},
        },
    }


@openapi.get("/openapi.json")
def get_openapi():
    return document()
