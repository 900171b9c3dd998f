"""``smartroute bench fleet``: a fleet of drivers' apps on real Socket.IO connections, each
pinging its location every few seconds while riders book at a fixed rate.

Drivers are created through the admin API (concurrently: there is one request a user),
then split over worker processes, each an asyncio loop of python-socketio ``AsyncClient``s
sharing one aiohttp session, where a thread per client would cost a thread each (the largest
worker's memory is reported beside its loop's lateness). A driver goes online as ``bench e2e``'s do
(its location over HTTP, its relay connection, status available), then emits ``location``
(``{lat, lng, at}``, a short random walk) every ping interval, jittered, and takes every
offer through accept, arrive, start and complete over its socket (``driver_action``).

While bookings flow (the measured window) the run reads: pings sent, the relay's count of
positions written to Redis (``smartroute_relay_locations_applied_total``), how long a
sampled ping takes to be visible to matching (its ``at`` in the fix-time hash the relay
writes with the position), the relay's memory before and after the fleet connected, and the
CPU every engine process (PostgreSQL and Redis included) used a ping. The bookings get
``bench e2e``'s figures, checked in the database the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from dispatch.geo import KM_PER_DEG_LAT
from smartroute_sim.client import HTTP_TIMEOUT_S
from smartroute_sim.driver import LANDED, RETRYABLE
from smartroute_sim.engine import (
    Target,
    cpu_by_role,
    engine_processes,
    service_processes,
)
from smartroute_sim.report import latency_summary
from smartroute_sim.run import DriverPolicy, LoadPlan, LoadRun

T = TypeVar("T")

# One process holds at most this many clients by default: an asyncio loop keeps up with
# a few thousand sockets pinging every few seconds, and more processes than cores only
# share them.
CLIENTS_PER_PROCESS = 2500
# Pings sampled for their time to the index, a second, over the whole fleet.
SAMPLES_PER_S = 50.0
# How often the sampled pings' fix times are read back from Redis.
SAMPLE_POLL_S = 0.01
# A sampled ping not visible after this long is counted as unseen.
SAMPLE_GIVE_UP_S = 30.0
# A ping's delay is its interval times 1 ± this, so a fleet that connected together does
# not stay in step.
PING_JITTER = 0.1
# A random-walk step, in km, between two pings (about city driving at a ping every 4 s).
WALK_KM = 0.05
# Drivers of one process going online at once (each is three requests and a handshake).
CONNECT_AT_ONCE = 64
# Tries a driver gets to come online (location, connection, status) before it is left out.
CONNECT_TRIES = 3
# How often a worker reports its counts (and its loop's lateness) to the parent.
REPORT_EVERY_S = 0.5
# Seconds between a ride's steps (accept, arrive, start, complete), ± half.
STEP_S = 0.3
# How long a driver keeps trying a step the engine is too busy to answer.
ACTION_PATIENCE_S = 3 * HTTP_TIMEOUT_S
APPLIED_METRIC = "smartroute_relay_locations_applied_total"


# --- Pure helpers ------------------------------------------------------------------------


def processes_for(drivers: int, per_process: int = CLIENTS_PER_PROCESS) -> int:
    """Enough worker processes that none holds more than ``per_process`` clients."""
    return max(1, math.ceil(drivers / per_process))


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` in ``parts`` contiguous runs whose lengths differ by one at most (no empty
    run unless there are fewer items than parts)."""
    parts = max(1, min(parts, len(items))) if items else 1
    size, extra = divmod(len(items), parts)
    runs, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        runs.append(list(items[start:end]))
        start = end
    return runs


def next_ping_delay(interval_s: float, jitter: float, rng: random.Random) -> float:
    """Seconds to the next ping: the interval, stretched or shrunk by up to ``jitter``."""
    return interval_s * (1 + rng.uniform(-jitter, jitter))


def ping_delays(interval_s: float, jitter: float, rng: random.Random) -> Iterator[float]:
    """A driver's waits before each ping from going online: the first anywhere within one
    interval (so a fleet that connected together spreads its pings over it), then one
    jittered interval after another."""
    yield rng.uniform(0, interval_s)
    while True:
        yield next_ping_delay(interval_s, jitter, rng)


