"""Quotes, the price a booking locks, the final fare, surge and local days, against
real PostgreSQL."""

import datetime as dt
import threading

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from dispatch import quotes, surge
from dispatch.bookings.creation import BookingRequest, create_booking
from dispatch.bookings.transitions import driver_action
from dispatch.db import transaction_now
from dispatch.eta import GreatCircleEta
from dispatch.fares import Tariff, divide_half_up
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import MatchPolicy, Outcome
from dispatch.models import Booking, BookingEvent, Quote, SurgeLevel
from dispatch.regions import parse_regions
from dispatch.stats import booking_stats
from tests import factories as make
from tests.support import wait_for, waiting_on_locks

TARIFF = Tariff("EUR", 250, 110, 25, 500, 300, 500)
PRICING = quotes.Pricing(
    tariffs={"default": TARIFF},
    eta=GreatCircleEta(),
    quote_ttl_s=300,
    match=MatchPolicy(),
)
PICKUP = make.LISBON
DROPOFF = make.offset(PICKUP, north_km=3)


def _quote(session, rider, **kwargs):
    return quotes.create_quote(
        session,
        rider.id,
        (PICKUP.lat, PICKUP.lng),
        (DROPOFF.lat, DROPOFF.lng),
        region="default",
        pricing=PRICING,
        **kwargs,
    )


def _book(session, rider, now, quote_id=None, dropoff=DROPOFF, pricing=PRICING, key=None):
    booking, _ = create_booking(
        session,
        rider.id,
        BookingRequest(PICKUP, dropoff, None, quote_id),
        now=now,
        deadline_s=300,
        first_retry_s=5,
        pricing=pricing,
        idempotency_key=key,
    )
    return booking


def test_a_quote_prices_the_trip_and_says_how_near_the_nearest_driver_is(session, now):
    rider = make.rider(session)
    make.driver(session, make.offset(PICKUP, east_km=2), now=now)
    make.driver(session, make.offset(PICKUP, east_km=6), now=now, name="farther")
    quote = _quote(session, rider)
    # 3 km north, stretched by the road factor: ~4.05 km, ~9.7 minutes at 25 km/h.
    assert 4000 < quote.fare.distance_m < 4100
    assert quote.fare.amount == 250 + quote.fare.distance + quote.fare.time
    assert quote.fare.surge_pct == 100
    near = make.offset(PICKUP, east_km=2)
    eta_2km = GreatCircleEta().eta_s(near.lat, near.lng, PICKUP.lat, PICKUP.lng)
    assert quote.pickup_eta_s == pytest.approx(eta_2km, abs=1)
    stored = session.get(Quote, quote.id)
    assert stored.user_id == rider.id and stored.amount == quote.fare.amount
    assert stored.expires_at - stored.created_at == dt.timedelta(seconds=300)


def test_without_a_free_driver_there_is_no_pickup_eta(session, now):
    make.driver(session, make.offset(PICKUP, east_km=1), now=now, available=False)
    assert _quote(session, make.rider(session)).pickup_eta_s is None


def test_a_booking_on_a_quote_locks_its_price(session, now):
    rider = make.rider(session)
    quote = _quote(session, rider)
    # The tariff changes after the quote: the booking keeps the quoted price.
    dearer = quotes.Pricing(
        {"default": Tariff("EUR", 900, 900, 90, 900, 0, 0)}, GreatCircleEta(), 300, MatchPolicy()
    )
    booking = _book(session, rider, now, quote.id, pricing=dearer)
    assert booking.quote_id == quote.id and booking.quoted_fare == quote.fare.amount
    assert booking.fare["amount"] == quote.fare.amount and booking.fare["final"] is False


def test_a_quote_keeps_its_surge_when_the_surge_moves(session, now):
    rider = make.rider(session)
    calm = _quote(session, rider)
    session.add(SurgeLevel(region="default", multiplier_pct=200, demand=4, supply=2))
    session.flush()
    surged = _quote(session, rider)
    assert (calm.fare.surge_pct, surged.fare.surge_pct) == (100, 200)
    assert surged.fare.amount == divide_half_up(calm.fare.amount * 200, 100)
    assert _book(session, rider, now, calm.id).quoted_fare == calm.fare.amount
    # Booked without a quote, the price is made at the surge of the moment.
    assert _book(session, rider, now).quoted_fare == surged.fare.amount


def test_a_booking_without_a_quote_is_priced_when_booked(session, now):
    booking = _book(session, make.rider(session), now)
    assert booking.quote_id is not None and booking.fare_currency == "EUR"
    assert booking.quoted_fare == session.get(Quote, booking.quote_id).amount
    unpriced = _book(session, make.rider(session), now, pricing=None)
    assert unpriced.quote_id is None and unpriced.fare is None


def test_an_expired_quote_is_refused(session, now):
    rider = make.rider(session)
    quote = _quote(session, rider)
    session.execute(
        update(Quote)
        .where(Quote.id == quote.id)
        .values(
            created_at=text("now() - interval '10 minutes'"), expires_at=transaction_now(session)
        )
    )
    with pytest.raises(quotes.QuoteExpired):
        _book(session, rider, now, quote.id)


