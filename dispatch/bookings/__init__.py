"""Bookings: the service the API and the relay call to create, read and move them.

The work is split by role: ``creation`` (a new booking, once per idempotency key),
``queries`` (reading them), ``transitions`` (status changes under the row lock),
``events`` (the audit row and pushes each change writes) and ``payloads`` (what a booking
looks like to clients). This module names the calls a view makes, so a view imports one
service; the domain's own modules import from the module that defines each name.
"""

from dispatch.bookings.creation import BookingRequest, Point, create_booking
from dispatch.bookings.payloads import BookingSnapshot, booking_payload
from dispatch.bookings.queries import (
    BookingFilter,
    Keyset,
    Page,
    get_booking_for,
    history_for,
    list_bookings,
    search_bookings,
)
from dispatch.bookings.transitions import (
    NoShowTooEarly,
    RidePolicy,
    cancel_booking,
    driver_action,
    force_complete,
)

__all__ = [
    "BookingFilter",
    "BookingRequest",
    "BookingSnapshot",
    "Keyset",
    "Page",
    "NoShowTooEarly",
    "Point",
    "RidePolicy",
    "booking_payload",
    "cancel_booking",
    "create_booking",
    "driver_action",
    "force_complete",
    "get_booking_for",
    "history_for",
    "list_bookings",
    "search_bookings",
]
