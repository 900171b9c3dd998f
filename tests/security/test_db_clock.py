"""Tasks decide by the database's clock, not by the clock of the host they run on.

Each test runs the real tasks in this process against the test services, with the worker's
own clock (``workers.tasks._now``, what the tasks once passed as ``now``) set an hour off:
fast, as a host whose clock drifted; slow, as a worker that read its clock and then paused
before its transaction. What the database says is not due stays put, and what it says is
due is done.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from dispatch.db import transaction_now
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, Driver
from tests import factories as make

HOUR = dt.timedelta(hours=1)


def _worker_clock(monkeypatch, skew: dt.timedelta) -> None:
    from workers import tasks

    monkeypatch.setattr(tasks, "_now", lambda: dt.datetime.now(dt.UTC) + skew)


def _offered(session, now):
    rider = make.rider(session)
    driver = make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    assert (
        dispatch_booking(session, booking.id, MatchPolicy(offer_window_s=25), now).outcome
        == Outcome.ASSIGNED
    )
    return booking.id, driver.user_id


def test_a_fast_worker_clock_lapses_expires_and_retires_nothing_early(
    worker_context, committed_sessions, monkeypatch
):
    from workers import tasks

    with committed_sessions.begin() as s:
        now = transaction_now(s)
        offered, driver_id = _offered(s, now)  # Lapses 25 s from now.
        waiting = make.booking(s, make.rider(s, "waiting"), now=now, deadline_s=300).id
    _worker_clock(monkeypatch, +HOUR)

    assert tasks.lapse_offers() == 0
    assert tasks.expire_bookings() == 0
    assert tasks.redispatch_pending() == 0  # Its first retry is 5 s away.
    assert tasks.mark_drivers_offline(stale_after_s=120) == 0
    # The matching task would have expired the booking by the worker's clock.
    assert tasks.match_booking(waiting) == Outcome.NO_DRIVER.value
    with committed_sessions() as s:
        assert s.get(Booking, offered).status == "assigned"
        assert s.get(Booking, waiting).status == "pending"
        assert s.get(Driver, driver_id).status == "busy"


def test_a_slow_worker_clock_still_lapses_and_expires_what_is_due(
    worker_context, committed_sessions, monkeypatch
):
    from workers import tasks

    with committed_sessions.begin() as s:
        now = transaction_now(s)
        offered, driver_id = _offered(s, now)
        overdue = make.booking(s, make.rider(s, "overdue"), now=now, deadline_s=300).id
        # Time passes, by the database's clock: the offer and the deadline are behind us.
        s.execute(
            text("UPDATE cab_bookings SET offer_expires_at = now() - interval '1 s' WHERE id = :b"),
            {"b": offered},
        )
        s.execute(
            text("UPDATE cab_bookings SET expires_at = now() - interval '1 s' WHERE id = :b"),
            {"b": overdue},
        )
    _worker_clock(monkeypatch, -HOUR)

    assert tasks.lapse_offers() == 1
    assert tasks.expire_bookings() == 1
    with committed_sessions() as s:
        assert s.get(Booking, offered).status == "pending"
        assert s.get(Booking, overdue).status == "expired"
        assert s.get(Driver, driver_id).status == "available"
