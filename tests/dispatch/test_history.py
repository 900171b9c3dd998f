"""History and the admin search: keyset pages on (created_at, id), newest first, stable while
new rides arrive, each page served by an index."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text, update

from dispatch.actors import Actor
from dispatch.bookings.queries import BookingFilter, Keyset, history_for, search_bookings
from dispatch.bookings.transitions import driver_action
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking
from dispatch.states import Role
from tests import factories as make


def _all_pages(fetch, between=None) -> list[int]:
    """Every id, page after page; ``between(n)`` runs after the n-th page."""
    seen, after, pages = [], None, 0
    while True:
        page = fetch(after)
        seen += [b.id for b in page.bookings]
        pages += 1
        if between is not None:
            between(pages)
        if page.next is None:
            return seen
        assert page.next == Keyset.of(page.bookings[-1])
        after = page.next


def _created(session, booking: Booking, at: dt.datetime) -> None:
    session.execute(update(Booking).where(Booking.id == booking.id).values(created_at=at))
    session.refresh(booking)


def test_a_riders_history_is_their_own_newest_first_by_creation(session, now):
    rider = make.rider(session)
    other = make.rider(session, "other")
    mine = [make.booking(session, rider, now=now) for _ in range(5)]
    make.booking(session, other, now=now)
    # Creation, not id, orders the history: the newest id is made the oldest ride.
    _created(session, mine[-1], now - dt.timedelta(days=1))
    expected = [b.id for b in sorted(mine, key=lambda b: (b.created_at, b.id), reverse=True)]
    assert expected[-1] == mine[-1].id
    actor = Actor(rider.id, Role.RIDER)
    seen = _all_pages(lambda after: history_for(session, actor, status=None, limit=2, after=after))
    assert seen == expected


def test_rides_booked_between_pages_cause_no_duplicates_and_no_gaps(session, now):
    rider = make.rider(session)
    first = [make.booking(session, rider, now=now) for _ in range(7)]
    for minutes, booking in enumerate(first):  # One a minute, the last the newest.
        _created(session, booking, now - dt.timedelta(minutes=60 - minutes))
    arrivals: list[int] = []

    def book_more(_pages: int) -> None:
        arrivals.extend(make.booking(session, rider, now=now).id for _ in range(2))

    actor = Actor(rider.id, Role.RIDER)
    seen = _all_pages(
        lambda after: history_for(session, actor, status=None, limit=3, after=after), book_more
    )
    assert seen == [b.id for b in reversed(first)]
    # A fresh read starts with what arrived meanwhile, newest first.
    fresh = history_for(session, actor, status=None, limit=100, after=None).bookings
    assert [b.id for b in fresh] == sorted(arrivals, reverse=True) + seen


def test_a_drivers_history_holds_the_rides_they_took(session, now):
    driver = make.driver(session, now=now)
    rider = make.rider(session)
    taken = []
    for _ in range(3):
        booking = make.booking(session, rider, now=now)
        assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
        for action in ("accept", "start", "complete"):
            driver_action(session, booking.id, driver.user_id, action, now=now)
        taken.append(booking.id)
    declined = make.booking(session, rider, now=now)
    assert dispatch_booking(session, declined.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    driver_action(session, declined.id, driver.user_id, "decline", now=now)
    actor = Actor(driver.user_id, Role.DRIVER)
    page = history_for(session, actor, status=None, limit=10, after=None)
    assert [b.id for b in page.bookings] == sorted(taken, reverse=True)
    assert history_for(session, actor, status="pending", limit=10, after=None).bookings == []
    completed = history_for(session, actor, status="completed", limit=2, after=None)
    assert len(completed.bookings) == 2 and completed.next is not None


def test_only_riders_and_drivers_have_a_history(session):
    with pytest.raises(ValueError):
        history_for(session, Actor(1, Role.ADMIN), status=None, limit=1, after=None)


def test_the_admin_search_filters_by_rider_driver_region_and_dates(session, now):
    a, b = make.rider(session, "a"), make.rider(session, "b")
    driver = make.driver(session, now=now)
    today = now.date()
    later = now + dt.timedelta(days=3)
    a_now = make.booking(session, a, now=now)
    a_later = make.booking(session, a, now=now, pickup_at=later)
    b_now = make.booking(session, b, now=now)
    assert dispatch_booking(session, b_now.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    session.execute(update(Booking).where(Booking.id == a_later.id).values(region="north"))

    def ids(**filters) -> list[int]:
        page = search_bookings(session, BookingFilter(**filters), limit=50)
        return [x.id for x in page.bookings]

    assert ids() == sorted([a_now.id, a_later.id, b_now.id], reverse=True)
    assert ids(rider_id=a.id) == [a_later.id, a_now.id]
    assert ids(driver_id=driver.user_id) == [b_now.id]
    assert ids(region="north") == [a_later.id]
    assert ids(region="default", rider_id=a.id) == [a_now.id]
    assert ids(date_from=later.date()) == [a_later.id]
    assert ids(date_to=today) == [b_now.id, a_now.id]
    assert ids(date_from=today, date_to=today, status="assigned") == [b_now.id]
    assert ids(date=later.date()) == [a_later.id]


def test_an_id_cursor_from_before_continues_from_that_booking(session, now):
    rider = make.rider(session)
    made = [make.booking(session, rider, now=now) for _ in range(4)]
    page = search_bookings(session, BookingFilter(), limit=10, before_id=made[2].id)
    assert [b.id for b in page.bookings] == [made[1].id, made[0].id]
    # A booking gone since: the page continues below its id.
    gone = made[-1].id + 100
    page = search_bookings(session, BookingFilter(), limit=10, before_id=gone)
    assert [b.id for b in page.bookings] == [b.id for b in reversed(made)]


def _plan(session, sql: str, **params) -> str:
    session.execute(text("SET LOCAL enable_seqscan = off"))
    rows = session.execute(text("EXPLAIN " + sql), params).scalars()
    return "\n".join(rows)


KEYSET = "(created_at, id) < (now(), 9223372036854775807) ORDER BY created_at DESC, id DESC"


@pytest.mark.parametrize(
    "where,index",
    [
        ("user_id = 1", "ix_cab_bookings_user_history"),
        ("driver_id = 1", "ix_cab_bookings_driver_history"),
        ("region = 'default'", "ix_cab_bookings_region_history"),
        ("true", "ix_cab_bookings_created_at_id"),
    ],
)
def test_each_page_is_an_ordered_index_scan(session, where, index):
    """The index returns rows in page order: no sort of the party's whole history, and a
    deep page starts at its cursor rather than counting off the rows before it."""
    plan = _plan(session, f"SELECT * FROM cab_bookings WHERE {where} AND {KEYSET} LIMIT 21")
    assert index in plan, plan
    assert "Sort" not in plan, plan
