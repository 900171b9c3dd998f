"""Arrival, no-shows, cancels by each party and admins' force-complete, against PostgreSQL:
each through the state machine, the audit trail and the outbox."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from dispatch.actors import Actor
from dispatch.bookings.transitions import (
    NoShowTooEarly,
    ReasonRequired,
    RidePolicy,
    cancel_booking,
    driver_action,
    driver_cancellations,
    force_complete,
)
from dispatch.errors import InvalidTransition, NotFound, NotOfferedToYou
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, BookingEvent, Decline, Driver, OutboxEvent
from dispatch.states import Role
from tests import factories as make

WAIT = RidePolicy(no_show_wait_s=300, rematch_deadline_s=600)


def _accepted(session, now, *, pickup_at=None):
    """A rider's booking, offered to and accepted by a driver; the booking, driver, rider."""
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now, pickup_at=pickup_at)
    assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    driver_action(session, booking.id, driver.user_id, "accept", now=now)
    session.refresh(booking)
    return booking, driver, rider


def _trail(session, booking_id):
    return session.execute(
        select(BookingEvent.from_status, BookingEvent.to_status, BookingEvent.reason)
        .where(BookingEvent.booking_id == booking_id)
        .order_by(BookingEvent.version)
    ).all()


def _driver_status(session, driver_id):
    session.expire_all()
    return session.get(Driver, driver_id).status


def test_arrival_sits_between_acceptance_and_the_start(session, now):
    booking, driver, _ = _accepted(session, now)
    arrived = driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    assert (arrived.status, arrived.arrived_at, arrived.accepted_at) == ("arrived", now, now)
    started = driver_action(session, booking.id, driver.user_id, "start", now=now)
    assert (started.status, started.started_at) == ("in_progress", now)
    assert _trail(session, booking.id)[-2:] == [
        ("accepted", "arrived", "arrive"),
        ("arrived", "in_progress", "start"),
    ]
    # The rider and the admins heard of the arrival.
    pushed = session.scalars(
        select(OutboxEvent.payload).where(OutboxEvent.booking_id == booking.id)
    ).all()
    assert any(p["status"] == "arrived" and p["arrived_at"] for p in pushed)


def test_a_ride_starts_from_accepted_without_an_arrival(session, now):
    booking, driver, _ = _accepted(session, now)
    started = driver_action(session, booking.id, driver.user_id, "start", now=now)
    assert (started.status, started.arrived_at) == ("in_progress", None)
    assert _trail(session, booking.id)[-1] == ("accepted", "in_progress", "start")


def test_only_the_bookings_driver_arrives_and_only_once_accepted(session, now):
    booking, driver, _ = _accepted(session, now)
    stranger = make.driver(session, make.offset(make.LISBON, north_km=40), now=now, name="x")
    with pytest.raises(NotOfferedToYou):
        driver_action(session, booking.id, stranger.user_id, "arrive", now=now)
    driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    with pytest.raises(InvalidTransition, match="cannot arrive a booking that is arrived"):
        driver_action(session, booking.id, driver.user_id, "arrive", now=now)


def test_a_no_show_waits_for_the_wait_at_the_pickup(session, now):
    booking, driver, _ = _accepted(session, now)
    with pytest.raises(InvalidTransition, match="cannot no-show a booking that is accepted"):
        driver_action(session, booking.id, driver.user_id, "no_show", now=now, policy=WAIT)
    driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    # By the database's clock, just after the arrival: too early, and the answer says when.
    with pytest.raises(NoShowTooEarly) as early:
        driver_action(session, booking.id, driver.user_id, "no_show", now=now, policy=WAIT)
    allowed_at = now + dt.timedelta(seconds=300)
    assert early.value.details == {
        "current_status": "arrived",
        "version": 4,
        "allowed_at": allowed_at.isoformat(),
    }
    with pytest.raises(NoShowTooEarly):
        driver_action(
            session,
            booking.id,
            driver.user_id,
            "no_show",
            now=now,
            policy=WAIT,
            clock=allowed_at - dt.timedelta(seconds=1),
        )
    done = driver_action(
        session,
        booking.id,
        driver.user_id,
        "no_show",
        now=allowed_at,
        policy=WAIT,
        clock=allowed_at,
    )
    assert (done.status, done.cancellation_fee, done.cancelled_by) == ("no_show", None, None)
    assert _trail(session, booking.id)[-1] == ("arrived", "no_show", "no_show")
    assert _driver_status(session, driver.user_id) == "available"
    # Final: nothing moves it on.
    with pytest.raises(InvalidTransition):
        cancel_booking(session, booking.id, Actor(None, Role.ADMIN), now=now, reason="x")


def test_the_no_show_wait_counts_from_the_requested_pickup_when_later(session, now):
    pickup_at = now + dt.timedelta(minutes=8)  # Due for matching (SMARTROUTE_SCHEDULE_LEAD_S).
    booking, driver, _ = _accepted(session, now, pickup_at=pickup_at)
    driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    with pytest.raises(NoShowTooEarly) as early:
        driver_action(
            session,
            booking.id,
            driver.user_id,
            "no_show",
            now=now,
            policy=WAIT,
            clock=now + dt.timedelta(minutes=10),  # Past arrival + wait, not pickup + wait.
        )
    expected = booking.date, booking.time
    allowed_at = dt.datetime.combine(*expected, tzinfo=dt.UTC) + dt.timedelta(seconds=300)
    assert early.value.details["allowed_at"] == allowed_at.isoformat()


