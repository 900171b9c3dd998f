"""Rebalancing: suggesting where idle drivers should wait for the next bookings.

Zones are the cells of a square grid over a region (``ZoneGrid``, ``cell_km`` a side).

The forecast is an exponentially weighted booking rate per zone: each booking seen within
``lookback_s`` counts ``exp(-age / tau)`` (``tau`` from ``half_life_s``), the sum is divided
by the weights' integral over the look-back (so a steady rate is estimated without bias),
and the rate times ``horizon_s`` is the zone's expected bookings. It says "what happened
here lately, recent minutes weighing most", nothing cleverer, and can be explained as such.

Supply is the idle drivers in each zone. A zone wants as many drivers as it expects
bookings (rounded up); drivers beyond that are its surplus, bookings beyond its drivers
its deficit. Surplus goes to deficit as a transport problem solved by linear programming
(scipy's HiGHS): move as many drivers as the deficits and caps allow, by the least total
drive time between zone centres (``dispatch.eta.CostModel``), never further than
``max_move_km`` and never more than ``max_share`` of the idle drivers in one run (one at
least, or a region with few would never be rebalanced). Each zone-to-zone flow then goes
to the drivers in the surplus zone nearest its target.

``suggest_moves`` is pure, so the live task and the offline replay run the same code;
``recent_bookings`` and ``idle_drivers`` read its inputs from the database.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog
from scipy.sparse import coo_matrix
from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatch.db import transaction_now
from dispatch.eta import CostModel, haversine_matrix_km
from dispatch.geo import KM_PER_DEG_LAT
from dispatch.matching.policy import MatchPolicy, free_driver
from dispatch.models import Booking, Driver
from dispatch.regions import Region, region_for, region_names


@dataclass(frozen=True)
class RebalancePolicy:
    cell_km: float = 1.0
    horizon_s: float = 600.0
    half_life_s: float = 300.0
    lookback_s: float = 1800.0
    max_move_km: float = 6.0
    max_share: float = 0.3

    def __post_init__(self) -> None:
        if min(self.cell_km, self.horizon_s, self.half_life_s, self.lookback_s) <= 0:
            raise ValueError("cell size, horizon, half-life and look-back must be positive")
        if not 0 <= self.max_share <= 1:
            raise ValueError("the share of idle drivers moved is between 0 and 1")


@dataclass(frozen=True)
class ZoneGrid:
    """Square cells of ``cell_km`` from a south-west corner; zone id ``r{row}c{col}``."""

    min_lat: float
    min_lng: float
    cell_km: float
    rows: int
    cols: int

    @property
    def _dlat(self) -> float:
        return self.cell_km / KM_PER_DEG_LAT

    @property
    def _dlng(self) -> float:
        mid_lat = self.min_lat + self.rows * self._dlat / 2
        return self.cell_km / (KM_PER_DEG_LAT * math.cos(math.radians(mid_lat)))

    @classmethod
    def over(
        cls, min_lat: float, min_lng: float, max_lat: float, max_lng: float, cell_km: float
    ) -> ZoneGrid:
        """The grid covering a box."""
        mid_lat = (min_lat + max_lat) / 2
        height_km = (max_lat - min_lat) * KM_PER_DEG_LAT
        width_km = (max_lng - min_lng) * KM_PER_DEG_LAT * math.cos(math.radians(mid_lat))
        # A box a whole number of cells wide is that many cells, not one more for float noise.
        rows, cols = (max(1, math.ceil(km / cell_km - 1e-9)) for km in (height_km, width_km))
        return cls(min_lat, min_lng, cell_km, rows, cols)

    @classmethod
    def for_region(cls, region: Region, cell_km: float) -> ZoneGrid:
        """The grid covering a region's box."""
        return cls.over(region.min_lat, region.min_lng, region.max_lat, region.max_lng, cell_km)

    @classmethod
    def covering(cls, points: Sequence[tuple[float, float]], cell_km: float) -> ZoneGrid | None:
        """A grid over the points (for the region with no box), its corner on whole cells
        counted from the nearest whole degree, so the same area gets the same zones."""
        if not points:
            return None
        lats, lngs = [p[0] for p in points], [p[1] for p in points]
        base_lat, base_lng = math.floor(min(lats)), math.floor(min(lngs))
        dlat = cell_km / KM_PER_DEG_LAT
        dlng = cell_km / (KM_PER_DEG_LAT * math.cos(math.radians(base_lat + 0.5)))
        min_lat = base_lat + math.floor((min(lats) - base_lat) / dlat) * dlat
        min_lng = base_lng + math.floor((min(lngs) - base_lng) / dlng) * dlng
        return cls.over(min_lat, min_lng, max(lats) + 1e-9, max(lngs) + 1e-9, cell_km)

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def index(self, lat: float, lng: float) -> int | None:
        """The zone index holding a point, or None outside the grid."""
        row = math.floor((lat - self.min_lat) / self._dlat)
        col = math.floor((lng - self.min_lng) / self._dlng)
        if 0 <= row < self.rows and 0 <= col < self.cols:
            return row * self.cols + col
        return None

    def zone_id(self, index: int) -> str:
        return f"r{index // self.cols}c{index % self.cols}"

    def centres(self, indices: Sequence[int] | None = None) -> npt.NDArray[np.float64]:
        """The centres of the zones ``indices`` (default: every zone) as (lat, lng) rows."""
        chosen = np.arange(self.size) if indices is None else np.asarray(indices, dtype=np.int64)
        rows, cols = np.divmod(chosen, self.cols)
        lat = self.min_lat + (rows + 0.5) * self._dlat
        lng = self.min_lng + (cols + 0.5) * self._dlng
        return np.column_stack([lat, lng]).astype(float).reshape(-1, 2)


