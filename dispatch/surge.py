"""Surge: each region's price multiplier, from live demand against supply.

Demand is a region's bookings waiting for a driver now plus those booked within the last
``window_s``; supply is its free drivers (``dispatch.matching.policy.free_driver``, the
one definition). The target multiplier is demand over supply, never below ×1 and never
above the cap; with demand and no free driver at all, the cap. Beat recomputes it every
few seconds, and each run moves only ``smoothing_pct`` percent of the way from the stored
level to the target, in steps of ``STEP_PCT``, so one burst does not make prices jump.
Multipliers are whole percentages (150 is ×1.5): a fare never passes through a float.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.db import transaction_now
from dispatch.fares import NO_SURGE_PCT
from dispatch.matching.policy import MatchPolicy, free_driver
from dispatch.models import Booking, Driver, SurgeLevel
from dispatch.regions import Region, region_for, region_names
from dispatch.states import Status

STEP_PCT = 5


@dataclass(frozen=True)
class SurgePolicy:
    cap_pct: int = 300
    smoothing_pct: int = 50
    window_s: int = 600

    def __post_init__(self) -> None:
        if self.cap_pct < NO_SURGE_PCT:
            raise ValueError("the surge cap is at least 100 %")
        if not 1 <= self.smoothing_pct <= 100:
            raise ValueError("smoothing is 1 to 100 % of the way to the target per run")

    def target_pct(self, demand: int, supply: int) -> int:
        """The multiplier demand and supply call for, before smoothing."""
        if demand <= supply:
            return NO_SURGE_PCT
        if supply == 0:
            return self.cap_pct
        ratio_pct = -(-demand * 100 // supply)  # Rounded up: a shortage is never hidden.
        return min(self.cap_pct, ratio_pct)

    def next_pct(self, previous: int, target: int) -> int:
        """``smoothing_pct`` of the way from ``previous`` to ``target``, on the step grid,
        at least one step when they differ, within 100 and the cap."""
        moved = previous + (target - previous) * self.smoothing_pct // 100
        stepped = round(moved / STEP_PCT) * STEP_PCT
        if stepped == previous and target != previous:
            stepped += STEP_PCT if target > previous else -STEP_PCT
            stepped = min(stepped, target) if target > previous else max(stepped, target)
        return max(NO_SURGE_PCT, min(self.cap_pct, stepped))


@dataclass(frozen=True)
class Surge:
    region: str
    multiplier_pct: int
    demand: int
    supply: int
    updated_at: dt.datetime | None

    def as_payload(self) -> dict[str, Any]:
        return {
            "multiplier": self.multiplier_pct / 100,
            "demand": self.demand,
            "supply": self.supply,
            "updated_at": None if self.updated_at is None else self.updated_at.isoformat(),
        }


def demand_by_region(session: Session, now: dt.datetime, window_s: int) -> Counter[str]:
    """Bookings waiting for a driver, plus those booked within ``window_s``, per region."""
    since = now - dt.timedelta(seconds=window_s)
    rows = session.execute(
        select(Booking.region, func.count())
        .where(or_(Booking.status == Status.PENDING.value, Booking.created_at >= since))
        .group_by(Booking.region)
    ).all()
    return Counter({region: count for region, count in rows})


def supply_by_region(
    session: Session, regions: tuple[Region, ...], match: MatchPolicy, now: dt.datetime
) -> Counter[str]:
    """Free drivers per region, by where each one is."""
    located = session.execute(select(Driver.lat, Driver.lng).where(free_driver(match, now)))
    # free_driver requires a location, so neither coordinate is NULL here.
    return Counter(
        region_for(lat, lng, regions) for lat, lng in located if lat is not None and lng is not None
    )


def recompute(
    session: Session, regions: tuple[Region, ...], match: MatchPolicy, policy: SurgePolicy
) -> dict[str, Surge]:
    """Move every region's stored multiplier towards what demand and supply call for now,
    by the database's clock; the caller commits."""
    now = transaction_now(session)
    demand = demand_by_region(session, now, policy.window_s)
    supply = supply_by_region(session, regions, match, now)
    previous = {
        row.region: row.multiplier_pct
        for row in session.execute(select(SurgeLevel).with_for_update()).scalars()
    }
    levels = {}
    for name in region_names(regions):
        target = policy.target_pct(demand[name], supply[name])
        level = policy.next_pct(previous.get(name, NO_SURGE_PCT), target)
        levels[name] = Surge(name, level, demand[name], supply[name], now)
    rows = [
        {
            "region": s.region,
            "multiplier_pct": s.multiplier_pct,
            "demand": s.demand,
            "supply": s.supply,
            "updated_at": now,
        }
        for s in levels.values()
    ]
    statement = pg_insert(SurgeLevel).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[SurgeLevel.region],
            set_={
                "multiplier_pct": statement.excluded.multiplier_pct,
                "demand": statement.excluded.demand,
                "supply": statement.excluded.supply,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )
    return levels


def current_pct(session: Session, region: str) -> int:
    """The region's multiplier as last computed; no surge if beat has not computed one."""
    level = session.scalar(select(SurgeLevel.multiplier_pct).where(SurgeLevel.region == region))
    return NO_SURGE_PCT if level is None else level


def surge_levels(session: Session) -> dict[str, Surge]:
    """Every region's stored surge, for the stats and the metrics."""
    return {
        row.region: Surge(row.region, row.multiplier_pct, row.demand, row.supply, row.updated_at)
        for row in session.execute(select(SurgeLevel).order_by(SurgeLevel.region)).scalars()
    }
