"""A seeded synthetic city of real clients: drivers and riders using the engine's HTTP API,
and drivers listening on Socket.IO, exactly as apps would.

Nothing here reaches into the engine. Everything random comes from the seed: where
drivers start, where riders book, and each driver's own sequence of decisions.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dispatch.geo import KM_PER_DEG_LAT
from smartroute_sim.client import Api
from smartroute_sim.driver import OfferHandler, RepositionHandler, SimulatedDriver
from smartroute_sim.report import Recorder

log = logging.getLogger(__name__)

CENTRE = (38.7223, -9.1393)  # Lisbon, like the demo and the tests.


@dataclass(frozen=True)
class CityMap:
    """Drivers spread over a square around the centre; riders book around hotspots."""

    seed: int = 1
    size_km: float = 6.0
    hotspots: int = 4
    hotspot_spread_km: float = 0.8

    def _point(self, x_km: float, y_km: float) -> dict:
        half = self.size_km / 2
        x, y = min(max(x_km, -half), half), min(max(y_km, -half), half)
        return {
            "lat": round(CENTRE[0] + y / KM_PER_DEG_LAT, 6),
            "lng": round(CENTRE[1] + x / (KM_PER_DEG_LAT * math.cos(math.radians(CENTRE[0]))), 6),
        }

    def centres(self) -> list[tuple[float, float]]:
        rng = random.Random(self.seed)
        half = 0.35 * self.size_km
        return [(rng.uniform(-half, half), rng.uniform(-half, half)) for _ in range(self.hotspots)]

    def anywhere(self, rng: random.Random) -> dict:
        half = self.size_km / 2
        return self._point(rng.uniform(-half, half), rng.uniform(-half, half))

    def trip(self, rng: random.Random, centres: list[tuple[float, float]]) -> dict:
        x, y = rng.choice(centres)
        pickup = self._point(
            rng.gauss(x, self.hotspot_spread_km), rng.gauss(y, self.hotspot_spread_km)
        )
        return {"pickup": pickup, "dropoff": self.anywhere(rng)}


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the API as seconds since the epoch."""
    return dt.datetime.fromisoformat(value).timestamp() if value else None


class Timers:
    """Runs callables on a thread pool at given monotonic times (one heap, one thread)."""

    def __init__(self, pool: cf.Executor, on_error: Callable[[BaseException], None]) -> None:
        self._pool = pool
        self._on_error = on_error
        self._heap: list = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="timers", daemon=True)
        self._thread.start()

    def after(self, delay_s: float, fn: Callable, *args) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._seq), fn, args))
            self._cond.notify()

    def submit(self, fn: Callable, *args) -> cf.Future | None:
        try:
            future = self._pool.submit(fn, *args)
        except RuntimeError:  # The pool is shutting down at the end of the run.
            return None
        future.add_done_callback(self._check)
        return future

    def _check(self, future: cf.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._on_error(future.exception())

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, fn, args = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self.submit(fn, *args)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()


@dataclass(eq=False)
class Rider:
    id: int
    token: str


class Fleet:
    """Creates the city's drivers and riders through the API and keeps their connections."""

    def __init__(
        self, api: Api, relay_url: str, admin_token: str, city: CityMap, recorder: Recorder
    ) -> None:
        self.api = api
        self.relay_url = relay_url
        self.admin = api.with_token(admin_token)
        self.city = city
        self.recorder = recorder
        self.drivers: list[SimulatedDriver] = []
        self.riders: list[Rider] = []

    def bring_up(
        self,
        drivers: int,
        riders: int,
        on_offer: OfferHandler,
        run_id: str,
        actions_over: str = "relay",
        threads: int = 16,
        on_reposition: RepositionHandler | None = None,
    ) -> None:
        rng = random.Random(self.city.seed)
        seeds = [rng.random() for _ in range(drivers)]

        def driver(i: int) -> SimulatedDriver:
            driver_rng = random.Random(seeds[i])
            user_id, token = self.admin.create_user("driver", f"{run_id}-driver-{i}")
            d = SimulatedDriver(
                self.api.with_token(token),
                user_id,
                self.city.anywhere(driver_rng),
                driver_rng,
                relays=self.relay_url,
                over_relay=actions_over == "relay",
                on_offer=on_offer,
                count=self.recorder.count,
                on_reposition=on_reposition,
            )
            d.go_online()
            return d

        def rider(i: int) -> Rider:
            return Rider(*self.admin.create_user("rider", f"{run_id}-rider-{i}"))

        with cf.ThreadPoolExecutor(threads) as pool:
            self.drivers = list(pool.map(driver, range(drivers)))
            self.riders = list(pool.map(rider, range(riders)))

    def close(self) -> None:
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(SimulatedDriver.disconnect, self.drivers))

    def go_offline(self) -> None:
        """Leave the engine as we found it: our drivers are not offered anyone else's rides."""
        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(SimulatedDriver.go_offline, self.drivers))