@dataclass(frozen=True)
class SeenBooking:
    """A booking's pickup and how many seconds ago it was made."""

    lat: float
    lng: float
    age_s: float


@dataclass(frozen=True)
class IdleDriver:
    id: int
    lat: float
    lng: float
    # False for a driver already on its way to a suggestion: counted, not moved again.
    movable: bool = True


@dataclass(frozen=True)
class Move:
    driver_id: int
    zone: str
    lat: float
    lng: float
    eta_s: float
    reason: str


def forecast(
    grid: ZoneGrid,
    bookings: Sequence[SeenBooking],
    policy: RebalancePolicy,
    observed_s: float | None = None,
) -> dict[int, float]:
    """Expected bookings over the next ``policy.horizon_s`` for each zone that saw a booking
    (the module's model); ``observed_s``: how long bookings have been watched, when shorter
    than the look-back. Zones without one expect none and are left out: a region's grid may
    be large, the zones with bookings are few."""
    tau = policy.half_life_s / math.log(2)
    span = policy.lookback_s if observed_s is None else min(policy.lookback_s, observed_s)
    per_weight = policy.horizon_s / (tau * (1 - math.exp(-span / tau)))
    expected: dict[int, float] = {}
    for b in bookings:
        zone = grid.index(b.lat, b.lng)
        if zone is not None and 0 <= b.age_s <= span:
            expected[zone] = expected.get(zone, 0.0) + math.exp(-b.age_s / tau) * per_weight
    return expected


