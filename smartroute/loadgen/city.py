"""A seeded synthetic city of real clients: drivers and riders using the engine's HTTP API,
and drivers listening on Socket.IO, exactly as apps would.

Nothing here reaches into the engine. Everything random comes from the seed: where
drivers start, where riders book, and each driver's own sequence of decisions.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import heapq
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
import socketio
from requests.adapters import HTTPAdapter

from smartroute.loadgen.report import Recorder

log = logging.getLogger(__name__)

CENTRE = (38.7223, -9.1393)  # Lisbon, like the demo and the tests.
KM_PER_DEG_LAT = 111.32
HTTP_TIMEOUT_S = 10.0


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
        return {"lat": round(CENTRE[0] + y / KM_PER_DEG_LAT, 6),
                "lng": round(CENTRE[1] + x / (KM_PER_DEG_LAT * math.cos(math.radians(CENTRE[0]))),
                             6)}

    def centres(self) -> list[tuple[float, float]]:
        rng = random.Random(self.seed)
        half = 0.35 * self.size_km
        return [(rng.uniform(-half, half), rng.uniform(-half, half)) for _ in range(self.hotspots)]

    def anywhere(self, rng: random.Random) -> dict:
        half = self.size_km / 2
        return self._point(rng.uniform(-half, half), rng.uniform(-half, half))

    def trip(self, rng: random.Random, centres: list[tuple[float, float]]) -> dict:
        x, y = rng.choice(centres)
        pickup = self._point(rng.gauss(x, self.hotspot_spread_km),
                             rng.gauss(y, self.hotspot_spread_km))
        return {"pickup": pickup, "dropoff": self.anywhere(rng)}


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the API as seconds since the epoch."""
    return dt.datetime.fromisoformat(value).timestamp() if value else None


class Api:
    """The engine's HTTP API. requests Sessions are not thread-safe: one per thread, each
    keeping its connection alive."""

    def __init__(self, base_url: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._sent = 0
        self._sent_lock = threading.Lock()

    @property
    def sent(self) -> int:
        """Requests sent so far (retries included)."""
        return self._sent

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
            self._local.session = session
        return session

    def call(self, method: str, path: str, token: str, json: dict | None = None,
             headers: dict | None = None, retry: bool = False) -> requests.Response:
        """One request; with ``retry``, once more if the connection broke (gunicorn closes
        idle keep-alive connections, and a request can race that close). Retry only what is
        safe to send twice: location pings, driver actions, bookings with an Idempotency-Key.
        """
        headers = {"Authorization": f"Bearer {token}", **(headers or {})}
        for attempt in (1, 2):
            with self._sent_lock:
                self._sent += 1
            try:
                return self._session().request(method, f"{self.base_url}/v1{path}", json=json,
                                               headers=headers, timeout=self.timeout_s)
            except requests.ConnectionError:
                if not retry or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def create_user(self, admin_token: str, role: str, name: str) -> tuple[int, str]:
        response = self.call("POST", "/users", admin_token, {"name": name, "role": role})
        response.raise_for_status()
        body = response.json()
        return body["id"], body["token"]


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
class Driver:
    id: int
    token: str
    position: dict
    rng: random.Random
    client: socketio.Client | None = None
    holding: int | None = None
    offered: set[int] = field(default_factory=set)
    last_event_id: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def auth(self) -> dict:
        """Sent on every (re)connect, so the relay replays what was missed meanwhile."""
        auth = {"token": self.token}
        if self.last_event_id is not None:
            auth["last_event_id"] = self.last_event_id
        return auth


@dataclass(eq=False)
class Rider:
    id: int
    token: str


OfferHandler = Callable[[Driver, dict, float], None]


class Fleet:
    """Creates the city's drivers and riders through the API and keeps their connections."""

    def __init__(self, api: Api, relay_url: str, admin_token: str, city: CityMap,
                 recorder: Recorder) -> None:
        self.api = api
        self.relay_url = relay_url
        self.admin_token = admin_token
        self.city = city
        self.recorder = recorder
        self.drivers: list[Driver] = []
        self.riders: list[Rider] = []
        self.closing = threading.Event()

    def bring_up(self, drivers: int, riders: int, on_offer: OfferHandler,
                 run_id: str, threads: int = 16) -> None:
        rng = random.Random(self.city.seed)
        seeds = [rng.random() for _ in range(drivers)]

        def driver(i: int) -> Driver:
            driver_rng = random.Random(seeds[i])
            user_id, token = self.api.create_user(self.admin_token, "driver",
                                                  f"{run_id}-driver-{i}")
            d = Driver(user_id, token, self.city.anywhere(driver_rng), driver_rng)
            self.api.call("PUT", "/drivers/me/location", token, d.position).raise_for_status()
            self.connect(d, on_offer)
            self.api.call("PUT", "/drivers/me/status", token,
                          {"status": "available"}).raise_for_status()
            return d

        def rider(i: int) -> Rider:
            return Rider(*self.api.create_user(self.admin_token, "rider", f"{run_id}-rider-{i}"))

        with cf.ThreadPoolExecutor(threads) as pool:
            self.drivers = list(pool.map(driver, range(drivers)))
            self.riders = list(pool.map(rider, range(riders)))

    def connect(self, driver: Driver, on_offer: OfferHandler) -> None:
        client = socketio.Client(reconnection=True, reconnection_attempts=10,
                                 reconnection_delay=0.2, reconnection_delay_max=2)

        def new_assignment(data):
            received = time.time()
            event_id = data.get("event_id")
            if isinstance(event_id, int):
                driver.last_event_id = max(driver.last_event_id or 0, event_id)
            on_offer(driver, data, received)

        client.on("new_assignment", new_assignment)
        def disconnect(*_):
            if not self.closing.is_set():  # Only the drops the run did not ask for.
                self.recorder.count("socket_disconnects")

        client.on("disconnect", disconnect)
        client.connect(self.relay_url, auth=driver.auth, transports=["websocket"],
                       wait_timeout=10)
        driver.client = client

    def close(self) -> None:
        self.closing.set()

        def disconnect(driver: Driver) -> None:
            if driver.client is not None:
                driver.client.disconnect()

        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(disconnect, self.drivers))

    def go_offline(self) -> None:
        """Leave the engine as we found it: our drivers are not offered anyone else's rides."""
        def offline(driver: Driver) -> None:
            with contextlib.suppress(requests.RequestException):
                self.api.call("PUT", "/drivers/me/status", driver.token, {"status": "offline"})

        with cf.ThreadPoolExecutor(16) as pool:
            list(pool.map(offline, self.drivers))


def first_offer(driver: Driver, data: dict) -> bool:
    """True the first time this driver hears of this booking (delivery is at least once)."""
    with driver.lock:
        if data["id"] in driver.offered:
            return False
        driver.offered.add(data["id"])
        return True
