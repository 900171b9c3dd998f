"""What a booking looks like outside the transaction that changed it.

``BookingSnapshot`` is what the booking writes hand back: the row as the statement left
it, whether it came from the ORM or from a Core ``RETURNING``, so callers get one type.
``booking_payload`` is the dict riders, drivers and admins see, and also what a push
carries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any, Protocol

from sqlalchemy import Row

from dispatch.models import Booking


class BookingFields(Protocol):
    """The columns a payload is built from: a loaded ``Booking`` or a ``BookingSnapshot``."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def driver_id(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def pickup_lat(self) -> float: ...
    @property
    def pickup_lng(self) -> float: ...
    @property
    def dropoff_lat(self) -> float: ...
    @property
    def dropoff_lng(self) -> float: ...
    @property
    def date(self) -> dt.date: ...
    @property
    def time(self) -> dt.time: ...
    @property
    def version(self) -> int: ...
    @property
    def region(self) -> str: ...
    @property
    def offer_expires_at(self) -> dt.datetime | None: ...
    @property
    def expires_at(self) -> dt.datetime: ...
    @property
    def assigned_at(self) -> dt.datetime | None: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def updated_at(self) -> dt.datetime: ...
    @property
    def quote_id(self) -> int | None: ...
    @property
    def fare(self) -> dict[str, Any] | None: ...
    @property
    def accepted_at(self) -> dt.datetime | None: ...
    @property
    def arrived_at(self) -> dt.datetime | None: ...
    @property
    def started_at(self) -> dt.datetime | None: ...
    @property
    def cancelled_by(self) -> str | None: ...
    @property
    def cancel_reason(self) -> str | None: ...
    @property
    def cancellation_fee(self) -> int | None: ...
    @property
    def overrun_at(self) -> dt.datetime | None: ...


@dataclass(frozen=True)
class BookingSnapshot:
    """A booking's columns as one write left them; read-only, detached from any session."""

    id: int
    user_id: int
    driver_id: int | None
    pickup_lat: float
    pickup_lng: float
    dropoff_lat: float
    dropoff_lng: float
    date: dt.date
    time: dt.time
    status: str
    version: int
    region: str
    offer_expires_at: dt.datetime | None
    next_attempt_at: dt.datetime
    expires_at: dt.datetime
    match_attempts: int
    assigned_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    quote_id: int | None
    fare_currency: str | None
    quoted_fare: int | None
    final_fare: int | None
    fare: dict[str, Any] | None
    accepted_at: dt.datetime | None
    arrived_at: dt.datetime | None
    started_at: dt.datetime | None
    cancelled_by: str | None
    cancel_reason: str | None
    cancellation_fee: int | None
    overrun_at: dt.datetime | None


_COLUMNS = tuple(f.name for f in fields(BookingSnapshot))


def snapshot(booking: Booking | Row[Any]) -> BookingSnapshot:
    """The snapshot of a loaded ``Booking`` or of a row returned with its columns (the
    model's attribute names are its column names)."""
    if isinstance(booking, Row):
        values = booking._mapping
        return BookingSnapshot(**{name: values[name] for name in _COLUMNS})
    return BookingSnapshot(**{name: getattr(booking, name) for name in _COLUMNS})


def pickup_time(booking: BookingFields) -> dt.datetime:
    """The requested pickup as an aware UTC datetime."""
    return dt.datetime.combine(booking.date, booking.time, tzinfo=dt.UTC)


def booking_payload(booking: BookingFields) -> dict[str, Any]:
    """The booking as riders, drivers and admins see it (also the push payload)."""
    return {
        "id": booking.id,
        "status": booking.status,
        "rider_id": booking.user_id,
        "driver_id": booking.driver_id,
        "pickup": {"lat": booking.pickup_lat, "lng": booking.pickup_lng},
        "dropoff": {"lat": booking.dropoff_lat, "lng": booking.dropoff_lng},
        "pickup_at": pickup_time(booking).isoformat(),
        "version": booking.version,
        "region": booking.region,
        "offer_expires_at": _iso(booking.offer_expires_at),
        "expires_at": _iso(booking.expires_at),
        "assigned_at": _iso(booking.assigned_at),
        "created_at": _iso(booking.created_at),
        "updated_at": _iso(booking.updated_at),
        "quote_id": booking.quote_id,
        "fare": booking.fare,
        "accepted_at": _iso(booking.accepted_at),
        "arrived_at": _iso(booking.arrived_at),
        "started_at": _iso(booking.started_at),
        # "rider", "admin" or "system" (a ride never started); null unless cancelled.
        "cancelled_by": booking.cancelled_by,
        "cancel_reason": booking.cancel_reason,
        # In the currency's minor units; null when the cancellation or no-show costs nothing.
        "cancellation_fee": booking.cancellation_fee,
        # When beat flagged the ride as running past its maximum; null if it never did.
        "overrun_at": _iso(booking.overrun_at),
    }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