def _transport(
    surplus: npt.NDArray[np.int64],
    deficit: npt.NDArray[np.int64],
    cost_s: npt.NDArray[np.float64],
    allowed: npt.NDArray[np.bool_],
    limit: int,
    pressure: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    """Drivers to send from each surplus zone (rows) to each deficit zone (columns): as many
    as possible up to ``limit``, then the least total cost; only where ``allowed``. Between
    moves as near, the deficit zone with the higher ``pressure`` is served first."""
    pairs = np.argwhere(allowed)
    flows = np.zeros(cost_s.shape, dtype=np.int64)
    if limit <= 0 or pairs.size == 0:
        return flows
    # Each move earns more than any allowed drive costs, so the solver first moves as many
    # drivers as it can, and among as many, the nearest. Zone centres sit on a lattice, so
    # equal drive times are common: a sub-second nudge settles them by pressure, rather
    # than by whichever optimum the solver happens to reach.
    bonus = float(cost_s[allowed].max()) + 1.0
    nudge = 0.5 * pressure / max(float(pressure.max()), 1e-9)
    c = cost_s[allowed] - bonus - nudge[pairs[:, 1]]
    n, n_rows, n_cols = len(pairs), cost_s.shape[0], cost_s.shape[1]
    # One constraint per surplus zone, one per deficit zone, and the share cap; each pair
    # appears in three, so the matrix is sparse.
    columns = np.tile(np.arange(n), 3)
    constraint = np.concatenate([pairs[:, 0], n_rows + pairs[:, 1], np.full(n, n_rows + n_cols)])
    a_ub = coo_matrix((np.ones(3 * n), (constraint, columns)), shape=(n_rows + n_cols + 1, n))
    b_ub = np.concatenate([surplus, deficit, [limit]]).astype(float)
    result = linprog(c, A_ub=a_ub.tocsr(), b_ub=b_ub, bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"the transport problem did not solve: {result.message}")
    # A transport problem with integer supplies and demands has an integer optimum at a
    # vertex, which is what HiGHS's simplex returns; rounding only removes float noise.
    flows[pairs[:, 0], pairs[:, 1]] = np.rint(result.x).astype(np.int64)
    return flows


def suggest_moves(
    grid: ZoneGrid,
    bookings: Sequence[SeenBooking],
    drivers: Sequence[IdleDriver],
    cost: CostModel,
    policy: RebalancePolicy,
    observed_s: float | None = None,
) -> list[Move]:
    """Which idle drivers should drive to which zone, and why (the module's model)."""
    expected = forecast(grid, bookings, policy, observed_s)
    supply: dict[int, int] = {}
    movable: dict[int, list[IdleDriver]] = {}
    for d in drivers:
        zone = grid.index(d.lat, d.lng)
        if zone is None:
            continue
        supply[zone] = supply.get(zone, 0) + 1
        if d.movable:
            movable.setdefault(zone, []).append(d)
    wanted = {zone: math.ceil(e - 1e-9) for zone, e in expected.items()}
    sources = sorted(
        z for z, ds in movable.items() if min(len(ds), supply[z] - wanted.get(z, 0)) > 0
    )
    targets = sorted(z for z, w in wanted.items() if w > supply.get(z, 0))
    limit = max(1, math.floor(policy.max_share * len(drivers))) if policy.max_share else 0
    if not sources or not targets or limit <= 0:
        return []
    surplus = np.array(
        [min(len(movable[z]), supply[z] - wanted.get(z, 0)) for z in sources], dtype=np.int64
    )
    deficit = np.array([wanted[z] - supply.get(z, 0) for z in targets], dtype=np.int64)
    source_centres, target_centres = grid.centres(sources), grid.centres(targets)
    km = haversine_matrix_km(source_centres, target_centres)
    cost_s = cost.eta_matrix(source_centres, target_centres)
    # Expected bookings per driver already there (plus one): how short the zone is.
    pressure = np.array([expected[z] / (supply.get(z, 0) + 1) for z in targets])
    flows = _transport(surplus, deficit, cost_s, km <= policy.max_move_km, limit, pressure)
    horizon_min = policy.horizon_s / 60
    moves = []
    for si, ti in np.argwhere(flows > 0):
        source, target = sources[si], targets[ti]
        lat, lng = (float(v) for v in target_centres[ti])
        candidates = movable[source]
        etas = cost.eta_matrix(
            np.array([[d.lat, d.lng] for d in candidates]), np.array([[lat, lng]])
        )[:, 0]
        chosen = set(np.argsort(etas, kind="stable")[: int(flows[si, ti])].tolist())
        zone_id, there = grid.zone_id(target), supply.get(target, 0)
        reason = (
            f"zone {zone_id} expects {expected[target]:.1f} bookings in the next "
            f"{horizon_min:g} min, {there} idle driver{'' if there == 1 else 's'} there"
        )
        moves += [
            Move(d.id, zone_id, lat, lng, float(etas[k]), reason)
            for k, d in enumerate(candidates)
            if k in chosen
        ]
        movable[source] = [d for k, d in enumerate(candidates) if k not in chosen]
    return moves


def recent_bookings(
    session: Session, now: dt.datetime, region: str, lookback_s: float
) -> list[SeenBooking]:
    """The region's bookings made within ``lookback_s`` of ``now``, as the forecast sees them."""
    since = now - dt.timedelta(seconds=lookback_s)
    rows = session.execute(
        select(Booking.pickup_lat, Booking.pickup_lng, Booking.created_at).where(
            Booking.region == region, Booking.created_at >= since
        )
    ).all()
    # A booking committed after this transaction began is as new as one can be.
    return [
        SeenBooking(lat, lng, max(0.0, (now - created).total_seconds()))
        for lat, lng, created in rows
    ]


def idle_drivers(session: Session, match: MatchPolicy, now: dt.datetime) -> list[IdleDriver]:
    """Free drivers (``free_driver``, the one definition), by id."""
    located = session.execute(
        select(Driver.user_id, Driver.lat, Driver.lng)
        .where(free_driver(match, now))
        .order_by(Driver.user_id)
    ).all()
    # free_driver requires a location, so neither coordinate is NULL here.
    return [
        IdleDriver(user_id, lat, lng)
        for user_id, lat, lng in located
        if lat is not None and lng is not None
    ]


def plan(
    session: Session,
    regions: tuple[Region, ...],
    match: MatchPolicy,
    cost: CostModel,
    policy: RebalancePolicy,
    told: Collection[int] = frozenset(),
) -> dict[str, list[Move]]:
    """Each region's moves, from its recent bookings and idle drivers by the database's
    clock; the region with no box gets a grid over its own points. Drivers in ``told``
    (already on their way to a suggestion) count where they are and are not moved. Reads
    only."""
    now = transaction_now(session)
    drivers = [
        replace(d, movable=False) if d.id in told else d for d in idle_drivers(session, match, now)
    ]
    by_region: dict[str, list[IdleDriver]] = {}
    for d in drivers:
        by_region.setdefault(region_for(d.lat, d.lng, regions), []).append(d)
    plans: dict[str, list[Move]] = {}
    for name in region_names(regions):
        seen = recent_bookings(session, now, name, policy.lookback_s)
        here = by_region.get(name, [])
        box = next((r for r in regions if r.name == name), None)
        grid = (
            ZoneGrid.for_region(box, policy.cell_km)
            if box is not None
            else ZoneGrid.covering(
                [(d.lat, d.lng) for d in here] + [(b.lat, b.lng) for b in seen], policy.cell_km
            )
        )
        if grid is not None and here and seen:
            plans[name] = suggest_moves(grid, seen, here, cost, policy)
    return plans
