"""Live batched matching on real Postgres: claims, competition, exclusions, the log."""

import datetime as dt
import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from dispatch.eta import GreatCircleEta
from dispatch.matching.batch import dispatch_region
from dispatch.matching.log import entries_for
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Booking, Decline
from dispatch.regions import parse_regions, region_for
from tests import factories as make

POLICY = MatchPolicy(radius_km=5, candidates=10)
COST = GreatCircleEta()


def test_a_batch_offers_each_booking_its_share_of_the_optimum(session, now):
    # Nearest-first would give the first rider the middle driver and strand the second.
    rider = make.rider(session)
    a = make.booking(session, rider, make.LISBON, now=now)
    b = make.booking(session, rider, make.offset(make.LISBON, north_km=2), now=now)
    middle = make.driver(session, make.offset(make.LISBON, north_km=1), now=now, name="middle")
    south = make.driver(session, make.offset(make.LISBON, north_km=-1.1), now=now, name="south")
    outcome = dispatch_region(session, "default", POLICY, COST, now=now)
    assert outcome.offered == {a.id: south.user_id, b.id: middle.user_id}
    assert (a.status, b.status) == ("assigned", "assigned")
    log = entries_for(session, a.id)[0]
    assert log["matcher"] == "batched" and log["outcome"] == "assigned" and log["batch_size"] == 2
    reasons = {c["driver_id"]: c["reason"] for c in log["candidates"]}
    assert reasons[south.user_id] == "offered"
    assert reasons[middle.user_id].startswith(f"offered to booking {b.id} in the same batch")


def test_stale_and_declined_drivers_are_never_offered(session, now):
    rider = make.rider(session)
    booking = make.booking(session, rider, now=now)
    stale = make.driver(
        session, now=now - dt.timedelta(seconds=POLICY.driver_stale_s + 1), name="stale"
    )
    declined = make.driver(session, make.offset(make.LISBON, east_km=0.2), now=now, name="no")
    session.add(Decline(booking_id=booking.id, driver_id=declined.user_id, reason="declined"))
    fresh = make.driver(session, make.offset(make.LISBON, east_km=3), now=now, name="fresh")
    outcome = dispatch_region(session, "default", POLICY, COST, now=now)
    assert outcome.offered == {booking.id: fresh.user_id}
    log = entries_for(session, booking.id)[0]
    assert log["excluded"]["declined"] == [declined.user_id]
    assert stale.user_id not in {c["driver_id"] for c in log["candidates"]}


def test_unmatched_bookings_wait_and_search_wider_next_time(session, now):
    booking = make.booking(session, make.rider(session), now=now)
    far = make.driver(session, make.offset(make.LISBON, north_km=6), now=now)
    assert dispatch_region(session, "default", POLICY, COST, now=now).unmatched == [booking.id]
    assert booking.match_attempts == 1
    # The second attempt searches 7.5 km: the driver 6 km away is now in reach.
    later = now + dt.timedelta(seconds=1)
    assert dispatch_region(session, "default", POLICY, COST, now=later).offered == {
        booking.id: far.user_id
    }
    assert [e["radius_km"] for e in entries_for(session, booking.id)] == [5.0, 7.5]


def test_a_batch_takes_the_oldest_bookings_its_free_drivers_could_serve(session, now):
    policy = MatchPolicy(radius_km=5, candidates=10, bookings_per_free_driver=2, batch_floor=3)
    rider = make.rider(session)
    # Twelve riders wait, the oldest first; two drivers are free and one is offline.
    waiting = [
        make.booking(session, rider, now=now - dt.timedelta(seconds=12 - i)).id for i in range(12)
    ]
    free = {make.driver(session, now=now, name=f"free{i}").user_id for i in range(2)}
    make.driver(session, now=now, available=False, name="offline")
    outcome = dispatch_region(session, "default", policy, COST, now=now)
    taken = set(outcome.offered) | set(outcome.unmatched)
    assert taken == set(waiting[:4]), "two bookings per free driver, the oldest"
    assert set(outcome.offered.values()) == free
    assert outcome.left_waiting == 8 and not outcome.full
    # The rest were not tried: no attempt counted, nothing logged.
    untried = session.scalars(select(Booking).where(Booking.id.in_(waiting[4:]))).all()
    assert [b.match_attempts for b in untried] == [0] * 8
    assert all(entries_for(session, b.id) == [] for b in untried)
    # Those two had drivers in reach, given to others: they are due again at once, behind
    # the bookings that fell due before them. With no driver free a batch takes its floor.
    outbid = session.scalars(select(Booking).where(Booking.id.in_(outcome.unmatched))).all()
    assert [b.next_attempt_at for b in outbid] == [now, now]
    again = dispatch_region(session, "default", policy, COST, now=now)
    assert again.unmatched == waiting[4:7] and again.left_waiting == 7


