import datetime as dt

from dispatch import sweeps
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Driver
from dispatch.stats import active_bookings, booking_stats, oldest_pending_age_s
from tests import factories as make


def test_silent_available_drivers_go_offline_but_busy_ones_keep_their_ride(session, now):
    quiet = make.driver(session, now=now - dt.timedelta(seconds=200), name="quiet")
    chatty = make.driver(session, now=now, name="chatty")
    riding = make.driver(session, now=now - dt.timedelta(seconds=200), name="riding")
    session.get(Driver, riding.user_id).status = "busy"
    silent = sweeps.mark_silent_drivers_offline(session, now=now, stale_after_s=120)
    assert silent == [quiet.user_id]
    assert [session.get(Driver, d.user_id).status for d in (quiet, chatty, riding)] == [
        "offline",
        "available",
        "busy",
    ]
    assert sweeps.mark_silent_drivers_offline(session, now=now, stale_after_s=120) == []


def test_stats_count_by_status_and_time_to_assign(session, now):
    rider = make.rider(session)
    make.driver(session, now=now)
    matched = make.booking(session, rider, now=now - dt.timedelta(seconds=4))
    make.booking(session, rider, now=now - dt.timedelta(seconds=2))
    dispatch_booking(session, matched.id, MatchPolicy(), now)
    stats = booking_stats(session, now=now)
    assert stats["by_status"]["assigned"] == 1 and stats["by_status"]["pending"] == 1
    assert stats["active"] == 1 and stats["today"]["total"] == 2
    assert stats["time_to_assign_last_hour"] == {"mean_s": 4.0, "p95_s": 4.0, "sample": 1}
    assert stats["oldest_pending_age_s"] == 2.0
    # The gauges read the same numbers the stats report.
    assert active_bookings(session) == stats["active"]
    assert oldest_pending_age_s(session, now) == stats["oldest_pending_age_s"]
