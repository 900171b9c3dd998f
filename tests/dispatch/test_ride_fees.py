"""What a cancel, a no-show or an admin's force-complete costs, on the terms the booking
was priced on, against PostgreSQL's clock."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text, update

from dispatch.actors import Actor
from dispatch.bookings.transitions import (
    RidePolicy,
    cancel_booking,
    driver_action,
    force_complete,
)
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, BookingEvent, OutboxEvent
from dispatch.states import Role
from tests import factories as make
from tests.dispatch.test_pricing import TARIFF, _book, _quote

POLICY = RidePolicy(no_show_wait_s=300, rematch_deadline_s=600, cancel_grace_s=120)


def _assigned(session, now):
    """A booking priced on a quote and offered to a driver: its id, the driver's, the rider."""
    rider = make.rider(session)
    make.driver(session, now=now)
    booking = _book(session, rider, now, _quote(session, rider).id)
    matched = dispatch_booking(session, booking.id, MatchPolicy(), now)
    assert matched.outcome == Outcome.ASSIGNED
    return booking.id, matched.driver_id, rider


def _assigned_seconds_ago(session, booking_id, seconds):
    session.execute(
        update(Booking)
        .where(Booking.id == booking_id)
        .values(assigned_at=text(f"now() - interval '{seconds} seconds'"))
    )
    session.expire_all()


def _rider_cancels(session, booking_id, rider, now):
    return cancel_booking(
        session, booking_id, Actor(rider.id, Role.RIDER), now=now, policy=POLICY
    ).cancellation_fee


def test_a_rider_cancels_free_within_the_grace_period(session, now):
    booking_id, _, rider = _assigned(session, now)
    _assigned_seconds_ago(session, booking_id, 60)
    assert _rider_cancels(session, booking_id, rider, now) is None


def test_a_rider_cancelling_after_the_grace_period_pays_the_tariffs_fee(session, now):
    booking_id, _, rider = _assigned(session, now)
    _assigned_seconds_ago(session, booking_id, 180)
    assert _rider_cancels(session, booking_id, rider, now) == TARIFF.cancellation_fee
    row = session.get(Booking, booking_id, populate_existing=True)
    assert (row.status, row.cancelled_by, row.cancellation_fee) == (
        "cancelled",
        "rider",
        TARIFF.cancellation_fee,
    )


def test_a_late_cancel_of_an_unpriced_booking_costs_nothing(session, now):
    rider = make.rider(session)
    make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    _assigned_seconds_ago(session, booking.id, 600)
    assert _rider_cancels(session, booking.id, rider, now) is None


def test_a_cancel_before_any_driver_and_an_admins_cancel_cost_nothing(session, now):
    rider = make.rider(session)
    pending = _book(session, rider, now, _quote(session, rider).id)
    assert _rider_cancels(session, pending.id, rider, now) is None
    booking_id, _, _ = _assigned(session, now)
    _assigned_seconds_ago(session, booking_id, 600)
    admin = Actor(None, Role.ADMIN)
    cancelled = cancel_booking(
        session, booking_id, admin, now=now, reason="rider called support", policy=POLICY
    )
    assert cancelled.cancellation_fee is None


def test_a_no_show_carries_the_tariffs_no_show_fee(session, now):
    booking_id, driver_id, _ = _assigned(session, now)
    driver_action(session, booking_id, driver_id, "accept", now=now)
    driver_action(session, booking_id, driver_id, "arrive", now=now)
    done = driver_action(
        session,
        booking_id,
        driver_id,
        "no_show",
        now=now,
        policy=POLICY,
        clock=now + dt.timedelta(seconds=301),
    )
    assert (done.status, done.cancellation_fee) == ("no_show", TARIFF.no_show_fee)


def test_an_admins_force_complete_settles_the_fare(session, now):
    booking_id, driver_id, _ = _assigned(session, now)
    driver_action(session, booking_id, driver_id, "accept", now=now)
    driver_action(session, booking_id, driver_id, "start", now=now)
    session.execute(
        update(BookingEvent)
        .where(BookingEvent.booking_id == booking_id, BookingEvent.to_status == "in_progress")
        .values(created_at=text("now() - interval '120 seconds'"))
    )
    admin = Actor(None, Role.ADMIN)
    done = force_complete(session, booking_id, admin, now=now, reason="driver's phone died")
    row = session.get(Booking, booking_id, populate_existing=True)
    assert done.final_fare is not None and row.final_fare == done.final_fare
    assert row.status == "completed" and row.fare["final"] is True
    # What the rider and the admins are pushed is the settled booking, not the quote.
    pushed = session.scalars(
        select(OutboxEvent.payload).where(OutboxEvent.booking_id == booking_id)
    ).all()
    completed = [p for p in pushed if p["status"] == "completed"]
    assert completed and all(p["fare"] == row.fare for p in completed)