def test_someone_elses_or_an_unknown_quote_is_not_found(session, now):
    quote = _quote(session, make.rider(session))
    with pytest.raises(quotes.QuoteNotFound):
        _book(session, make.rider(session, "other"), now, quote.id)
    with pytest.raises(quotes.QuoteNotFound):
        _book(session, make.rider(session, "third"), now, 2**62)


def test_a_quote_prices_one_booking_only(session, now):
    rider = make.rider(session)
    quote = _quote(session, rider)
    _book(session, rider, now, quote.id)
    with pytest.raises(quotes.QuoteUsed):
        _book(session, rider, now, quote.id)
    # The database has the last word, whatever code runs.
    other = _book(session, rider, now, pricing=None)
    with pytest.raises(IntegrityError, match="uq_cab_bookings_quote_id"), session.begin_nested():
        session.execute(
            update(Booking)
            .where(Booking.id == other.id)
            .values(quote_id=quote.id, quoted_fare=1, fare_currency="EUR", fare={})
        )


def test_an_idempotent_retry_on_a_quote_gets_the_same_booking(session, now):
    rider = make.rider(session)
    quote = _quote(session, rider)
    first = _book(session, rider, now, quote.id, key="k")
    assert _book(session, rider, now, quote.id, key="k").id == first.id


def test_a_quote_is_for_its_own_trip(session, now):
    rider = make.rider(session)
    quote = _quote(session, rider)
    with pytest.raises(quotes.QuoteMismatch) as refused:
        _book(session, rider, now, quote.id, dropoff=make.offset(PICKUP, north_km=9))
    assert refused.value.details["place"] == "dropoff"


def _completed(session, now, minutes_driven: float):
    rider = make.rider(session)
    make.driver(session, now=now)
    quote = _quote(session, rider)
    booking = _book(session, rider, now, quote.id)
    matched = dispatch_booking(session, booking.id, MatchPolicy(), now)
    assert matched.outcome == Outcome.ASSIGNED
    driver_id = matched.driver_id
    driver_action(session, booking.id, driver_id, "accept", now=now)
    driver_action(session, booking.id, driver_id, "start", now=now)
    # The trip started `minutes_driven` ago by the database's clock.
    session.execute(
        update(BookingEvent)
        .where(BookingEvent.booking_id == booking.id, BookingEvent.to_status == "in_progress")
        .values(created_at=text(f"now() - interval '{minutes_driven * 60} seconds'"))
    )
    done = driver_action(session, booking.id, driver_id, "complete", now=now)
    return quote, done


def test_a_ride_near_its_estimate_pays_the_quote(session, now):
    quote, done = _completed(session, now, minutes_driven=2)
    assert done.final_fare == quote.fare.amount
    assert done.fare["final"] is True and done.fare["measured_amount"] < quote.fare.amount
    row = session.get(Booking, done.id, populate_existing=True)
    assert row.final_fare == quote.fare.amount and row.fare == done.fare
    # The push announcing completion carries the final fare.
    pushed = session.execute(
        text("SELECT payload FROM outbox_events WHERE booking_id = :id ORDER BY id DESC LIMIT 1"),
        {"id": done.id},
    ).scalar_one()
    assert pushed["fare"]["final"] is True and pushed["fare"]["amount"] == done.final_fare


def test_a_ride_far_longer_than_its_estimate_pays_the_measured_fare_capped(session, now):
    quote, done = _completed(session, now, minutes_driven=40)
    measured = done.fare["measured_amount"]
    assert measured > quote.fare.amount * 1.2
    cap = divide_half_up(quote.fare.amount * 150, 100)
    assert done.final_fare == min(measured, cap)
    quote, done = _completed(session, now, minutes_driven=600)
    assert done.final_fare == divide_half_up(quote.fare.amount * 150, 100)


def test_only_a_completed_ride_has_a_final_fare(session, now):
    booking = _book(session, make.rider(session), now)
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(update(Booking).where(Booking.id == booking.id).values(final_fare=100))


def test_fees_come_from_the_terms_the_booking_was_priced_on(session, now):
    booking = _book(session, make.rider(session), now)
    assert quotes.booking_fee(session, booking.id, "cancellation").amount == 300
    assert quotes.booking_fee(session, booking.id, "no_show").amount == 500
    unpriced = _book(session, make.rider(session), now, pricing=None)
    assert quotes.booking_fee(session, unpriced.id, "cancellation") is None


