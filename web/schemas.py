"""Request bodies and query strings, validated and bounded at the edge (pydantic).

Models are strict (a string is not a number) and forbid unknown fields, so a
typo in a client is a 422 naming the field, not a silently ignored value.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from dispatch.bookings.creation import BookingRequest, Point
from dispatch.states import BOOKING_STATUSES, RELAY_DRIVER_ACTIONS

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# How far back a pickup time may lie (clock skew) and how far ahead it may be booked.
PICKUP_PAST_TOLERANCE = dt.timedelta(minutes=5)
PICKUP_HORIZON = dt.timedelta(days=30)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


class Location(Strict):
    lat: Latitude
    lng: Longitude

    def to_point(self) -> Point:
        return Point(self.lat, self.lng)


class NewBooking(Strict):
    pickup: Location
    dropoff: Location
    pickup_at: AwareDatetime | None = None

    @field_validator("pickup_at")
    @classmethod
    def _within_horizon(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        now = dt.datetime.now(dt.UTC)
        if value < now - PICKUP_PAST_TOLERANCE:
            raise ValueError("pickup_at is in the past")
        if value > now + PICKUP_HORIZON:
            raise ValueError(f"pickup_at is more than {PICKUP_HORIZON.days} days ahead")
        return value.astimezone(dt.UTC)

    def to_request(self) -> BookingRequest:
        return BookingRequest(self.pickup.to_point(), self.dropoff.to_point(), self.pickup_at)


# Categories a name never needs: control (Cc: PostgreSQL cannot store NUL, and the rest mean a
# broken or hostile client), format (Cf: bidi overrides such as U+202E show a name reversed
# to an admin, zero-width characters make two names look alike), surrogates (Cs) and
# private use (Co: glyphs that mean nothing outside one font).
REFUSED_IN_NAMES = {"Cc": "control", "Cf": "format", "Cs": "surrogate", "Co": "private-use"}
MAX_NAME_LENGTH = 100


def _printable_name(value: str) -> str:
    """The name in NFC (one spelling for what looks the same), stripped, and bounded in
    length after normalisation; ValueError naming the first character refused."""
    value = unicodedata.normalize("NFC", value).strip()
    for char in value:
        kind = REFUSED_IN_NAMES.get(unicodedata.category(char))
        if kind is not None:
            raise ValueError(f"name must not contain {kind} characters (U+{ord(char):04X})")
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise ValueError(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    return value


# The raw input is bounded too, so normalisation never runs on an unbounded string; the
# schema clients read states the limit that counts.
Name = Annotated[
    str,
    StringConstraints(max_length=4 * MAX_NAME_LENGTH),
    AfterValidator(_printable_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_LENGTH,
            "description": "Counted after NFC normalisation; no control, "
            "format, surrogate or private-use characters.",
        }
    ),
]


class NewUser(Strict):
    name: Name
    role: Literal["rider", "driver", "admin"]


class DriverStatusChange(Strict):
    status: Literal["available", "offline"]


MAX_REASON_LENGTH = 500


def _printable_reason(value: str) -> str:
    """A reason in NFC, stripped, 1 to MAX_REASON_LENGTH characters, refusing the characters
    a name refuses (REFUSED_IN_NAMES) except line breaks."""
    value = unicodedata.normalize("NFC", value).strip()
    for char in value:
        kind = REFUSED_IN_NAMES.get(unicodedata.category(char))
        if kind is not None and char not in "\n":
            raise ValueError(f"reason must not contain {kind} characters (U+{ord(char):04X})")
    if not 1 <= len(value) <= MAX_REASON_LENGTH:
        raise ValueError(f"reason must be 1 to {MAX_REASON_LENGTH} characters")
    return value


# Why a ride was cancelled or closed: kept on the booking and in its audit trail, shown to
# admins, so bounded and printable like a name.
Reason = Annotated[
    str,
    StringConstraints(max_length=4 * MAX_REASON_LENGTH),
    AfterValidator(_printable_reason),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_REASON_LENGTH,
            "description": "Counted after NFC normalisation; no control characters but "
            "line feeds, no format, surrogate or private-use characters.",
        }
    ),
]


class CancelBooking(Strict):
    """``POST /v1/bookings/<id>/cancel``: why. A rider may leave it out (or send no body);
    a driver and an admin must say."""

    reason: Reason | None = None


class ForceComplete(Strict):
    """``POST /v1/bookings/<id>/force-complete`` (admin): why the ride is closed for its
    driver."""

    reason: Reason


class DriverActionMessage(Strict):
    """A driver's answer to an offer, or its ride's progress, sent over the relay: what
    ``POST /v1/bookings/<booking_id>/<action>`` says over HTTP (``no_show`` is
    ``/no-show``; ``cancel`` needs its ``reason``, as ``/cancel`` does from a driver)."""

    booking_id: Annotated[int, Field(ge=1, le=2**63 - 1)]
    action: Literal[RELAY_DRIVER_ACTIONS]  # type: ignore[valid-type]
    reason: Reason | None = Field(default=None, validate_default=True)

    @field_validator("reason")
    @classmethod
    def _reason_with_cancel(cls, value: str | None, info: ValidationInfo) -> str | None:
        action = info.data.get("action")
        if action == "cancel" and value is None:
            raise ValueError("reason is required to cancel")
        if action != "cancel" and value is not None:
            raise ValueError("reason is only sent with cancel")
        return value


class BookingQuery(BaseModel):
    """``GET /v1/bookings`` query string: strings in, typed values out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal[BOOKING_STATUSES] | None = None  # type: ignore[valid-type]
    date: dt.date | None = None
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=64)

    @field_validator("date", mode="before")
    @classmethod
    def _iso_date_only(cls, value: object) -> object:
        # Lax parsing would read "0" as 1970-01-01 (a Unix timestamp): only YYYY-MM-DD.
        if isinstance(value, str) and not ISO_DATE.fullmatch(value):
            raise ValueError("date must be YYYY-MM-DD")
        return value

    @field_validator("cursor")
    @classmethod
    def _cursor_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value


def encode_cursor(booking_id: int) -> str:
    return base64.urlsafe_b64encode(f"b:{booking_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The booking id a cursor points before; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition(":")
        value = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("cursor is not valid") from None
    if prefix != "b" or not 0 < value < 2**63:
        raise ValueError("cursor is not valid")
    return value
