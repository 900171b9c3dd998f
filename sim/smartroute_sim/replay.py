"""A seeded synthetic city for comparing matchers: the same riders and drivers, replayed
offline through the domain's matchers (``smartroute bench matching``), no engine running.

Riders appear in hotspots every window; a matched driver drives to the pickup, carries
the rider to the dropoff and is free again there. Everything random is drawn up front
from the seed, so each matcher replays exactly the same city.

Drives are compressed in time (``time_compression``): a 400-driver city then turns
over fast enough to reach a peak's batch sizes, with about as many riders as free
drivers each window, in a couple of minutes of simulated dispatch.

``replay`` runs one batch per window. ``replay_windowed`` runs the same city on a
continuous clock (each rider arrives at a seeded moment inside its window) with batches
timed by a ``WindowPolicy``, fixed or adaptive, as the live engine times them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dispatch.eta import CostModel, GreatCircleEta
from dispatch.geo import KM_PER_DEG_LAT
from dispatch.matching.solver import BatchResult, FreeDriver, Request, nearest_first, solve_batch
from dispatch.matching.window import Pressure, WindowPolicy
from dispatch.rebalancing import IdleDriver, RebalancePolicy, SeenBooking, ZoneGrid, suggest_moves

ORIGIN = (38.70, -9.20)  # South-west corner of the city (Lisbon's latitude).


@dataclass(frozen=True)
class City:
    seed: int = 1
    size_km: float = 12.0
    drivers: int = 400
    windows: int = 90
    window_s: float = 2.0
    riders_per_window: int = 20
    trip_s: tuple[float, float] = (300.0, 900.0)
    time_compression: float = 20.0
    max_wait_windows: int = 5
    max_pickup_eta_s: float = 1200.0
    hotspots: int = 6


@dataclass(frozen=True)
class Ride:
    id: int
    window: int
    lat: float
    lng: float
    dropoff_lat: float
    dropoff_lng: float
    trip_s: float


@dataclass
class Outcome:
    pickup_etas_s: list[float]
    requested: int
    solve_time_s: float
    batches: int

    def summary(self) -> dict:
        etas = np.array(self.pickup_etas_s or [0.0])
        return {
            "mean_pickup_eta_s": round(float(etas.mean()), 2),
            "p95_pickup_eta_s": round(float(np.percentile(etas, 95)), 2),
            "match_rate": round(len(self.pickup_etas_s) / max(1, self.requested), 4),
            "solve_time_s": round(self.solve_time_s, 4),
            "matched": len(self.pickup_etas_s),
            "requested": self.requested,
        }


def _to_latlng(x_km: np.ndarray, y_km: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = ORIGIN[0] + y_km / KM_PER_DEG_LAT
    lng = ORIGIN[1] + x_km / (KM_PER_DEG_LAT * math.cos(math.radians(ORIGIN[0])))
    return lat, lng


def generate(city: City) -> tuple[list[FreeDriver], list[Ride]]:
    """The city's drivers (spread evenly) and riders (around hotspots), from the seed."""
    rng = np.random.default_rng(city.seed)
    dx, dy = rng.uniform(0, city.size_km, (2, city.drivers))
    dlat, dlng = _to_latlng(dx, dy)
    drivers = [
        FreeDriver(i, float(a), float(b)) for i, (a, b) in enumerate(zip(dlat, dlng, strict=True))
    ]
    centres = rng.uniform(0.15 * city.size_km, 0.85 * city.size_km, (city.hotspots, 2))
    rides, next_id = [], 0
    for window in range(city.windows):
        n = rng.poisson(city.riders_per_window)
        spot = centres[rng.integers(0, city.hotspots, n)]
        pickup = np.clip(spot + rng.normal(0, 1.0, (n, 2)), 0, city.size_km)
        dropoff = rng.uniform(0, city.size_km, (n, 2))
        plat, plng = _to_latlng(pickup[:, 0], pickup[:, 1])
        qlat, qlng = _to_latlng(dropoff[:, 0], dropoff[:, 1])
        trips = rng.uniform(*city.trip_s, n)
        for i in range(n):
            rides.append(
                Ride(
                    next_id,
                    window,
                    float(plat[i]),
                    float(plng[i]),
                    float(qlat[i]),
                    float(qlng[i]),
                    float(trips[i]),
                )
            )
            next_id += 1
    return drivers, rides


Matcher = Callable[[list[Request], list[FreeDriver], CostModel, float], BatchResult]


def batched(k: int | None = 10) -> Matcher:
    def match(requests, drivers, cost, max_eta_s):
        return solve_batch(requests, drivers, cost, k=k, max_eta_s=max_eta_s)

    return match


def nearest(requests, drivers, cost, max_eta_s) -> BatchResult:
    return nearest_first(requests, drivers, cost, max_eta_s=max_eta_s)