def test_bookings_nobody_can_reach_do_not_hold_the_batch_while_drivers_idle(session, now):
    policy = MatchPolicy(radius_km=5, candidates=10, bookings_per_free_driver=2, batch_floor=2)
    rider = make.rider(session)
    suburb = make.offset(make.LISBON, north_km=60)  # Beyond the widest search.
    far = [
        make.booking(session, rider, suburb, now=now - dt.timedelta(seconds=10 - i)).id
        for i in range(3)
    ]
    near = make.booking(session, rider, now=now - dt.timedelta(seconds=1))
    driver = make.driver(session, now=now)
    first = dispatch_region(session, "default", policy, COST, now=now)
    assert first.unmatched == far[:2] and first.offered == {}
    second = dispatch_region(session, "default", policy, COST, now=now)
    assert second.offered == {near.id: driver.user_id} and second.unmatched == far[2:]


def test_a_batch_only_takes_its_own_region(session, now):
    regions = parse_regions("porto:41.0,-8.8,41.3,-8.5")
    assert region_for(41.15, -8.6, regions) == "porto"
    assert region_for(make.LISBON.lat, make.LISBON.lng, regions) == "default"
    rider = make.rider(session)
    lisbon = make.booking(session, rider, now=now)
    make.driver(session, now=now)
    outcome = dispatch_region(session, "porto", POLICY, COST, now=now)
    assert outcome.offered == {} and lisbon.status == "pending"
    assert dispatch_region(session, "default", POLICY, COST, now=now).offered.keys() == {lisbon.id}


def test_two_concurrent_batches_never_share_a_driver(engine, committed_sessions, now):
    with committed_sessions.begin() as s:
        rider = make.rider(s)
        ids = [make.booking(s, rider, now=now).id for _ in range(6)]
        drivers = [
            make.driver(s, make.offset(make.LISBON, east_km=0.1 * i), now=now, name=f"d{i}").user_id
            for i in range(3)
        ]
    # Hold the first batch open until the second has taken its bookings and tried to claim,
    # so the two really compete for the same three drivers.
    first, second = Session(engine), Session(engine)
    results = {}
    try:
        results["first"] = dispatch_region(first, "default", POLICY, COST, now=now, limit=3)
        racer = threading.Thread(
            target=lambda: results.__setitem__(
                "second", dispatch_region(second, "default", POLICY, COST, now=now, limit=3)
            )
        )
        racer.start()
        # The second batch skips the first's locked bookings and blocks on a driver claim.
        with engine.connect() as probe:
            for _ in range(100):
                waiting = probe.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                )
                probe.rollback()
                if waiting:
                    break
                racer.join(0.05)
        first.commit()
        racer.join(10)
        second.commit()
    finally:
        first.close()
        second.close()
    offered = {**results["first"].offered, **results["second"].offered}
    assert sorted(offered.values()) == sorted(drivers)  # Each driver once.
    assert results["second"].lost, "the second batch should have lost claims"
    assert set(results["first"].offered) | set(results["second"].lost) | set(
        results["second"].offered
    ) <= set(ids)
    with committed_sessions() as s:
        lost = s.execute(select(Booking).where(Booking.id.in_(results["second"].lost))).scalars()
        # The losers wait to go round again at once; the winners' offers stand.
        assert {(b.status, b.next_attempt_at == now) for b in lost} == {("pending", True)}


