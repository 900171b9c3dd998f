"""Ratings: the rider rates the driver and the driver the rider, once each, after completion,
within the window; each rating adds to its ratee's summary in the same transaction."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from dispatch.actors import Actor
from dispatch.bookings.transitions import driver_action
from dispatch.db import make_engine, make_sessionmaker
from dispatch.errors import NotFound
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import BookingEvent, Rating, RatingSummary
from dispatch.ratings import (
    AlreadyRated,
    RatingWindowClosed,
    RideNotCompleted,
    average_for,
    party_payloads,
    rate,
)
from dispatch.states import Role
from tests import factories as make
from tests.support import wait_for, waiting_on_locks

WEEK = dt.timedelta(days=7)


def _ride(session, now, *, upto: str = "complete", rider=None, driver=None):
    """A booking taken by a driver as far as ``upto``; its rider and driver."""
    rider = rider or make.rider(session)
    driver = driver or make.driver(session, now=now)
    booking = make.booking(session, rider, now=now)
    assert dispatch_booking(session, booking.id, MatchPolicy(), now).outcome == Outcome.ASSIGNED
    for action in ("accept", "start", "complete") if upto != "offered" else ():
        driver_action(session, booking.id, driver.user_id, action, now=now)
        if action == upto:
            break
    return rider, driver, booking


def _as_rider(user) -> Actor:
    return Actor(user.id, Role.RIDER)


def _as_driver(driver) -> Actor:
    return Actor(driver.user_id, Role.DRIVER)


def test_each_party_rates_the_other_once(session, now):
    rider, driver, booking = _ride(session, now)
    by_rider = rate(session, booking.id, _as_rider(rider), stars=4, comment="kind", window=WEEK)
    by_driver = rate(session, booking.id, _as_driver(driver), stars=5, comment=None, window=WEEK)
    assert (by_rider.rater_role, by_rider.ratee_id, by_rider.stars) == ("rider", driver.user_id, 4)
    assert (by_driver.rater_role, by_driver.ratee_id) == ("driver", rider.id)
    with pytest.raises(AlreadyRated):
        rate(session, booking.id, _as_rider(rider), stars=1, comment=None, window=WEEK)
    with pytest.raises(AlreadyRated):
        rate(session, booking.id, _as_driver(driver), stars=1, comment=None, window=WEEK)
    assert len(session.scalars(select(Rating).where(Rating.booking_id == booking.id)).all()) == 2


def test_the_drivers_average_follows_every_rating(session, now):
    driver = make.driver(session, now=now)
    assert average_for(session, driver.user_id) is None
    for stars in (5, 4, 4):
        rider, _driver, booking = _ride(session, now, driver=driver)
        rate(session, booking.id, _as_rider(rider), stars=stars, comment=None, window=WEEK)
    average = average_for(session, driver.user_id)
    assert average is not None and (average.average, average.count) == (4.33, 3)
    summary = session.get(RatingSummary, driver.user_id)
    assert (summary.ratings, summary.stars_total) == (3, 13)


def test_a_rider_sees_the_drivers_average_on_the_booking(session, now):
    driver = make.driver(session, now=now)
    unrated_rider, _driver, unrated = _ride(session, now, upto="accept", driver=driver)
    assert party_payloads(session, [unrated], _as_rider(unrated_rider))[0]["driver_rating"] is None
    driver_action(session, unrated.id, driver.user_id, "start", now=now)
    driver_action(session, unrated.id, driver.user_id, "complete", now=now)
    rater, _driver, rated = _ride(session, now, driver=driver)
    rate(session, rated.id, _as_rider(rater), stars=3, comment=None, window=WEEK)
    current_rider, _driver, current = _ride(session, now, upto="accept", driver=driver)
    pending = make.booking(session, current_rider, now=now)
    payloads = party_payloads(session, [current, pending], _as_rider(current_rider))
    assert [p["id"] for p in payloads] == [current.id, pending.id]
    assert payloads[0]["driver_rating"] == {"average": 3.0, "count": 1}
    assert payloads[1]["driver_rating"] is None


def test_each_party_sees_its_own_rating_and_only_the_rider_the_drivers_average(session, now):
    rider, driver, booking = _ride(session, now)
    rate(session, booking.id, _as_rider(rider), stars=4, comment="ok", window=WEEK)
    [as_rider] = party_payloads(session, [booking], _as_rider(rider))
    assert as_rider["my_rating"]["stars"] == 4 and as_rider["my_rating"]["comment"] == "ok"
    assert as_rider["driver_rating"] == {"average": 4.0, "count": 1}
    [as_driver] = party_payloads(session, [booking], _as_driver(driver))
    assert as_driver["my_rating"] is None and "driver_rating" not in as_driver
    rate(session, booking.id, _as_driver(driver), stars=2, comment=None, window=WEEK)
    [as_driver] = party_payloads(session, [booking], _as_driver(driver))
    assert as_driver["my_rating"]["stars"] == 2 and as_driver["my_rating"]["rater_role"] == "driver"
    [as_admin] = party_payloads(session, [booking], Actor(None, Role.ADMIN))
    assert "my_rating" not in as_admin and "driver_rating" not in as_admin


@pytest.mark.parametrize("upto", ["offered", "accept", "start"])
def test_a_ride_not_completed_cannot_be_rated(session, now, upto):
    rider, driver, booking = _ride(session, now, upto=upto)
    with pytest.raises(RideNotCompleted):
        rate(session, booking.id, _as_rider(rider), stars=5, comment=None, window=WEEK)
    with pytest.raises(RideNotCompleted):
        rate(session, booking.id, _as_driver(driver), stars=5, comment=None, window=WEEK)


def test_a_cancelled_or_unmatched_ride_cannot_be_rated(session, now):
    rider = make.rider(session)
    booking = make.booking(session, rider, now=now)
    with pytest.raises(RideNotCompleted):
        rate(session, booking.id, _as_rider(rider), stars=5, comment=None, window=WEEK)


def test_nobody_else_may_rate_and_learns_nothing(session, now):
    rider, driver, booking = _ride(session, now)
    strangers = [
        _as_rider(make.rider(session, "other rider")),
        _as_driver(make.driver(session, now=now, name="other driver")),
        Actor(rider.id, Role.DRIVER),  # The right id with the wrong role.
        Actor(driver.user_id, Role.RIDER),
        Actor(make.rider(session, "admin").id, Role.ADMIN),
    ]
    for stranger in strangers:
        with pytest.raises(NotFound):
            rate(session, booking.id, stranger, stars=5, comment=None, window=WEEK)
    with pytest.raises(NotFound):
        rate(session, booking.id + 1000, _as_rider(rider), stars=5, comment=None, window=WEEK)


def _completed_ago(session, booking_id: int, ago: dt.timedelta) -> None:
    """Move the booking's completion back by ``ago`` on the database's clock."""
    session.execute(
        update(BookingEvent)
        .where(BookingEvent.booking_id == booking_id, BookingEvent.to_status == "completed")
        .values(created_at=text("now() - :ago").bindparams(ago=ago))
    )


def test_ratings_close_after_the_window(session, now):
    rider, driver, booking = _ride(session, now)
    _completed_ago(session, booking.id, dt.timedelta(days=6, hours=23))
    rate(session, booking.id, _as_rider(rider), stars=5, comment=None, window=WEEK)
    _completed_ago(session, booking.id, dt.timedelta(days=7, seconds=1))
    with pytest.raises(RatingWindowClosed) as refused:
        rate(session, booking.id, _as_driver(driver), stars=5, comment=None, window=WEEK)
    assert "7 days" in refused.value.message
    assert "closed_at" in refused.value.details


@pytest.mark.parametrize(
    "column,value,constraint",
    [
        ("stars", "0", "ck_ratings_stars_range"),
        ("stars", "6", "ck_ratings_stars_range"),
        ("comment", "repeat('x', 501)", "ck_ratings_comment_length"),
        ("rater_role", "'admin'", "ck_ratings_rater_role"),
    ],
)
def test_the_database_refuses_what_the_api_refuses(session, now, column, value, constraint):
    rider, driver, booking = _ride(session, now)
    values = {
        "booking_id": str(booking.id),
        "rater_role": "'rider'",
        "rater_id": str(rider.id),
        "ratee_id": str(driver.user_id),
        "stars": "3",
        "comment": "NULL",
        column: value,
    }
    with pytest.raises(IntegrityError, match=constraint), session.begin_nested():
        session.execute(
            text(f"INSERT INTO ratings ({', '.join(values)}) VALUES ({', '.join(values.values())})")
        )


def test_the_database_refuses_a_second_rating_by_the_same_side(session, now):
    rider, driver, booking = _ride(session, now)
    rate(session, booking.id, _as_rider(rider), stars=5, comment=None, window=WEEK)
    with (
        pytest.raises(IntegrityError, match="uq_ratings_booking_rater_role"),
        session.begin_nested(),
    ):
        session.add(
            Rating(
                booking_id=booking.id,
                rater_role="rider",
                rater_id=rider.id,
                ratee_id=driver.user_id,
                stars=1,
            )
        )
        session.flush()


def test_two_ratings_racing_record_one_and_refuse_the_other(settings, committed_sessions, now):
    with committed_sessions.begin() as s:
        rider, driver, booking = _ride(s, now)
        rider_id, driver_id, booking_id = rider.id, driver.user_id, booking.id
    racer_engine = make_engine(settings.database_url, application_name="smartroute-rating-race")
    racer = make_sessionmaker(racer_engine)
    outcome: list[object] = []

    def second() -> None:
        with racer() as s:
            try:
                rate(s, booking_id, Actor(rider_id, Role.RIDER), stars=1, comment=None, window=WEEK)
                s.commit()
                outcome.append("rated")
            except AlreadyRated as exc:
                outcome.append(exc)

    try:
        with committed_sessions() as first:
            rate(first, booking_id, Actor(rider_id, Role.RIDER), stars=5, comment=None, window=WEEK)
            thread = threading.Thread(target=second)
            thread.start()
            # The second insert waits on the first's uncommitted row, then finds it.
            wait_for(
                lambda: waiting_on_locks(committed_sessions.kw["bind"], "smartroute-rating-race"),
                timeout=10,
                what="the second rating to wait on the first",
            )
            first.commit()
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        racer_engine.dispose()
    assert len(outcome) == 1 and isinstance(outcome[0], AlreadyRated)
    with committed_sessions() as s:
        summary = s.get(RatingSummary, driver_id)
        assert (summary.ratings, summary.stars_total) == (1, 5)


def test_the_batch_matcher_weighs_ratings_only_when_its_policy_says_so(session, now):
    from dispatch.eta import GreatCircleEta
    from dispatch.matching.batch import dispatch_region

    rider = make.rider(session)
    near = make.driver(session, make.offset(make.LISBON, north_km=1.0), now=now, name="near")
    far = make.driver(session, make.offset(make.LISBON, north_km=1.3), now=now, name="far")
    session.add_all(
        [
            RatingSummary(user_id=near.user_id, ratings=4, stars_total=8),  # 2.0
            RatingSummary(user_id=far.user_id, ratings=4, stars_total=20),  # 5.0
        ]
    )
    session.flush()
    booking = make.booking(session, rider, now=now)
    with session.begin_nested() as unweighted:
        report = dispatch_region(session, "default", MatchPolicy(), GreatCircleEta(), now=now)
        assert report.offered == {booking.id: near.user_id}
        unweighted.rollback()
    session.expire_all()
    weighted = MatchPolicy(rating_weight_s=300)
    report = dispatch_region(session, "default", weighted, GreatCircleEta(), now=now)
    assert report.offered == {booking.id: far.user_id}
