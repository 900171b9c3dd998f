"""Stuck rides recover: accepted and never started, they are matched again or cancelled by
their region's policy; in progress past the maximum, they are flagged once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from dispatch import sweeps
from dispatch.bookings.transitions import driver_action
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import BookingEvent, Decline, Driver
from tests import factories as make

TIMEOUT_S = 1800


def _accepted(session, now, *, north_km=0.0, pickup_at=None, name="driver"):
    rider = make.rider(session)
    at = make.offset(make.LISBON, north_km=north_km)
    driver = make.driver(session, at, now=now, name=name)
    booking = make.booking(session, rider, at, now=now, pickup_at=pickup_at)
    assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    driver_action(session, booking.id, driver.user_id, "accept", now=now)
    return booking, driver


def _recover(session, now, action_for=lambda region: "rematch"):
    return sweeps.recover_stuck_rides(
        session, start_timeout_s=TIMEOUT_S, action_for=action_for, deadline_s=300, now=now
    )


def test_an_unstarted_ride_is_matched_again_after_the_timeout(session, now):
    booking, driver = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "arrive", now=now)
    almost = now + dt.timedelta(seconds=TIMEOUT_S - 1)
    assert _recover(session, almost) == sweeps.StuckRides([], [])
    due = now + dt.timedelta(seconds=TIMEOUT_S)
    assert _recover(session, due) == sweeps.StuckRides([booking.id], [])
    session.refresh(booking)
    assert (booking.status, booking.driver_id, booking.arrived_at) == ("pending", None, None)
    assert booking.expires_at == due + dt.timedelta(seconds=300)
    assert session.get(Decline, (booking.id, driver.user_id)).reason == "stuck"
    session.expire_all()
    # The driver who sat on it goes offline, rather than being offered the next ride.
    assert session.get(Driver, driver.user_id).status == "offline"
    event = session.scalars(
        select(BookingEvent)
        .where(BookingEvent.booking_id == booking.id)
        .order_by(BookingEvent.version.desc())
    ).first()
    assert (event.from_status, event.to_status, event.actor_id, event.driver_id) == (
        "arrived",
        "pending",
        None,
        driver.user_id,
    )
    assert event.reason == f"not started within {TIMEOUT_S} s"
    # Done once: a second sweep finds nothing.
    assert _recover(session, due) == sweeps.StuckRides([], [])


def test_the_region_policy_may_cancel_instead(session, now):
    booking, driver = _accepted(session, now)
    due = now + dt.timedelta(seconds=TIMEOUT_S)
    seen = []

    def cancel_here(region):
        seen.append(region)
        return "cancel"

    assert _recover(session, due, cancel_here) == sweeps.StuckRides([], [booking.id])
    assert seen == ["default"]
    session.refresh(booking)
    assert (booking.status, booking.cancelled_by, booking.driver_id) == (
        "cancelled",
        "system",
        driver.user_id,
    )
    assert booking.cancel_reason == f"not started within {TIMEOUT_S} s"
    session.expire_all()
    assert session.get(Driver, driver.user_id).status == "offline"


def test_a_scheduled_ride_is_judged_from_its_pickup_time(session, now):
    pickup_at = now + dt.timedelta(minutes=8)
    booking, _ = _accepted(session, now, pickup_at=pickup_at)
    after_acceptance = now + dt.timedelta(seconds=TIMEOUT_S + 60)
    assert _recover(session, after_acceptance) == sweeps.StuckRides([], [])
    pickup = dt.datetime.combine(booking.date, booking.time, tzinfo=dt.UTC)
    after_pickup = pickup + dt.timedelta(seconds=TIMEOUT_S)
    assert _recover(session, after_pickup) == sweeps.StuckRides([booking.id], [])


def test_started_rides_are_left_alone_and_flagged_once_past_the_maximum(session, now):
    booking, driver = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "start", now=now)
    later = now + dt.timedelta(hours=5)
    assert _recover(session, later) == sweeps.StuckRides([], [])
    assert sweeps.flag_overrunning_rides(session, max_ride_s=4 * 3600, now=later) == [booking.id]
    assert sweeps.flag_overrunning_rides(session, max_ride_s=4 * 3600, now=later) == []
    assert sweeps.overrunning_rides(session) == 1
    session.refresh(booking)
    assert (booking.status, booking.overrun_at) == ("in_progress", later)
    driver_action(session, booking.id, driver.user_id, "complete", now=later)
    assert sweeps.overrunning_rides(session) == 0


def test_a_ride_within_its_maximum_is_not_flagged(session, now):
    booking, driver = _accepted(session, now)
    driver_action(session, booking.id, driver.user_id, "start", now=now)
    soon = now + dt.timedelta(hours=3)
    assert sweeps.flag_overrunning_rides(session, max_ride_s=4 * 3600, now=soon) == []
    assert sweeps.overrunning_rides(session) == 0
