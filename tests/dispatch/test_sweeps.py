import datetime as dt

from sqlalchemy.orm import Session

from dispatch import sweeps
from dispatch.matching.claims import claim_bookings
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Booking, Decline, Driver
from tests import factories as make


def test_an_unanswered_offer_lapses_back_to_pending(session, now):
    driver = make.driver(session, now=now)
    booking = make.booking(session, make.rider(session), now=now)
    dispatch_booking(session, booking.id, MatchPolicy(offer_window_s=25), now)
    assert sweeps.lapse_offers(session, now=now + dt.timedelta(seconds=24)) == []
    assert sweeps.lapse_offers(session, now=now + dt.timedelta(seconds=25)) == [booking.id]
    assert (booking.status, booking.driver_id, booking.offer_expires_at) == ("pending", None, None)
    assert session.get(Driver, driver.user_id).status == "available"
    assert session.get(Decline, (booking.id, driver.user_id)).reason == "timeout"
    assert sweeps.lapse_offers(session, now=now + dt.timedelta(seconds=60)) == []


def test_overdue_pending_bookings_expire_once(session, now):
    rider = make.rider(session)
    overdue = make.booking(session, rider, now=now, deadline_s=5)
    fresh = make.booking(session, rider, now=now, deadline_s=500)
    later = now + dt.timedelta(seconds=6)
    assert sweeps.expire_overdue(session, now=later) == [overdue.id]
    assert (overdue.status, fresh.status) == ("expired", "pending")
    assert sweeps.expire_overdue(session, now=later) == []


def test_due_bookings_are_claimed_once_per_interval(session, now):
    booking = make.booking(session, make.rider(session), now=now)  # first retry after 5 s
    assert sweeps.claim_due(session, now=now, retry_interval_s=5) == []
    due = now + dt.timedelta(seconds=5)
    assert sweeps.claim_due(session, now=due, retry_interval_s=5) == [booking.id]
    assert sweeps.claim_due(session, now=due, retry_interval_s=5) == []
    session.refresh(booking)
    assert booking.next_attempt_at == due + dt.timedelta(seconds=5)


def test_two_sweepers_at_once_split_the_work(engine, committed_sessions, now):
    with committed_sessions.begin() as s:
        rider = make.rider(s)
        ids = [make.booking(s, rider, now=now).id for _ in range(4)]
    due = now + dt.timedelta(seconds=5)
    first, second = Session(engine), Session(engine)
    try:
        # The first sweep holds its rows; the second skips them instead of waiting.
        claimed_first = sweeps.claim_due(first, now=due, retry_interval_s=5, limit=2)
        claimed_second = sweeps.claim_due(second, now=due, retry_interval_s=5)
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
    assert len(claimed_first) == 2
    assert sorted(claimed_first + claimed_second) == ids
    with committed_sessions() as s:
        assert {b.status for b in s.query(Booking)} == {"pending"}


def test_a_sweep_names_the_regions_with_a_due_booking_and_moves_no_turn(session, now):
    rider = make.rider(session)
    first = make.booking(session, rider, now=now)  # due 5 s after it arrived
    second = make.booking(session, rider, now=now + dt.timedelta(seconds=2))
    make.booking(session, rider, now=now).region = "north"
    # Due to be tried, but its pickup is two hours off: not waiting yet.
    make.booking(session, rider, now=now, pickup_at=now + dt.timedelta(hours=2)).region = "south"
    session.flush()
    policy = MatchPolicy(schedule_lead_s=600)
    assert sweeps.regions_due(session, policy, now=now + dt.timedelta(seconds=4)) == []
    swept = now + dt.timedelta(seconds=5)
    assert sweeps.regions_due(session, policy, now=swept) == ["default", "north"]
    # The swept booking keeps its turn ahead of the one that arrived after it.
    taken = claim_bookings(session, "default", policy, swept + dt.timedelta(seconds=3), limit=1)
    assert [b.id for b in taken] == [first.id]
    assert second.status == "pending"