def walk(position: dict, rng: random.Random, step_km: float = WALK_KM) -> dict:
    """The next position of a short random walk, ``step_km`` at most in each direction."""
    lat = position["lat"] + rng.uniform(-step_km, step_km) / KM_PER_DEG_LAT
    lng = position["lng"] + rng.uniform(-step_km, step_km) / (
        KM_PER_DEG_LAT * math.cos(math.radians(position["lat"]))
    )
    return {"lat": round(min(max(lat, -85.0), 85.0), 6), "lng": round(lng, 6)}


def sample_share(drivers: int, interval_s: float, per_s: float = SAMPLES_PER_S) -> float:
    """The share of pings to sample for ``per_s`` samples a second from the fleet."""
    if drivers <= 0 or interval_s <= 0:
        return 0.0
    return min(1.0, per_s * interval_s / drivers)


def counter_value(exposition: str, name: str) -> float | None:
    """The sum of a counter's samples in a Prometheus text exposition (None if absent)."""
    values = [
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    ]
    return sum(values) if values else None


def per_second_series(samples: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(t, cumulative count) readings as the rate between each reading and the one before."""
    times, rates = [], []
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t1 > t0:
            times.append(t1)
            rates.append((c1 - c0) / (t1 - t0))
    return times, rates


# --- The worker processes ----------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """One driver a worker process runs: its user, token, starting place and seed."""

    id: int
    token: str
    lat: float
    lng: float
    seed: float


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    api: str
    relay: str
    seats: list[Seat]
    ping_every_s: float
    jitter: float = PING_JITTER
    sample_share: float = 0.0
    connect_at_once: int = CONNECT_AT_ONCE
    # One attempt to come online (location, connection, status), at most.
    attempt_timeout_s: float = 3 * HTTP_TIMEOUT_S
    step_s: float = STEP_S


def worker_main(plan: WorkerPlan, events: Any, stop: Any) -> None:
    """A worker process: its drivers online, pinging and driving until ``stop`` is set."""
    # Ctrl-C reaches the whole process group: the parent stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_WorkerFleet(plan, events).run(stop))


@dataclass(eq=False)
class _App:
    seat: Seat
    rng: random.Random
    position: dict
    sio: Any = None
    online: bool = False
    offered: set[int] = field(default_factory=set)


class _WorkerFleet:
    def __init__(self, plan: WorkerPlan, events: Any) -> None:
        self.plan = plan
        self.events = events
        self.apps: list[_App] = []
        self.pings = 0
        self.ping_errors = 0
        self.connected = 0
        self.tasks: set[asyncio.Task] = set()

    async def run(self, stop: Any) -> None:
        import aiohttp

        # No cap on the shared session's connections: every WebSocket holds one for life.
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self.http = http
            gate = asyncio.Semaphore(self.plan.connect_at_once)
            drivers = [asyncio.create_task(self._drive(seat, gate)) for seat in self.plan.seats]
            reporter = asyncio.create_task(self._report())
            while not stop.is_set():
                await asyncio.sleep(0.2)
            for task in [*drivers, *self.tasks]:
                task.cancel()
            await asyncio.gather(*drivers, *self.tasks, return_exceptions=True)
            await asyncio.gather(*(self._leave(app, gate) for app in self.apps))
            reporter.cancel()
            self.events.put(("tick", self.plan.index, self.pings, self.ping_errors, 0, 0.0))

    async def _report(self) -> None:
        """Every half second: pings sent, drivers connected, and how late the loop woke
        (a loop that falls behind sends its pings late, and the delay is the generator's,
        not the engine's)."""
        while True:
            asked = time.monotonic() + REPORT_EVERY_S
            await asyncio.sleep(REPORT_EVERY_S)
            lag_ms = max(0.0, (time.monotonic() - asked) * 1000)
            self.events.put(
                ("tick", self.plan.index, self.pings, self.ping_errors, self.connected, lag_ms)
            )

    async def _call(self, app: _App, method: str, path: str, body: dict) -> int:
        headers = {"Authorization": f"Bearer {app.seat.token}"}
        async with self.http.request(
            method, self.plan.api + path, json=body, headers=headers
        ) as response:
            await response.read()
            return response.status

    async def _drive(self, seat: Seat, gate: asyncio.Semaphore) -> None:
        app = _App(seat, random.Random(seat.seed), {"lat": seat.lat, "lng": seat.lng})
        self.apps.append(app)
        async with gate:
            for attempt in range(1, CONNECT_TRIES + 1):
                try:
                    await asyncio.wait_for(self._go_online(app), self.plan.attempt_timeout_s)
                    break
                except Exception as exc:
                    # An app tries again (a relay busy with a crowd's handshakes may drop
                    # one); after the last try it is counted and the run goes on without it.
                    with contextlib.suppress(Exception):
                        if app.sio is not None:
                            await app.sio.disconnect()
                    app.sio = None
                    if attempt == CONNECT_TRIES:
                        error = f"{exc.__class__.__name__} {exc}"
                        self.events.put(("connect_error", seat.id, error))
                        return
                    self.events.put(("connect_retry", seat.id))
                    await asyncio.sleep(0.5 * attempt)
        self.events.put(("online", seat.id))
        for delay in ping_delays(self.plan.ping_every_s, self.plan.jitter, app.rng):
            await asyncio.sleep(delay)
            await self._ping(app)

    async def _go_online(self, app: _App) -> None:
        """As ``SimulatedDriver.go_online``: a location (going online needs one in the
        database), the relay connection, then available."""
        import socketio

        status = await self._call(app, "PUT", "/v1/drivers/me/location", app.position)
        if status != 200:
            raise RuntimeError(f"location answered {status}")
        app.sio = socketio.AsyncClient(
            http_session=self.http,
            reconnection_delay=0.2,
            reconnection_delay_max=1,
            handle_sigint=False,
        )

        # A coroutine function, so python-socketio runs it as a task of the loop.
        async def offered(data: dict) -> None:
            await self._offered(app, data)

        app.sio.on("new_assignment", offered)
        app.sio.on("connect", self._up)
        app.sio.on("disconnect", self._down)
        await app.sio.connect(
            self.plan.relay,
            auth={"token": app.seat.token},
            transports=["websocket"],
            wait_timeout=HTTP_TIMEOUT_S,
        )
        status = await self._call(app, "PUT", "/v1/drivers/me/status", {"status": "available"})
        if status != 200:
            raise RuntimeError(f"status answered {status}")
        app.online = True

    async def _up(self) -> None:
        self.connected += 1

    async def _down(self, *_reason: Any) -> None:
        self.connected -= 1

    async def _ping(self, app: _App) -> None:
        app.position = walk(app.position, app.rng)
        at = time.time()
        try:
            await app.sio.emit("location", {**app.position, "at": at})
        except Exception:  # Disconnected: python-socketio is reconnecting it.
            self.ping_errors += 1
            return
        self.pings += 1
        if app.rng.random() < self.plan.sample_share:
            self.events.put(("sample", app.seat.id, at))

    async def _offered(self, app: _App, data: dict) -> None:
        received = time.time()
        keys = ("id", "rider_id", "assigned_at", "created_at")
        self.events.put(("offer", app.seat.id, {k: data.get(k) for k in keys}, received))
        booking_id = data.get("id")
        if not isinstance(booking_id, int) or booking_id in app.offered:
            return
        app.offered.add(booking_id)
        task = asyncio.create_task(self._ride(app, booking_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ride(self, app: _App, booking_id: int) -> None:
        for action in ("accept", "arrive", "start", "complete"):
            if action != "accept":
                await asyncio.sleep(self.plan.step_s * app.rng.uniform(0.5, 1.5))
            status = await self._act(app, booking_id, action)
            if status != 200:
                self.events.put(("refused", app.seat.id, booking_id, action, status))
                return
        self.events.put(("completed", app.seat.id, booking_id))

    async def _act(self, app: _App, booking_id: int, action: str) -> int | None:
        """One step over the socket, tried again while the engine is busy; a retry that
        finds its first attempt landed counts as done (as ``SimulatedDriver.act``)."""
        status = None
        # The relay answers 429 "busy" while this connection's last attempt still runs, and
        # a timed-out attempt may still be running: keep trying for a while, not a count.
        deadline = time.monotonic() + ACTION_PATIENCE_S
        pause = 0.2
        while time.monotonic() < deadline:
            try:
                answer = await app.sio.call(
                    "driver_action",
                    {"booking_id": booking_id, "action": action},
                    timeout=HTTP_TIMEOUT_S,
                )
            except Exception:  # No answer: the relay went away, or a timeout.
                answer = None
            status = answer.get("status") if isinstance(answer, dict) else None
            if status == 200:
                return 200
            error = (answer or {}).get("error") or {}
            if (
                status == 409
                and error.get("code") == "invalid_transition"
                and error.get("current_status") == LANDED.get(action)
            ):
                return 200
            if status is not None and status not in RETRYABLE:
                return status
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)
        return status

    async def _leave(self, app: _App, gate: asyncio.Semaphore) -> None:
        """Offline, so the engine offers nobody else's rides to this run's drivers."""
        async with gate:
            with contextlib.suppress(Exception):
                if app.online:
                    await asyncio.wait_for(
                        self._call(app, "PUT", "/v1/drivers/me/status", {"status": "offline"}),
                        HTTP_TIMEOUT_S,
                    )
            with contextlib.suppress(Exception):
                if app.sio is not None:
                    await asyncio.wait_for(app.sio.disconnect(), HTTP_TIMEOUT_S)


# --- The run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetPlan:
    drivers: int
    ping_every_s: float
    processes: int
    connect_timeout_s: float = 180.0


@dataclass(eq=False)
class _Seat:
    """The parent's view of one driver: what ``LoadRun`` reads of a fleet's drivers."""

    id: int
    holding: int | None = None


@dataclass(eq=False)
class _FleetView:
    """What ``LoadRun`` reads of its fleet: the drivers, and the riders who book."""

    drivers: list[_Seat]
    riders: list


class IndexProbe:
    """Reads sampled pings' fix times back from Redis until each is visible to matching,
    and records how long that took."""

    def __init__(self, client: redis.Redis | None, record: Callable[[float, float], None]):
        from smartroute.infra.driver_index import FIX_AT_KEY

        self.client, self.record, self.key = client, record, FIX_AT_KEY
        self.waiting: dict[int, float] = {}  # driver id -> the sampled ping's at
        self.lock = threading.Lock()
        self.unseen = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="index-probe", daemon=True)

    def add(self, driver_id: int, at: float) -> None:
        with self.lock:
            # An earlier sample still waiting is seen when this one is: keep the earlier.
            self.waiting.setdefault(driver_id, at)

    def _run(self) -> None:
        while not self.stopped.wait(SAMPLE_POLL_S):
            with self.lock:
                waiting = list(self.waiting.items())
            if not waiting or self.client is None:
                continue
            try:
                values = self.client.hmget(self.key, [d for d, _ in waiting])
            except (redis.RedisError, OSError):
                continue
            now = time.time()
            with self.lock:
                for (driver, at), value in zip(waiting, values, strict=True):
                    if value is not None and float(value) >= at:
                        self.record(at, (now - at) * 1000)
                        self.waiting.pop(driver, None)
                    elif now - at > SAMPLE_GIVE_UP_S:
                        self.unseen += 1
                        self.waiting.pop(driver, None)

    def start(self) -> IndexProbe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def metrics_token(target: Target) -> str | None:
    """The token /metrics asks for: the settings', else the one ``up`` kept."""
    if target.settings.metrics_token:
        return target.settings.metrics_token
    path = target.settings.data_dir / "metrics_token"
    return path.read_text().strip() if path.exists() else None


class FleetRun(LoadRun):
    """``LoadRun``'s bookings (sent, recorded and checked as ``bench e2e`` does) against a
    fleet of socket drivers in worker processes."""

    def __init__(
        self,
        target: Target,
        plan: LoadPlan,
        fleet: FleetPlan,
        on_sample: Callable[[dict], None] | None = None,
        on_connect: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__(target, plan, DriverPolicy(), on_sample=on_sample)
        self.fleet_plan = fleet
        self.on_connect = on_connect or (lambda _done, _total: None)
        self.events: Any = None
        self.seats: dict[int, _Seat] = {}
        self.online = 0
        self.connect_errors: dict[str, int] = {}
        self.ticks: dict[int, tuple[int, int, int]] = {}  # worker -> pings, errors, connected
        self.index_points: list[tuple[float, float]] = []  # (seconds since start, ms)
        self.probe = IndexProbe(self._redis(), self._indexed)
        self.metrics_token = metrics_token(target)
        self.figures: dict[str, Any] = {}
        self.pump_stop = threading.Event()
        self.foreign: set[int] = set()
        self.loop_lags: list[tuple[float, float]] = []  # (seconds since start, ms late)
        self.refusals: dict[str, int] = {}  # "<step> <status>" -> steps the engine refused

    def _redis(self) -> redis.Redis | None:
        url = self.target.settings.redis_url
        return redis.Redis.from_url(url, socket_timeout=2) if url else None

    def _indexed(self, at: float, ms: float) -> None:
        # When the ping was sent, in the recorder's seconds since the start.
        self.index_points.append((at - (time.time() - self.recorder.elapsed()), ms))

    # --- Reading the engine ---

    def relay_processes(self) -> list[psutil.Process]:
        return [p for role, p in engine_processes(self.target.root_pid) if role == "relay"]

    def relay_rss_bytes(self) -> int | None:
        """The relays' resident memory; None when none runs on this machine."""
        processes = self.relay_processes()
        if not processes:
            return None
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def applied(self) -> float | None:
        """The relay's count of positions written to Redis, from its /metrics."""
        headers = {"Authorization": f"Bearer {self.metrics_token}"} if self.metrics_token else {}
        try:
            response = requests.get(f"{self.target.relay}/metrics", headers=headers, timeout=5)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        return counter_value(response.text, APPLIED_METRIC)

    def engine_cpu_s(self) -> dict[str, float]:
        data_dir = self.target.settings.data_dir.resolve()
        processes = [*engine_processes(self.target.root_pid), *service_processes(data_dir)]
        return cpu_by_role(processes)

    def pings_sent(self) -> int:
        return sum(pings for pings, _, _ in self.ticks.values())

    def connected(self) -> int:
        return sum(connected for _, _, connected in self.ticks.values())

    # --- Events from the workers ---

    def _pump(self) -> None:
        while not self.pump_stop.is_set() or not self.events.empty():
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            try:
                self._handle(event)
            except Exception as exc:  # A bad event must not stop the others' accounting.
                self._client_error(exc)

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        if kind == "tick":
            _, worker, pings, errors, connected, lag_ms = event
            self.ticks[worker] = (pings, errors, connected)
            self.loop_lags.append((self.recorder.elapsed(), lag_ms))
        elif kind == "sample":
            self.probe.add(event[1], event[2])
        elif kind == "online":
            with self.lock:
                self.online += 1
        elif kind == "connect_retry":
            self.recorder.count("connect_retries")
        elif kind == "connect_error":
            key = event[2][:120]
            with self.lock:
                self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
        elif kind == "offer":
            self._offer(event[1], event[2], event[3])
        elif kind == "completed":
            _, driver, booking_id = event
            self._let_go(driver, booking_id)
            if booking_id not in self.foreign:
                self.recorder.count("completed")
            # Possibly before the booking's 202 came home: the drain finds it ended.
            self._end(booking_id, "completed")
        elif kind == "refused":
            _, driver, booking_id, action, status = event
            self._let_go(driver, booking_id)
            self.recorder.count(f"{action}_refused")
            key = f"{action} {status or 'unanswered'}"
            with self.lock:
                self.refusals[key] = self.refusals.get(key, 0) + 1

    def _let_go(self, driver: int, booking_id: int) -> None:
        seat = self.seats.get(driver)
        if seat is not None and seat.holding == booking_id:
            seat.holding = None

    def _offer(self, driver: int, data: dict, received: float) -> None:
        """A new_assignment reached a worker's client: recorded as ``LoadRun.on_offer``
        records it (the worker answers it)."""
        from smartroute_sim.city import parse_time

        booking_id = data["id"]
        seat = self.seats.get(driver)
        if data.get("rider_id") not in self.rider_ids:
            # A booking this run did not make (an engine shared with others): the worker
            # serves it, so the driver is free again, but it stays out of the numbers.
            self.foreign.add(booking_id)
            self.recorder.count("foreign_offers")
            return
        with self.lock:
            first = booking_id not in self.pushed
            self.pushed.setdefault(booking_id, received)
            sent = self.booked.get(booking_id)
        if not first:
            self.recorder.count("duplicate_pushes")
            return
        self.recorder.count("pushed")
        assigned, created = parse_time(data.get("assigned_at")), parse_time(data.get("created_at"))
        if assigned is not None:
            self.recorder.latency("push", (received - assigned) * 1000)
            if created is not None:
                self.recorder.latency("assign", (assigned - created) * 1000)
        if sent is not None:
            self.recorder.latency("book_to_push", (received - sent) * 1000)
        if seat is not None:
            if seat.holding is not None and seat.holding != booking_id:
                self.double_seen += 1
            seat.holding = booking_id

    # --- The run ---

    def _create_users(self, run_id: str) -> list[Seat]:
        import concurrent.futures as cf

        from smartroute_sim.city import Rider

        admin = self.api.with_token(self.target.admin_token)
        rng = random.Random(self.plan.seed)
        places = [self.city.anywhere(rng) for _ in range(self.fleet_plan.drivers)]
        seeds = [rng.random() for _ in range(self.fleet_plan.drivers)]

        def driver(i: int) -> Seat:
            user_id, token = admin.create_user("driver", f"{run_id}-driver-{i}")
            return Seat(user_id, token, places[i]["lat"], places[i]["lng"], seeds[i])

        def rider(i: int) -> Rider:
            return Rider(*admin.create_user("rider", f"{run_id}-rider-{i}"))

        # One request a user, many at once: the API's threads and PostgreSQL are the limit.
        with cf.ThreadPoolExecutor(32) as pool:
            seats = list(pool.map(driver, range(self.fleet_plan.drivers)))
            self.fleet = _FleetView([], list(pool.map(rider, range(self.plan.riders))))
        self.rider_ids = {r.id for r in self.fleet.riders}
        return seats

    def execute(self) -> dict:
        import uuid

        run_id = f"fleet-{uuid.uuid4().hex[:8]}"
        figures = self.figures
        started = time.monotonic()
        seats = self._create_users(run_id)
        figures["users_created_s"] = round(time.monotonic() - started, 2)
        self.seats = {s.id: _Seat(s.id) for s in seats}
        self.fleet.drivers = list(self.seats.values())
        context = mp.get_context("spawn")
        self.events = context.Queue()
        stop = context.Event()
        share = sample_share(len(seats), self.fleet_plan.ping_every_s)
        workers = [
            context.Process(
                target=worker_main,
                args=(
                    WorkerPlan(
                        i,
                        self.target.api,
                        self.target.relay,
                        part,
                        self.fleet_plan.ping_every_s,
                        sample_share=share,
                    ),
                    self.events,
                    stop,
                ),
                name=f"fleet-{i}",
                daemon=True,
            )
            for i, part in enumerate(split(seats, self.fleet_plan.processes))
        ]
        pump = threading.Thread(target=self._pump, name="fleet-events", daemon=True)
        pump.start()
        self.probe.start()
        self.memory.start()
        self.running.set()
        sampler = threading.Thread(target=self._sample_loop, name="sampler", daemon=True)
        try:
            rss_before = self.relay_rss_bytes()
            connect_from = time.monotonic()
            for worker in workers:
                worker.start()
            sampler.start()
            self._await_fleet(connect_from)
            self.recorder.count("drivers_online", self.online)
            rss_after = self.relay_rss_bytes()
            figures["relay_rss_before_mb"] = _mb(rss_before)
            figures["relay_kb_per_driver"] = (
                round((rss_after - rss_before) / 1024 / self.online, 1)
                if self.online and rss_before is not None and rss_after is not None
                else None
            )
            # The measured window: the fleet online, bookings flowing.
            applied_from, cpu_from = self.applied(), self.engine_cpu_s()
            pings_from, window_from = self.pings_sent(), time.monotonic()
            loadgen_from, own_from = self._loadgen_cpu_s(workers), _own_cpu_s()
            self.memory.count_cpu_from_now()
            self._send_bookings()
            # The last booking leaves a send interval before the duration is up: the window
            # is the whole duration.
            time.sleep(max(0.0, window_from + self.plan.duration_s - time.monotonic()))
            window = (self.recorder.elapsed(window_from), self.recorder.elapsed())
            window_s = time.monotonic() - window_from
            applied_to, cpu_to = self.applied(), self.engine_cpu_s()
            pings_in_window = self.pings_sent() - pings_from
            # The generator shares the machine's cores with the engine: what it used of them.
            figures["loadgen_workers_cpu_percent"] = round(
                100 * (self._loadgen_cpu_s(workers) - loadgen_from) / window_s, 1
            )
            self.loadgen_cpu_percent = round(100 * (_own_cpu_s() - own_from) / window_s, 1)
            figures["loadgen_worker_rss_mb"] = _mb(self._loadgen_rss_bytes(workers))
            self._drain()
            figures.update(
                self._window_figures(
                    window,
                    pings_in_window,
                    applied_from,
                    applied_to,
                    sum(cpu_to.values()) - sum(cpu_from.values()),
                    {r: cpu_to[r] - cpu_from.get(r, 0.0) for r in cpu_to},
                )
            )
            figures["relay_rss_mb"] = _mb(self.relay_rss_bytes())
        finally:
            self.running.clear()
            stop.set()
            self._stop_workers(workers)
            self.pump_stop.set()
            pump.join(timeout=10)
            self.probe.stop()
            if sampler.is_alive():
                sampler.join()
            self.timers.close()
            self.send_pool.shutdown(wait=True)
            self.driver_pool.shutdown(wait=True)
            memory = self.memory.stop()
        figures["pings_sent"] = self.pings_sent()
        figures["ping_errors"] = sum(errors for _, errors, _ in self.ticks.values())
        figures["connect_retries"] = self.recorder.counts.get("connect_retries", 0)
        figures["connect_errors"] = self.connect_errors
        figures["steps_refused"] = self.refusals
        return self._results(memory)

    def _await_fleet(self, connect_from: float) -> None:
        """Until every driver is online, or has failed to, or the connect timeout passed."""
        total = len(self.seats)
        deadline = connect_from + self.fleet_plan.connect_timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                online, failed = self.online, sum(self.connect_errors.values())
            self.on_connect(online, total)
            if online + failed >= total:
                break
            time.sleep(0.2)
        self.figures["drivers_online"] = self.online
        self.figures["connect_phase_s"] = round(time.monotonic() - connect_from, 2)
        self.figures["fleet_connect_s"] = (
            round(time.monotonic() - connect_from, 2) if self.online == total else None
        )

    def _stop_workers(self, workers: list) -> None:
        deadline = time.monotonic() + 60
        for worker in workers:
            if worker.pid is None:
                continue
            worker.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)

    @staticmethod
    def _loadgen_rss_bytes(workers: list) -> int | None:
        """The largest worker process's resident memory."""
        sizes = []
        for worker in workers:
            with contextlib.suppress(psutil.Error, ValueError):
                sizes.append(psutil.Process(worker.pid).memory_info().rss)
        return max(sizes, default=None)

    @staticmethod
    def _loadgen_cpu_s(workers: list) -> float:
        used = 0.0
        for worker in workers:
            with contextlib.suppress(psutil.Error, ValueError):
                t = psutil.Process(worker.pid).cpu_times()
                used += t.user + t.system
        return used

    def _window_figures(
        self,
        window: tuple[float, float],
        pings: int,
        applied_from: float | None,
        applied_to: float | None,
        cpu_s: float,
        cpu_by: dict[str, float],
    ) -> dict:
        window_s = window[1] - window[0]
        # Pings sent while the fleet was still connecting wait behind the relay's handshakes
        # (each asks PostgreSQL about a token): reported apart from the window's.
        points = list(self.index_points)
        index = latency_summary([ms for t, ms in points if window[0] <= t <= window[1]])
        connecting = latency_summary([ms for t, ms in points if t < window[0]])
        applied = (
            applied_to - applied_from
            if applied_from is not None and applied_to is not None
            else None
        )
        return {
            "window_s": round(window_s, 2),
            "pings_sent_in_window": pings,
            "pings_sent_per_s": round(pings / window_s, 1),
            "pings_indexed_per_s": round(applied / window_s, 1) if applied is not None else None,
            "ping_to_index_p50_ms": index["p50_ms"],
            "ping_to_index_p99_ms": index["p99_ms"],
            "ping_to_index_max_ms": index["max_ms"],
            "ping_to_index_samples": index["n"],
            "ping_samples_unseen": self.probe.unseen,
            # The generator's own lateness: how far past its time a worker's loop woke.
            "loadgen_loop_lag_max_ms": round(
                max((ms for t, ms in self.loop_lags if window[0] <= t <= window[1]), default=0),
                1,
            ),
            "ping_to_index_p99_ms_while_connecting": connecting["p99_ms"],
            # Every engine process's CPU over the window (the bookings' share included), and
            # the relay's alone, a ping sent.
            "engine_cpu_ms_per_ping": round(1000 * cpu_s / pings, 3) if pings else None,
            "relay_cpu_ms_per_ping": (
                round(1000 * cpu_by.get("relay", 0.0) / pings, 3) if pings else None
            ),
            "engine_cpu_s_in_window_by_role": {k: round(v, 2) for k, v in sorted(cpu_by.items())},
        }

    def _gauges(self) -> dict:
        return {
            "connected": self.connected(),
            "pings_sent": self.pings_sent(),
            "applied": self.applied(),
        }


def _mb(size: int | None) -> float | None:
    return round(size / 2**20, 1) if size is not None else None


def _own_cpu_s() -> float:
    """CPU seconds this process (the bookings, the probe, the accounting) has used."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def run_fleet(
    target: Target,
    drivers: int,
    ping_every_s: float,
    rate: float,
    duration_s: float,
    processes: int | None = None,
    seed: int = 1,
    drain_s: float = 30.0,
    connect_timeout_s: float = 180.0,
    on_sample: Callable[[dict], None] | None = None,
    on_connect: Callable[[int, int], None] | None = None,
    chart: Path | None = None,
) -> dict:
    from smartroute_sim.e2e import booking_figures

    plan = LoadPlan(
        rate=rate,
        duration_s=duration_s,
        drivers=drivers,
        riders=max(10, min(200, math.ceil(rate))),
        seed=seed,
        drain_s=drain_s,
        send_threads=min(512, max(64, math.ceil(rate))),
    )
    fleet = FleetPlan(drivers, ping_every_s, processes or processes_for(drivers), connect_timeout_s)
    run = FleetRun(target, plan, fleet, on_sample=on_sample, on_connect=on_connect)
    checked = run.execute()
    result: dict[str, Any] = {
        "drivers": drivers,
        "processes": fleet.processes,
        "ping_interval_s": ping_every_s,
        **run.figures,
        "rate_offered": rate,
        "rate_sustained": checked["rate_pushed_in_window"],
        "rate_accepted": checked["rate_accepted"],
        "duration_s": duration_s,
        "batch_window_s": target.settings.batch_window_s,
        "relay_location_tick_s": target.settings.relay_location_tick_s,
        **booking_figures(checked, run.recorder),
    }
    if chart is not None:
        write_fleet_chart(
            chart,
            run,
            f"smartroute bench fleet: {drivers} drivers pinging every {ping_every_s:g} s, "
            f"{rate:g} bookings/s for {duration_s:g} s",
        )
    return result


def write_fleet_chart(path: Path, run: FleetRun, title: str) -> Path:
    """One PNG: pings sent and indexed a second, ping → index latency, drivers connected
    and busy, over the run."""
    import matplotlib

    matplotlib.use("Agg")  # Headless: no display on servers or in CI.
    import matplotlib.pyplot as plt

    samples = run.recorder.samples
    fig, (ax_rate, ax_lat, ax_fleet) = plt.subplots(3, 1, figsize=(9, 11), sharex=True)
    fig.suptitle(title)
    for key, label in (("pings_sent", "pings sent"), ("applied", "positions indexed")):
        readings = [(s["t"], s[key]) for s in samples if s.get(key) is not None]
        x, y = per_second_series(readings)
        ax_rate.plot(x, y, label=label)
    ax_rate.set_ylabel("per second")
    ax_rate.set_title("Location pings")
    ax_rate.grid(True, alpha=0.3)
    ax_rate.legend(loc="upper left")

    points = sorted(run.index_points)
    if points:
        ax_lat.scatter([t for t, _ in points], [ms for _, ms in points], s=4, alpha=0.4)
        by_second: dict[int, list[float]] = {}
        for t, ms in points:
            by_second.setdefault(int(t), []).append(ms)
        seconds = sorted(by_second)
        for q in (50, 99):
            summary = [latency_summary(by_second[s])[f"p{q}_ms"] for s in seconds]
            ax_lat.plot(seconds, summary, label=f"p{q} each second")
    if run.loop_lags:
        lags = sorted(run.loop_lags)
        ax_lat.plot(
            [t for t, _ in lags], [ms for _, ms in lags], label="load generator's loop late by"
        )
    if points or run.loop_lags:
        ax_lat.legend(loc="upper left")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title("Ping sent → visible to matching (sampled pings)")
    ax_lat.grid(True, alpha=0.3)

    t = [s["t"] for s in samples]
    ax_fleet.plot(t, [s.get("connected") or 0 for s in samples], label="drivers connected")
    ax_fleet.plot(t, [s.get("busy_drivers") or 0 for s in samples], label="drivers on a ride")
    ax_fleet.plot(t, [s.get("waiting") or 0 for s in samples], label="bookings waiting")
    ax_fleet.set_xlabel("seconds since start")
    ax_fleet.set_ylabel("count")
    ax_fleet.set_title("The fleet")
    ax_fleet.grid(True, alpha=0.3)
    ax_fleet.legend(loc="upper left")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
