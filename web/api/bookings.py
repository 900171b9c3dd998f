"""Bookings: riders book and cancel, drivers act on their offers and rides, admins list,
cancel and force-complete."""

from __future__ import annotations

import re

from flask import request, url_for

from dispatch import bookings as service
from dispatch.matching.log import entries_for
from dispatch.ratings import party_payloads
from dispatch.regions import region_for
from dispatch.states import DRIVER_ACTIONS, Role, Status
from smartroute.infra.metrics import BOOKINGS_CREATED, DRIVER_CANCELLATIONS, RIDE_ENDINGS
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
from web.schemas import (
    BookingQuery,
    CancelBooking,
    ForceComplete,
    NewBooking,
    encode_page_cursor,
)

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


def ride_policy() -> service.RidePolicy:
    settings = runtime().settings
    return service.RidePolicy(
        no_show_wait_s=settings.no_show_wait_s,
        rematch_deadline_s=settings.dispatch_deadline_s,
        cancel_grace_s=settings.cancel_grace_s,
    )


@api.post("/bookings/<id:booking_id>/cancel")
@requires(Role.RIDER, Role.DRIVER, Role.ADMIN)
def cancel_booking(booking_id: int):
    """A rider cancels before pickup (a reason optional, the body too); a driver before
    pickup, with a reason (the booking goes back to matching); an admin any open booking,
    with a reason. The answer is the booking, with any fee in ``cancellation_fee``."""
    who = actor()
    if who.role == Role.DRIVER:  # A driver's action, counted as the others are.
        runtime().limits.enforce("driver action", current_identity().user_id)
    body = parse_body(CancelBooking) if request.get_data(cache=True) else CancelBooking()
    if body.reason is None and who.role != Role.RIDER:
        raise ApiError(
            422, "missing_field", f"reason is required to cancel as {who.role}", "reason"
        )
    session = db()
    booking = service.cancel_booking(
        session, booking_id, who, now=utcnow(), reason=body.reason, policy=ride_policy()
    )
    if who.role == Role.DRIVER:
        enqueue_follow_up(booking)
    else:
        enqueue_publish()
    region = booking.region
    session.commit()
    if who.role == Role.DRIVER:
        DRIVER_CANCELLATIONS.labels(region).inc()
    else:
        RIDE_ENDINGS.labels(f"{who.role}_cancel").inc()
    return service.booking_payload(booking)


@api.post("/bookings/<id:booking_id>/force-complete")
@requires(Role.ADMIN)
def force_complete(booking_id: int):
    """An admin closes a ride under way for a driver who cannot (audited with the reason)."""
    body = parse_body(ForceComplete)
    session = db()
    booking = service.force_complete(session, booking_id, actor(), now=utcnow(), reason=body.reason)
    enqueue_publish()
    session.commit()
    RIDE_ENDINGS.labels("force_complete").inc()
    return service.booking_payload(booking)


@api.post("/bookings/<id:booking_id>/no-show")
@requires(Role.DRIVER)
@limited("driver action")
def no_show(booking_id: int):
    """The driver waited at the pickup (SMARTROUTE_NO_SHOW_WAIT_S) and the rider never
    came; earlier, 409 ``no_show_too_early`` says from when it is allowed."""
    return _driver_action(booking_id, "no_show")


@api.post("/bookings/<id:booking_id>/<any(" + ", ".join(DRIVER_ACTIONS) + "):action>")
@requires(Role.DRIVER)
@limited("driver action")
def driver_action(booking_id: int, action: str):
    return _driver_action(booking_id, action)


def _driver_action(booking_id: int, action: str):
    session = db()
    booking = service.driver_action(
        session,
        booking_id,
        current_identity().user_id,
        action,
        now=utcnow(),
        policy=ride_policy(),
    )
    enqueue_follow_up(booking)
    session.commit()
    if booking.status == Status.NO_SHOW:
        RIDE_ENDINGS.labels("no_show").inc()
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