@pytest.fixture
def index(settings):
    import redis

    from smartroute.infra.driver_index import KEY, PRESENCE_KEY, RedisDriverIndex

    client = redis.Redis.from_url(settings.redis_url)
    client.delete(KEY, PRESENCE_KEY)
    try:
        yield RedisDriverIndex(client)
    finally:
        client.delete(KEY, PRESENCE_KEY)
        client.close()


def test_the_index_narrows_the_search_and_postgres_decides_who_is_free(session, now, index):
    from smartroute.infra.driver_index import KEY

    rider = make.rider(session)
    booking = make.booking(session, rider, now=now)
    near = make.offset(make.LISBON, east_km=0.05)
    offline = make.driver(session, near, now=now, available=False, name="offline")
    unindexed = make.driver(session, make.offset(make.LISBON, east_km=0.1), now=now)
    indexed = make.driver(session, make.offset(make.LISBON, east_km=0.5), now=now)
    far = make.driver(session, make.offset(make.LISBON, east_km=30), now=now, name="far")
    for d in (offline, indexed, far):
        index.update(d.user_id, d.lat, d.lng)
    assert index.near_any([(make.LISBON.lat, make.LISBON.lng, 5.0)]) == {
        offline.user_id,
        indexed.user_id,
    }
    outcome = dispatch_region(session, "default", POLICY, COST, now=now, locator=index)
    assert outcome.offered == {booking.id: indexed.user_id}

    # No index at all (Redis restarted empty): PostgreSQL alone finds the nearest.
    index.client.delete(KEY)
    second = make.booking(session, rider, now=now)
    outcome = dispatch_region(session, "default", POLICY, COST, now=now, locator=index)
    assert outcome.offered == {second.id: unindexed.user_id}


def indexed_drivers(session, index, now, kms, *, available=True):
    """Drivers east of Lisbon at these distances, each in the index."""
    drivers = []
    for km in kms:
        d = make.driver(session, make.offset(make.LISBON, east_km=km), now=now, available=available)
        index.update(d.user_id, d.lat, d.lng)
        drivers.append(d)
    return drivers


def test_in_a_big_fleet_a_batch_reads_each_bookings_nearest_and_chooses_as_among_all(
    session, now, index
):
    policy = MatchPolicy(radius_km=5, candidates=3)
    fleet = indexed_drivers(session, index, now, [0.1 * (i + 1) for i in range(40)])
    rider = make.rider(session)
    booking = make.booking(session, rider, make.offset(make.LISBON, east_km=1.02), now=now)
    outcome = dispatch_region(session, "default", policy, COST, now=now, locator=index)
    nearest = min(fleet, key=lambda d: abs(d.lng - booking.pickup_lng))
    assert outcome.offered == {booking.id: nearest.user_id}
    # Twice the three candidates a lone booking needs, of the forty within its radius.
    assert outcome.free_drivers == 6
    assert entries_for(session, booking.id)[0]["excluded"]["free_drivers_seen"] == 6


def test_a_booking_whose_nearest_are_busy_gets_everyone_within_its_radius(session, now, index):
    policy = MatchPolicy(radius_km=5, candidates=3)
    indexed_drivers(session, index, now, [0.1 * (i + 1) for i in range(8)], available=False)
    (free,) = indexed_drivers(session, index, now, [4.0])
    booking = make.booking(session, make.rider(session), now=now)
    outcome = dispatch_region(session, "default", policy, COST, now=now, locator=index)
    assert outcome.offered == {booking.id: free.user_id}


def test_drivers_planted_in_the_index_cannot_hide_a_free_one(session, now, index):
    """Someone who can write to Redis fills a pickup's nearest with ids PostgreSQL knows
    nothing of: the booking searches its whole radius and still gets the free driver."""
    policy = MatchPolicy(radius_km=5, candidates=3)
    for planted in range(10_000_000, 10_000_020):
        index.update(planted, make.LISBON.lat, make.LISBON.lng + 0.0001)
    (free,) = indexed_drivers(session, index, now, [3.0])
    booking = make.booking(session, make.rider(session), now=now)
    outcome = dispatch_region(session, "default", policy, COST, now=now, locator=index)
    assert outcome.offered == {booking.id: free.user_id}
