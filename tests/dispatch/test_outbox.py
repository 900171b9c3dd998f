import datetime as dt

import pytest
from sqlalchemy import select

from dispatch import outbox
from dispatch.matching import MatchPolicy, dispatch_booking
from dispatch.models import OutboxEvent
from tests import factories as make


def test_each_change_queues_its_pushes_in_the_same_transaction(session, now):
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    dispatch_booking(session, booking.id, MatchPolicy(), now)
    rows = session.execute(select(OutboxEvent).order_by(OutboxEvent.id)).scalars().all()
    assert [(r.room, r.event, r.payload["status"]) for r in rows] == [
        ("admin_dashboard", "booking_updated", "pending"),
        (f"rider_{rider.id}", "booking_updated", "pending"),
        ("admin_dashboard", "booking_updated", "assigned"),
        (f"rider_{rider.id}", "booking_updated", "assigned"),
        (f"driver_{driver.user_id}", "new_assignment", "assigned"),
    ]
    assert outbox.message(rows[-1])["event_id"] == rows[-1].id


def test_unsent_events_are_claimed_in_order_then_marked_and_pruned(session, now):
    make.booking(session, make.rider(session), now=now)
    claimed = outbox.claim_unsent(session)
    assert [r.id for r in claimed] == sorted(r.id for r in claimed) and len(claimed) == 2
    # created_at is the database's clock, a hair away from the test's.
    assert outbox.oldest_unsent_age_s(session, now + dt.timedelta(seconds=3)) == \
        pytest.approx(3, abs=0.5)
    outbox.mark_sent(session, [r.id for r in claimed], now)
    assert outbox.claim_unsent(session) == []
    assert outbox.oldest_unsent_age_s(session, now) == 0
    assert outbox.prune(session, sent_before=now) == 0  # Not yet past the retention.
    assert outbox.prune(session, sent_before=now + dt.timedelta(seconds=1)) == 2


def test_a_second_publisher_waits_and_then_sees_what_committed_meanwhile(
        committed_sessions, clean_db, engine, now):
    """Publish requests are coalesced, so a publisher that finds another at work must not
    leave to it: that one read its rows before the newer events committed."""
    import threading

    from tests.support import wait_for, waiting_on_locks

    with committed_sessions() as first, first.begin():
        assert outbox.claim_unsent(first) == []
        with committed_sessions.begin() as s:
            make.booking(s, make.rider(s), now=now)  # Commits two events meanwhile.
        second: list = []
        waiter = threading.Thread(target=lambda: _claim_in_new_transaction(
            committed_sessions, second))
        waiter.start()
        wait_for(lambda: waiting_on_locks(engine, "smartroute-tests", "advisory") == 1, 10,
                 "the second publisher to wait for the lock")
        assert not second
    waiter.join(timeout=10)
    assert [r.event for r in second[0]] == ["booking_updated", "booking_updated"]


def _claim_in_new_transaction(sessions, out: list) -> None:
    with sessions() as session, session.begin():
        out.append(outbox.claim_unsent(session))