def test_surge_rises_with_demand_and_falls_back_without_it(session, now):
    policy = surge.SurgePolicy(cap_pct=300, smoothing_pct=50, window_s=600)
    make.driver(session, now=now)
    make.driver(session, now=now, name="second")

    def level():
        return surge.recompute(session, (), MatchPolicy(), policy)["default"]

    assert level().multiplier_pct == 100  # two drivers, nobody booking
    riders = [make.rider(session, f"r{i}") for i in range(6)]
    for rider in riders:
        _book(session, rider, now, pricing=None)
    first = level()
    assert (first.demand, first.supply) == (6, 2)
    assert 100 < first.multiplier_pct < 300  # smoothed: part of the way to ×3
    second = level()
    assert first.multiplier_pct < second.multiplier_pct <= 300
    # A quote made now carries the surge.
    assert _quote(session, riders[0]).fare.surge_pct == second.multiplier_pct
    # Demand goes away (the bookings were made long ago and are no longer pending).
    session.execute(
        update(Booking).values(status="expired", created_at=text("now() - interval '1 hour'"))
    )
    falling = [level().multiplier_pct for _ in range(8)]
    assert falling == sorted(falling, reverse=True) and falling[-1] == 100
    assert session.get(SurgeLevel, "default", populate_existing=True).multiplier_pct == 100


def test_surge_counts_each_regions_own_demand_and_drivers(session, now):
    regions = parse_regions("porto:41.0,-8.8,41.3,-8.5")
    policy = surge.SurgePolicy(smoothing_pct=100)
    make.driver(session, now=now)  # in Lisbon: the default region
    rider = make.rider(session)
    create_booking(
        session,
        rider.id,
        BookingRequest(make.Point(41.15, -8.61), make.Point(41.16, -8.61)),
        now=now,
        deadline_s=300,
        first_retry_s=5,
        region="porto",
    )
    levels = surge.recompute(session, regions, MatchPolicy(), policy)
    assert (levels["porto"].demand, levels["porto"].supply) == (1, 0)
    assert levels["porto"].multiplier_pct == 300
    assert levels["default"].multiplier_pct == 100
    stats = booking_stats(session, now=now)
    assert stats["surge"]["porto"]["multiplier"] == 3.0


def test_today_follows_each_regions_local_day(session, now):
    rider = make.rider(session)
    tokyo_noon_utc = dt.datetime(2026, 6, 30, 3, 0, tzinfo=dt.UTC)
    late = dt.datetime(2026, 6, 30, 16, 0, tzinfo=dt.UTC)  # 01:00 on 1 July in Tokyo
    for region, created in (("tokyo", tokyo_noon_utc), ("default", tokyo_noon_utc)):
        booking, _ = create_booking(
            session,
            rider.id,
            BookingRequest(PICKUP, DROPOFF),
            now=created,
            deadline_s=300,
            first_retry_s=5,
            region=region,
        )
    stats = booking_stats(session, now=late, time_zones={"tokyo": "Asia/Tokyo"})
    # Tokyo's day began at 15:00 UTC: its 03:00 UTC booking was yesterday there.
    # The default region keeps UTC: its 03:00 UTC booking is today.
    assert stats["today"]["by_region"]["tokyo"] == {
        "since": "2026-07-01T00:00:00+09:00",
        "total": 0,
    }
    assert stats["today"]["by_region"]["default"]["total"] == 1
    assert stats["today"]["total"] == 1
    same_in_utc = booking_stats(session, now=late)
    assert same_in_utc["today"]["total"] == 2


def test_two_bookings_racing_for_one_quote_get_one_booking(committed_sessions, engine, now):
    with committed_sessions.begin() as s:
        rider = make.rider(s)
        quote = _quote(s, rider)
    results: list[object] = []

    def book() -> None:
        with committed_sessions() as s:
            try:
                with s.begin():
                    results.append(_book(s, rider, now, quote.id).id)
            except quotes.QuoteUsed as exc:
                results.append(exc)

    racers = [threading.Thread(target=book) for _ in range(2)]
    with committed_sessions() as blocker, blocker.begin():
        # Hold the quote's lock until both bookings wait behind it, then let them race.
        blocker.execute(select(Quote).where(Quote.id == quote.id).with_for_update())
        for racer in racers:
            racer.start()
        wait_for(lambda: waiting_on_locks(engine, "smartroute-tests") >= 2, 10, "both waiting")
    for racer in racers:
        racer.join(10)
    assert sorted(type(r).__name__ for r in results) == ["QuoteUsed", "int"]
    with committed_sessions() as s:
        assert s.scalar(select(Booking.id).where(Booking.quote_id == quote.id)) is not None


def test_lapsed_quotes_nobody_booked_are_pruned_and_booked_ones_stay(session, now):
    from dispatch import retention

    rider = make.rider(session)
    unused_old, booked_old, unused_recent = (_quote(session, rider) for _ in range(3))
    _book(session, rider, now, quote_id=booked_old.id)
    for quote_id, age in (
        (unused_old.id, "2 days"),
        (booked_old.id, "2 days"),
        (unused_recent.id, "1 hour"),
    ):
        session.execute(
            text(
                "UPDATE quotes SET created_at = created_at - CAST(:age AS interval), "
                "expires_at = expires_at - CAST(:age AS interval) WHERE id = :id"
            ),
            {"age": age, "id": quote_id},
        )
    assert retention.prune_quotes(session, older_than_s=86400) == 1
    left = set(session.scalars(select(Quote.id)))
    assert unused_old.id not in left
    assert {booked_old.id, unused_recent.id} <= left
    assert retention.prune_quotes(session, older_than_s=86400) == 0