@dataclass(frozen=True)
class Drive:
    """An idle driver on the way to a suggested zone, still free to be matched."""

    start: tuple[float, float]
    target: tuple[float, float]
    since: float  # In windows.
    until: float

    def at(self, window: float) -> tuple[float, float]:
        share = min(1.0, (window - self.since) / max(self.until - self.since, 1e-9))
        return (
            self.start[0] + (self.target[0] - self.start[0]) * share,
            self.start[1] + (self.target[1] - self.start[1]) * share,
        )


def city_grid(city: City, cell_km: float) -> ZoneGrid:
    lat, lng = _to_latlng(np.array([0.0, city.size_km]), np.array([0.0, city.size_km]))
    return ZoneGrid.over(float(lat[0]), float(lng[0]), float(lat[1]), float(lng[1]), cell_km)


def replay(
    city: City,
    matcher: Matcher,
    cost: CostModel | None = None,
    on_window: Callable[[], None] | None = None,
    rebalance: RebalancePolicy | None = None,
) -> Outcome:
    """Run the city window by window with ``matcher`` deciding every batch; with
    ``rebalance``, after each batch the drivers left idle are sent toward the zones it
    suggests from the bookings seen so far (never later ones), and stay free on the way."""
    cost = cost or GreatCircleEta()
    drivers, rides = generate(city)
    position = {d.id: (d.lat, d.lng) for d in drivers}
    drives: dict[int, Drive] = {}
    # Drive times are in the city's seconds: a window is this many of them.
    city_s = city.window_s * city.time_compression
    grid = city_grid(city, rebalance.cell_km) if rebalance else None
    free_at = dict.fromkeys(position, 0.0)  # In windows; fractional for pickup drives.
    idle_since = dict.fromkeys(position, 0)
    by_window: dict[int, list[Ride]] = {}
    for ride in rides:
        by_window.setdefault(ride.window, []).append(ride)
    waiting: list[Ride] = []
    outcome = Outcome([], len(rides), 0.0, 0)
    for window in range(city.windows):
        waiting = [r for r in waiting if window - r.window < city.max_wait_windows]
        waiting += by_window.get(window, [])
        for d, drive in list(drives.items()):
            position[d] = drive.at(window)
            if window >= drive.until:
                del drives[d]
        free = [
            FreeDriver(d, *position[d], idle_s=(window - idle_since[d]) * city.window_s)
            for d, t in free_at.items()
            if t <= window
        ]
        requests = [Request(r.id, r.lat, r.lng) for r in waiting]
        started = time.perf_counter()
        result = matcher(requests, free, cost, city.max_pickup_eta_s)
        outcome.solve_time_s += time.perf_counter() - started
        outcome.batches += 1
        ride_by_id = {r.id: r for r in waiting}
        for a in result.assignments:
            ride = ride_by_id.pop(a.booking_id)
            outcome.pickup_etas_s.append(a.eta_s)
            busy_s = (a.eta_s + ride.trip_s) / city.time_compression
            free_at[a.driver_id] = window + busy_s / city.window_s
            idle_since[a.driver_id] = math.ceil(free_at[a.driver_id])
            position[a.driver_id] = (ride.dropoff_lat, ride.dropoff_lng)
            drives.pop(a.driver_id, None)
        waiting = list(ride_by_id.values())
        if rebalance is not None and grid is not None:
            started = time.perf_counter()
            taken = {a.driver_id for a in result.assignments}
            idle = [
                IdleDriver(d.id, *drives[d.id].target, movable=False)
                if d.id in drives
                else IdleDriver(d.id, d.lat, d.lng)
                for d in free
                if d.id not in taken
            ]
            lookback = rebalance.lookback_s / city_s
            seen = [
                SeenBooking(r.lat, r.lng, (window - r.window) * city_s)
                for w in range(max(0, window - math.ceil(lookback)), window + 1)
                for r in by_window.get(w, [])
            ]
            # The replay has watched bookings since its first window, and no longer.
            observed_s = (window + 1) * city_s
            for move in suggest_moves(grid, seen, idle, cost, rebalance, observed_s):
                start = position[move.driver_id]
                drives[move.driver_id] = Drive(
                    start, (move.lat, move.lng), window, window + move.eta_s / city_s
                )
            outcome.solve_time_s += time.perf_counter() - started
        if on_window is not None:
            on_window()
    return outcome


def arrivals_s(city: City, rides: list[Ride]) -> list[float]:
    """Each ride's arrival in replay seconds: a uniform offset inside its window, drawn from
    a generator of its own (seeded from the city's), so the city itself is unchanged."""
    offsets = np.random.default_rng([city.seed, 1]).uniform(0, city.window_s, len(rides))
    return [r.window * city.window_s + float(o) for r, o in zip(rides, offsets, strict=True)]