def test_a_driver_cancel_before_pickup_goes_back_to_matching_never_to_them(session, now):
    booking, driver, _ = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    later = now + dt.timedelta(seconds=400)
    after = driver_action(
        session,
        booking.id,
        driver.user_id,
        "cancel",
        now=later,
        reason="flat tyre",
        policy=WAIT,
    )
    assert (after.status, after.driver_id, after.arrived_at, after.accepted_at) == (
        "pending",
        None,
        None,
        None,
    )
    # It has the rematch deadline again, however long it took to get here.
    assert after.expires_at == later + dt.timedelta(seconds=600)
    assert after.cancelled_by is None
    assert _trail(session, booking.id)[-1] == ("arrived", "pending", "flat tyre")
    assert session.get(Decline, (booking.id, driver.user_id)).reason == "cancelled"
    assert driver_cancellations(session, driver.user_id) == 1
    assert _driver_status(session, driver.user_id) == "available"
    # Matching skips them, although they are the nearest free driver.
    result = dispatch_booking(session, booking.id, MatchPolicy(), later)
    assert result.outcome == Outcome.NO_DRIVER


def test_a_driver_cancel_needs_a_reason_and_a_ride_not_yet_started(session, now):
    booking, driver, _ = _accepted(session, now)
    with pytest.raises(ReasonRequired):
        driver_action(session, booking.id, driver.user_id, "cancel", now=now)
    driver_action(session, booking.id, driver.user_id, "start", now=now)
    with pytest.raises(InvalidTransition, match="cannot cancel a booking that is in_progress"):
        driver_action(session, booking.id, driver.user_id, "cancel", now=now, reason="late")
    stranger = make.driver(session, make.offset(make.LISBON, north_km=40), now=now, name="x")
    with pytest.raises(NotOfferedToYou):
        driver_action(session, booking.id, stranger.user_id, "cancel", now=now, reason="x")


def test_a_rider_cancels_up_to_arrival_with_an_optional_reason(session, now):
    booking, driver, rider = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    cancelled = cancel_booking(
        session, booking.id, Actor(rider.id, Role.RIDER), now=now, reason="plans changed"
    )
    assert (cancelled.status, cancelled.cancelled_by, cancelled.cancel_reason) == (
        "cancelled",
        "rider",
        "plans changed",
    )
    assert cancelled.cancellation_fee is None
    assert _trail(session, booking.id)[-1] == ("arrived", "cancelled", "plans changed")
    assert _driver_status(session, driver.user_id) == "available"


def test_a_rider_cannot_cancel_a_ride_under_way_nor_anothers(session, now):
    booking, driver, rider = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "start", now=now)
    with pytest.raises(InvalidTransition, match="cannot cancel a booking that is in_progress"):
        cancel_booking(session, booking.id, Actor(rider.id, Role.RIDER), now=now)
    other = make.rider(session, "other")
    with pytest.raises(NotFound):
        cancel_booking(session, booking.id, Actor(other.id, Role.RIDER), now=now, reason="x")


def test_an_admin_cancels_a_ride_under_way_with_a_reason_audited(session, now):
    booking, driver, _ = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "start", now=now)
    admin = Actor(7, Role.ADMIN)
    with pytest.raises(ReasonRequired):
        cancel_booking(session, booking.id, admin, now=now)
    cancelled = cancel_booking(session, booking.id, admin, now=now, reason="fraud report")
    assert (cancelled.status, cancelled.cancelled_by) == ("cancelled", "admin")
    event = session.scalars(
        select(BookingEvent)
        .where(BookingEvent.booking_id == booking.id)
        .order_by(BookingEvent.version.desc())
    ).first()
    assert (event.from_status, event.to_status, event.actor_id, event.reason) == (
        "in_progress",
        "cancelled",
        7,
        "fraud report",
    )
    assert _driver_status(session, driver.user_id) == "available"


def test_an_admin_force_completes_a_ride_under_way_only(session, now):
    booking, driver, _ = _accepted(session, now)
    with pytest.raises(InvalidTransition, match="cannot complete a booking that is accepted"):
        force_complete(session, booking.id, Actor(7, Role.ADMIN), now=now, reason="phone died")
    driver_action(session, booking.id, driver.user_id, "start", now=now)
    with pytest.raises(ReasonRequired):
        force_complete(session, booking.id, Actor(7, Role.ADMIN), now=now, reason=None)
    done = force_complete(session, booking.id, Actor(7, Role.ADMIN), now=now, reason="phone died")
    assert done.status == "completed"
    assert _trail(session, booking.id)[-1] == ("in_progress", "completed", "phone died")
    assert _driver_status(session, driver.user_id) == "available"
    with pytest.raises(NotFound):
        force_complete(session, 10**12, Actor(7, Role.ADMIN), now=now, reason="x")


def test_the_database_refuses_an_arrival_without_its_time(session, now):
    from sqlalchemy.exc import IntegrityError

    booking, _driver, _ = _accepted(session, now)
    refused = pytest.raises(IntegrityError, match="ck_cab_bookings_arrival_time")
    with refused, session.begin_nested():
        session.execute(
            Booking.__table__.update()
            .where(Booking.id == booking.id)
            .values(status="arrived", arrived_at=None)
        )
