import datetime as dt

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from dispatch.matching.claims import claim_driver
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Driver
from tests import factories as make

POLICY = MatchPolicy(radius_km=5, offer_window_s=25, retry_interval_s=5)


def test_the_nearest_available_driver_gets_the_offer(session, now):
    far = make.driver(session, make.offset(make.LISBON, north_km=3), now=now, name="far")
    near = make.driver(session, make.offset(make.LISBON, east_km=1), now=now, name="near")
    make.driver(session, make.offset(make.LISBON, east_km=0.1), now=now, available=False)
    booking = make.booking(session, make.rider(session), now=now)
    result = dispatch_booking(session, booking.id, POLICY, now)
    assert (result.outcome, result.driver_id) == (Outcome.ASSIGNED, near.user_id)
    assert result.distance_km == pytest.approx(1.0, rel=0.02)
    assert booking.status == "assigned" and booking.version == 2
    assert booking.offer_expires_at == now + dt.timedelta(seconds=25)
    assert session.get(Driver, near.user_id).status == "busy"
    assert session.get(Driver, far.user_id).status == "available"


def test_drivers_beyond_the_radius_are_not_offered(session, now):
    make.driver(session, make.offset(make.LISBON, north_km=6), now=now)
    booking = make.booking(session, make.rider(session), now=now)
    result = dispatch_booking(session, booking.id, POLICY, now)
    assert result.outcome == Outcome.NO_DRIVER
    assert booking.status == "pending" and booking.match_attempts == 1
    assert booking.next_attempt_at == now + dt.timedelta(seconds=5)


def test_a_driver_without_a_recent_ping_is_not_offered(session, now):
    stale_ping = now - dt.timedelta(seconds=POLICY.driver_stale_s + 1)
    make.driver(session, now=stale_ping)
    booking = make.booking(session, make.rider(session), now=now)
    assert dispatch_booking(session, booking.id, POLICY, now).outcome == Outcome.NO_DRIVER


def test_among_equals_the_longest_idle_driver_is_first(session, now):
    newer = make.driver(session, now=now, name="newer")
    older = make.driver(session, now=now - dt.timedelta(seconds=60), name="older")
    older_row = session.get(Driver, older.user_id)
    older_row.last_seen_at = now
    booking = make.booking(session, make.rider(session), now=now)
    assert dispatch_booking(session, booking.id, POLICY, now).driver_id == older.user_id
    assert session.get(Driver, newer.user_id).status == "available"


def test_a_booking_past_its_deadline_expires(session, now):
    make.driver(session, now=now)
    booking = make.booking(session, make.rider(session), now=now, deadline_s=10)
    later = now + dt.timedelta(seconds=11)
    assert dispatch_booking(session, booking.id, POLICY, later).outcome == Outcome.EXPIRED
    assert booking.status == "expired"


def test_a_scheduled_booking_waits_until_it_is_due(session, now):
    make.driver(session, now=now)
    pickup_at = now + dt.timedelta(hours=2)
    booking = make.booking(session, make.rider(session), now=now, pickup_at=pickup_at)
    assert dispatch_booking(session, booking.id, POLICY, now).outcome == Outcome.NOT_DUE
    assert booking.next_attempt_at == pickup_at - dt.timedelta(seconds=POLICY.schedule_lead_s)


def test_matching_twice_is_harmless(session, now):
    make.driver(session, now=now)
    booking = make.booking(session, make.rider(session), now=now)
    assert dispatch_booking(session, booking.id, POLICY, now).outcome == Outcome.ASSIGNED
    assert dispatch_booking(session, booking.id, POLICY, now).outcome == Outcome.NOT_PENDING
    assert booking.version == 2


def test_two_transactions_cannot_claim_one_driver(engine, committed_sessions, now):
    with committed_sessions.begin() as s:
        driver_id = make.driver(s, now=now).user_id
    first, second = Session(engine), Session(engine)
    try:
        assert claim_driver(first, driver_id, now)
        first.commit()
        # The loser's compare-and-set re-checks status = 'available' and finds 'busy'.
        assert not claim_driver(second, driver_id, now)
        second.commit()
    finally:
        first.close()
        second.close()
    with engine.connect() as conn:
        assert (
            conn.scalar(text("SELECT status FROM drivers WHERE user_id = :d"), {"d": driver_id})
            == "busy"
        )
