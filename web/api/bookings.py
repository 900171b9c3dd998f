"""Bookings: riders book and cancel, drivers act on their offers, admins list."""

from __future__ import annotations

import re

from flask import request, url_for

from dispatch import bookings as service
from dispatch.matching.log import entries_for
from dispatch.ratings import party_payloads
from dispatch.regions import region_for
from dispatch.states import DRIVER_ACTIONS, Role
from smartroute.infra.metrics import BOOKINGS_CREATED
from web.api import api, parse_body, parse_query
from web.api.quotes import pricing
from web.auth import actor, current_identity, requires
from web.errors import ApiError
from web.limits import limited
from web.runtime import (
    db,
    enqueue_dispatch,
    enqueue_follow_up,
    enqueue_publish,
    read_db,
    runtime,
    utcnow,
)
from web.schemas import BookingQuery, NewBooking, encode_page_cursor

# Printable ASCII without spaces, as most payment APIs accept for their idempotency keys.
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            400,
            "invalid_header",
            "Idempotency-Key must be 1 to 255 printable characters without spaces",
            "Idempotency-Key",
        )
    return key


@api.post("/bookings")
@requires(Role.RIDER)
def create_booking():
    runtime().limits.enforce("booking", actor().id)
    body = parse_body(NewBooking)
    key = _idempotency_key()
    settings = runtime().settings
    session = db()
    booking, created = service.create_booking(
        session,
        actor().id,
        body.to_request(),
        now=utcnow(),
        deadline_s=settings.dispatch_deadline_s,
        first_retry_s=settings.retry_interval_s,
        idempotency_key=key,
        region=region_for(body.pickup.lat, body.pickup.lng, settings.regions),
        pricing=pricing(),
    )
    if created:
        enqueue_publish()
        enqueue_dispatch(booking)
    session.commit()
    if created:
        BOOKINGS_CREATED.labels(booking.region).inc()
    location = url_for("api.get_booking", booking_id=booking.id)
    return service.booking_payload(booking), 202, {"Location": location}


@api.get("/bookings/<id:booking_id>")
@requires()
def get_booking(booking_id: int):
    session = db()
    booking = service.get_booking_for(session, booking_id, actor())
    # Its rider and driver also see their own rating of it, and the rider the driver's average.
    return party_payloads(session, [booking], actor())[0]


@api.get("/bookings")
@requires(Role.ADMIN)
def list_bookings():
    query = parse_query(BookingQuery)
    after, before_id = query.position()
    page = service.search_bookings(
        read_db(),
        service.BookingFilter(
            status=query.status,
            rider_id=query.rider_id,
            driver_id=query.driver_id,
            region=query.region,
            date=query.date,
            date_from=query.date_from,
            date_to=query.date_to,
        ),
        limit=query.limit,
        after=after,
        before_id=before_id,
    )
    next_cursor = encode_page_cursor(page.next) if page.next is not None else None
    return {
        "bookings": [service.booking_payload(b) for b in page.bookings],
        "next_cursor": next_cursor,
    }


@api.post("/bookings/<id:booking_id>/cancel")
@requires(Role.RIDER, Role.ADMIN)
def cancel_booking(booking_id: int):
    session = db()
    booking = service.cancel_booking(session, booking_id, actor(), now=utcnow())
    enqueue_publish()
    session.commit()
    return service.booking_payload(booking)


@api.post("/bookings/<id:booking_id>/<any(" + ", ".join(DRIVER_ACTIONS) + "):action>")
@requires(Role.DRIVER)
@limited("driver action")
def driver_action(booking_id: int, action: str):
    session = db()
    booking = service.driver_action(
        session, booking_id, current_identity().user_id, action, now=utcnow()
    )
    enqueue_follow_up(booking)
    session.commit()
    return service.booking_payload(booking)


@api.get("/bookings/<id:booking_id>/dispatch-log")
@requires(Role.ADMIN)
def get_dispatch_log(booking_id: int):
    session = read_db()
    booking = service.get_booking_for(session, booking_id, actor())
    return {
        "booking_id": booking.id,
        "status": booking.status,
        "attempts": entries_for(session, booking.id),
    }