@dataclass
class WindowedOutcome(Outcome):
    batch_waits_s: list[float]  # Each matched ride's wait from arrival to its batch.
    windows_s: list[float]  # The window each ride arrived into (its first batch waited).

    def summary(self) -> dict:
        waits = np.array(self.batch_waits_s or [0.0])
        windows = np.array(self.windows_s or [0.0])
        return super().summary() | {
            "batches": self.batches,
            "mean_batch_wait_s": round(float(waits.mean()), 4),
            "mean_window_s": round(float(windows.mean()), 4),
        }


def replay_windowed(
    city: City,
    matcher: Matcher,
    window: WindowPolicy,
    cost: CostModel | None = None,
) -> WindowedOutcome:
    """Run the city on a continuous clock, batches timed by ``window`` as the live engine
    times them: a ride arriving when no batch is due asks for one a window later, and
    while riders are left waiting after a batch, the next follows a window later. Each
    batch sets the next window from the pressure it met (its bookings, the free drivers).

    The rules are the window replay's in seconds: a rider waits ``max_wait_windows``
    windows' worth of seconds from arrival, a pickup is at most ``max_pickup_eta_s``,
    and drivers are free again after the compressed drive. Batches go on until every
    rider is matched or has given up."""
    cost = cost or GreatCircleEta()
    drivers, rides = generate(city)
    arrivals = arrivals_s(city, rides)
    order = sorted(range(len(rides)), key=lambda i: arrivals[i])
    patience_s = city.max_wait_windows * city.window_s
    position = {d.id: (d.lat, d.lng) for d in drivers}
    free_at = dict.fromkeys(position, 0.0)  # In replay seconds.
    # A region that has not batched yet starts from the minimum, as the live engine does.
    window_s = window.min_s if window.adaptive else window.max_s
    outcome = WindowedOutcome([], len(rides), 0.0, 0, [], [])
    waiting: list[int] = []
    arrived = 0  # Rides of ``order`` that have arrived by the current batch.
    last_s = 0.0
    while arrived < len(order) or waiting:
        # Riders left over keep the region batching; otherwise the next arrival asks.
        at = (last_s if waiting else arrivals[order[arrived]]) + window_s
        while arrived < len(order) and arrivals[order[arrived]] <= at:
            waiting.append(order[arrived])
            outcome.windows_s.append(window_s)
            arrived += 1
        waiting = [i for i in waiting if at - arrivals[i] < patience_s]
        last_s = at
        if not waiting:
            continue
        free = [FreeDriver(d, *position[d], idle_s=at - t) for d, t in free_at.items() if t <= at]
        requests = [Request(rides[i].id, rides[i].lat, rides[i].lng) for i in waiting]
        started = time.perf_counter()
        result = matcher(requests, free, cost, city.max_pickup_eta_s)
        outcome.solve_time_s += time.perf_counter() - started
        outcome.batches += 1
        index_by_id = {rides[i].id: i for i in waiting}
        for a in result.assignments:
            i = index_by_id.pop(a.booking_id)
            ride = rides[i]
            outcome.pickup_etas_s.append(a.eta_s)
            outcome.batch_waits_s.append(at - arrivals[i])
            free_at[a.driver_id] = at + (a.eta_s + ride.trip_s) / city.time_compression
            position[a.driver_id] = (ride.dropoff_lat, ride.dropoff_lng)
        waiting = list(index_by_id.values())
        # As live, the free drivers within reach of the batch's bookings: here, those the
        # pickup limit lets the matcher consider.
        eta = (
            cost.eta_matrix(
                np.array([[r.lat, r.lng] for r in requests]),
                np.array([[d.lat, d.lng] for d in free]),
            )
            if free
            else np.zeros((len(requests), 0))
        )
        reach = int((eta <= city.max_pickup_eta_s).any(axis=0).sum())
        pressure = Pressure(bookings=len(requests), free_drivers=reach, lost=0, full=False)
        window_s = window.next_window_s(window_s, pressure)
    return outcome


def solve_time(n: int, seed: int = 1, cost: CostModel | None = None) -> float:
    """Seconds to solve one n × n batch with every driver a candidate."""
    rng = np.random.default_rng(seed)
    lat, lng = _to_latlng(*rng.uniform(0, 12, (2, n)))
    dlat, dlng = _to_latlng(*rng.uniform(0, 12, (2, n)))
    requests = [
        Request(i, float(a), float(b)) for i, (a, b) in enumerate(zip(lat, lng, strict=True))
    ]
    drivers = [
        FreeDriver(i, float(a), float(b)) for i, (a, b) in enumerate(zip(dlat, dlng, strict=True))
    ]
    started = time.perf_counter()
    solve_batch(requests, drivers, cost or GreatCircleEta(), k=None)
    return time.perf_counter() - started
