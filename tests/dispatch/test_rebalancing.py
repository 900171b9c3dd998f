"""Rebalancing's readers and plan on real Postgres: which bookings inform the forecast,
which drivers count as idle, and the moves a region gets."""

import datetime as dt

from sqlalchemy import update

from dispatch.eta import GreatCircleEta
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Driver
from dispatch.rebalancing import RebalancePolicy, ZoneGrid, idle_drivers, plan, recent_bookings
from dispatch.regions import parse_regions
from dispatch.states import DriverStatus
from tests import factories as make

MATCH = MatchPolicy()
COST = GreatCircleEta()
POLICY = RebalancePolicy(max_share=1.0)


def test_recent_bookings_are_the_regions_own_within_the_look_back(session, now):
    rider = make.rider(session)
    make.booking(session, rider, now=now - dt.timedelta(seconds=120))
    make.booking(session, rider, now=now - dt.timedelta(seconds=POLICY.lookback_s + 60))
    seen = recent_bookings(session, now, "default", POLICY.lookback_s)
    assert [round(b.age_s) for b in seen] == [120]
    assert (seen[0].lat, seen[0].lng) == (make.LISBON.lat, make.LISBON.lng)
    assert recent_bookings(session, now, "porto", POLICY.lookback_s) == []


def test_idle_drivers_are_the_free_ones_only(session, now):
    free = make.driver(session, now=now, name="free")
    make.driver(session, now=now, available=False, name="offline")
    make.driver(session, now=now - dt.timedelta(seconds=MATCH.driver_stale_s + 1), name="stale")
    busy = make.driver(session, now=now, name="busy")
    session.execute(
        update(Driver).where(Driver.user_id == busy.user_id).values(status=DriverStatus.BUSY.value)
    )
    assert [d.id for d in idle_drivers(session, MATCH, now)] == [free.user_id]


def test_a_region_with_demand_and_idle_drivers_elsewhere_gets_moves_toward_it(session):
    now = dt.datetime.now(dt.UTC)
    rider = make.rider(session)
    for _ in range(6):
        make.booking(session, rider, make.LISBON, now=now)
    east = make.offset(make.LISBON, east_km=1.5)
    drivers = [make.driver(session, east, now=now, name=f"d{i}") for i in range(3)]
    # A region's box far from Lisbon: its drivers and bookings are not Lisbon's.
    regions = parse_regions("porto:41.0,-8.8,41.3,-8.5")
    moves = plan(session, regions, MATCH, COST, POLICY)
    assert set(moves) == {"default"}
    assert {m.driver_id for m in moves["default"]} == {d.user_id for d in drivers}
    grid = ZoneGrid.covering([(p.lat, p.lng) for p in (make.LISBON, east)], POLICY.cell_km)
    assert grid is not None
    target = grid.index(make.LISBON.lat, make.LISBON.lng)
    assert {m.zone for m in moves["default"]} == {grid.zone_id(target)}
    assert "0 idle drivers there" in moves["default"][0].reason


def test_drivers_already_told_stay_put(session):
    now = dt.datetime.now(dt.UTC)
    rider = make.rider(session)
    for _ in range(6):
        make.booking(session, rider, make.LISBON, now=now)
    east = make.offset(make.LISBON, east_km=1.5)
    told = make.driver(session, east, now=now, name="told")
    fresh = make.driver(session, east, now=now, name="fresh")
    moves = plan(session, (), MATCH, COST, POLICY, told={told.user_id})
    assert [m.driver_id for m in moves["default"]] == [fresh.user_id]
