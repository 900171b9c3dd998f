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
from dispatch.bookings.queries import Keyset
from dispatch.models import MAX_RATING_COMMENT_LENGTH
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


def _pickup_within_horizon(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    now = dt.datetime.now(dt.UTC)
    if value < now - PICKUP_PAST_TOLERANCE:
        raise ValueError("pickup_at is in the past")
    if value > now + PICKUP_HORIZON:
        raise ValueError(f"pickup_at is more than {PICKUP_HORIZON.days} days ahead")
    return value.astimezone(dt.UTC)


class NewBooking(Strict):
    pickup: Location
    dropoff: Location
    pickup_at: AwareDatetime | None = None
    # The rider's quote: its price is locked for the booking (dispatch/quotes.py).
    quote_id: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None

    @field_validator("pickup_at")
    @classmethod
    def _within_horizon(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _pickup_within_horizon(value)

    def to_request(self) -> BookingRequest:
        return BookingRequest(
            self.pickup.to_point(), self.dropoff.to_point(), self.pickup_at, self.quote_id
        )


class NewQuote(Strict):
    """``POST /v1/quotes``: the trip to price."""

    pickup: Location
    dropoff: Location
    pickup_at: AwareDatetime | None = None

    @field_validator("pickup_at")
    @classmethod
    def _within_horizon(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _pickup_within_horizon(value)


# Categories a name never needs: control (Cc: PostgreSQL cannot store NUL, and the rest mean a
# broken or hostile client), format (Cf: bidi overrides such as U+202E show a name reversed
# to an admin, zero-width characters make two names look alike), surrogates (Cs) and
# private use (Co: glyphs that mean nothing outside one font).
REFUSED_IN_NAMES = {"Cc": "control", "Cf": "format", "Cs": "surrogate", "Co": "private-use"}
MAX_NAME_LENGTH = 100


def _normalised(value: str, what: str, allowed: str = "") -> str:
    """``value`` in NFC (one spelling for what looks the same) and stripped; ValueError
    naming ``what`` and the first character of a refused category (REFUSED_IN_NAMES) that
    ``allowed`` does not let through. Names, reasons and comments all pass here."""
    value = unicodedata.normalize("NFC", value).strip()
    for char in value:
        kind = REFUSED_IN_NAMES.get(unicodedata.category(char))
        if kind is not None and char not in allowed:
            raise ValueError(f"{what} must not contain {kind} characters (U+{ord(char):04X})")
    return value


def _printable_name(value: str) -> str:
    """The name in NFC (one spelling for what looks the same), stripped, and bounded in
    length after normalisation; ValueError naming the first character refused."""
    value = _normalised(value, "name")
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
    value = _normalised(value, "reason", allowed="\n")
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

    # Ride history and ratings: the admin search's filters (pickup dates, inclusive).
    rider_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    driver_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    region: str | None = Field(default=None, min_length=1, max_length=32)
    date_from: dt.date | None = None
    date_to: dt.date | None = None

    @field_validator("date", "date_from", "date_to", mode="before")
    @classmethod
    def _iso_date_only(cls, value: object) -> object:
        # Lax parsing would read "0" as 1970-01-01 (a Unix timestamp): only YYYY-MM-DD.
        if isinstance(value, str) and not ISO_DATE.fullmatch(value):
            raise ValueError("date must be YYYY-MM-DD")
        return value

    @field_validator("date_to")
    @classmethod
    def _range_in_order(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        start = info.data.get("date_from")
        if value is not None and start is not None and value < start:
            raise ValueError("date_to is before date_from")
        return value

    @field_validator("cursor")
    @classmethod
    def _cursor_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            decode_page_cursor(value)
        return value

    def position(self) -> tuple[Keyset | None, int | None]:
        """Where the page starts: after a keyset, or (an older cursor) before a booking id."""
        if self.cursor is None:
            return None, None
        decoded = decode_page_cursor(self.cursor)
        return (decoded, None) if isinstance(decoded, Keyset) else (None, decoded)


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


# Ride history and ratings.

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
# Microseconds from the epoch to the last instant of year 9999, the datetime's range.
MAX_MICROS = (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC) - EPOCH) // MICROSECOND


def encode_page_cursor(keyset: Keyset) -> str:
    """An opaque cursor naming where a page ended: its last booking's creation (to the
    microsecond, PostgreSQL's precision) and id."""
    micros = (keyset.created_at - EPOCH) // MICROSECOND
    raw = f"k:{micros}:{keyset.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_cursor(cursor: str) -> Keyset | int:
    """The keyset a cursor points after, or for a cursor handed out when pages followed id
    alone, the booking id it points before; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("cursor is not valid") from None
    if raw.startswith("b:"):
        return decode_cursor(cursor)
    prefix, micros_text, id_text = (raw.split(":") + ["", ""])[:3]
    try:
        micros, booking_id = int(micros_text), int(id_text)
    except ValueError:
        raise ValueError("cursor is not valid") from None
    valid = raw == f"k:{micros}:{booking_id}" and prefix == "k"
    if not valid or not 0 <= micros <= MAX_MICROS or not 0 < booking_id < 2**63:
        raise ValueError("cursor is not valid")
    return Keyset(EPOCH + micros * MICROSECOND, booking_id)


class HistoryQuery(BaseModel):
    """``GET /v1/me/bookings`` query string: a rider's or driver's own rides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal[BOOKING_STATUSES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=64)

    @field_validator("cursor")
    @classmethod
    def _cursor_decodes(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(decode_page_cursor(value), Keyset):
            raise ValueError("cursor is not valid")
        return value

    def after(self) -> Keyset | None:
        if self.cursor is None:
            return None
        decoded = decode_page_cursor(self.cursor)
        assert isinstance(decoded, Keyset)
        return decoded


def _printable_comment(value: str) -> str | None:
    """The comment in NFC, stripped, bounded after normalisation; None when empty. It may
    hold line breaks, unlike a name."""
    value = _normalised(value.replace("\r\n", "\n"), "comment", allowed="\n")
    if len(value) > MAX_RATING_COMMENT_LENGTH:
        raise ValueError(f"comment must be at most {MAX_RATING_COMMENT_LENGTH} characters")
    return value or None


Comment = Annotated[
    str,
    StringConstraints(max_length=4 * MAX_RATING_COMMENT_LENGTH),
    AfterValidator(_printable_comment),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_RATING_COMMENT_LENGTH,
            "description": "Counted after NFC normalisation; line breaks allowed, no other "
            "control, format, surrogate or private-use characters. Empty means no comment.",
        }
    ),
]


class NewRating(Strict):
    """``POST /v1/bookings/<id>/rating``: stars from 1 to 5 and an optional comment."""

    stars: Annotated[int, Field(ge=1, le=5)]
    comment: Comment | None = None
