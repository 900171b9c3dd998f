"""One load run: bring a fleet up, book on a fixed clock, let drivers work their offers,
drain, then check every booking in the database (or through the API).

``smartroute bench e2e`` and ``smartroute simulate`` are this run with different drivers
(``DriverPolicy``) and different reports.

Bookings are sent open loop: the i-th leaves at ``start + i / rate`` from its own pool,
whatever earlier answers are doing, so a slow engine shows up as latency, not as a lower
offered rate. Latency is measured from the scheduled send time, so a late send (the
generator falling behind) counts against the result rather than hiding it; the
generator's own lag is reported beside it.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import requests
from sqlalchemy import text

from dispatch.db import make_engine
from dispatch.eta import GreatCircleEta
from smartroute_sim.city import CityMap, Fleet, Timers, parse_time
from smartroute_sim.client import Api
from smartroute_sim.driver import SimulatedDriver
from smartroute_sim.engine import EngineWatch, Target, broker_client, queue_depths
from smartroute_sim.report import Recorder

log = logging.getLogger(__name__)

FINAL_OK = "completed"


@dataclass(frozen=True)
class DriverPolicy:
    """How drivers answer offers. Probabilities of accept, decline and ignore sum to one."""

    accept: float = 1.0
    decline: float = 0.0
    ignore: float = 0.0
    ping_every_s: float = 15.0
    # 0: the ride is started and completed as soon as it is accepted; otherwise simulated
    # seconds per real second, so a 6-minute drive to a pickup takes 6 s at 60.
    time_compression: float = 0.0
    speed_kmh: float = 25.0
    # "relay": accept, decline, start and complete over the driver's Socket.IO connection,
    # as drivers' apps do; "http": POST /v1/bookings/<id>/<action>.
    actions_over: str = "relay"


@dataclass(frozen=True)
class LoadPlan:
    rate: float
    duration_s: float
    drivers: int
    riders: int
    seed: int = 1
    drain_s: float = 30.0
    send_threads: int = 64
    driver_threads: int = 32


class LoadRun:
    def __init__(
        self,
        target: Target,
        plan: LoadPlan,
        policy: DriverPolicy,
        city: CityMap | None = None,
        on_sample: Callable[[dict], None] | None = None,
    ) -> None:
        self.target = target
        self.plan = plan
        self.policy = policy
        self.city = city or CityMap(seed=plan.seed)
        self.on_sample = on_sample
        self.recorder = Recorder()
        self.api = Api(target.api)
        self.fleet = Fleet(self.api, target.relay, target.admin_token, self.city, self.recorder)
        self.send_pool = cf.ThreadPoolExecutor(plan.send_threads, thread_name_prefix="book")
        self.driver_pool = cf.ThreadPoolExecutor(plan.driver_threads, thread_name_prefix="drive")
        self.timers = Timers(self.driver_pool, self._client_error)
        self.lock = threading.Lock()
        self.booked: dict[int, float] = {}  # booking id -> scheduled send (epoch seconds)
        self.pushed: dict[int, float] = {}  # booking id -> first new_assignment received
        self.completed: set[int] = set()
        self.double_seen = 0
        self.all_done = threading.Condition(self.lock)
        self.running = threading.Event()
        self.sending_window: tuple[float, float] = (0.0, 0.0)
        self.broker = broker_client(target.broker_url)
        self.memory = EngineWatch(target.root_pid, target.settings.data_dir.resolve())
        self.loadgen_cpu_percent: float | None = None
        self.rider_ids: set[int] = set()
        self.http_requests = 0  # Sent while bookings flowed: bookings, pings, actions.

    # --- The run -------------------------------------------------------------------------

    def execute(self) -> dict:
        run_id = f"load-{uuid.uuid4().hex[:8]}"
        self.memory.start()
        self.running.set()
        sampler = threading.Thread(target=self._sample_loop, name="sampler", daemon=True)
        sampler.start()
        try:
            self.fleet.bring_up(
                self.plan.drivers, self.plan.riders, self.on_offer, run_id, self.policy.actions_over
            )
            if threading.current_thread() is threading.main_thread():
                # python-socketio chains its own SIGINT handler, which disconnects every
                # client one by one first; Ctrl-C should stop the run (and the engine) now.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            self.recorder.count("drivers_online", len(self.fleet.drivers))
            self.rider_ids = {r.id for r in self.fleet.riders}
            for i, driver in enumerate(self.fleet.drivers):
                # Spread the pings evenly over the interval rather than all at once.
                delay = self.policy.ping_every_s * i / max(1, len(self.fleet.drivers))
                self.timers.after(delay, self._ping_loop, driver)
            cpu_before, wall_before = _cpu_s(), time.monotonic()
            http_before = self.api.sent
            self.memory.count_cpu_from_now()
            self._send_bookings()
            self._drain()
            self.http_requests = self.api.sent - http_before
            self.loadgen_cpu_percent = round(
                100 * (_cpu_s() - cpu_before) / max(1e-9, time.monotonic() - wall_before), 1
            )
        finally:
            self.running.clear()
            sampler.join()
            self.timers.close()
            self.send_pool.shutdown(wait=True)
            self.driver_pool.shutdown(wait=True)
            memory = self.memory.stop()
            self.fleet.go_offline()
            self.fleet.close()
        return self._results(memory)

    def _send_bookings(self) -> None:
        rng = random.Random(self.plan.seed + 1)
        centres = self.city.centres()
        count = int(self.plan.rate * self.plan.duration_s)
        trips = [self.city.trip(rng, centres) for _ in range(count)]
        start = time.monotonic() + 0.2
        offset = time.time() - time.monotonic()
        for i, trip in enumerate(trips):
            due = start + i / self.plan.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.send_pool.submit(
                self._book, self.fleet.riders[i % len(self.fleet.riders)], trip, due, due + offset
            )
        self.sending_window = (start, start + count / self.plan.rate)

    def _book(self, rider, trip: dict, due: float, due_epoch: float) -> None:
        self.recorder.latency("send_lag", (time.monotonic() - due) * 1000)
        try:
            response = self.api.call(
                "POST",
                "/v1/bookings",
                trip,
                token=rider.token,
                retry=True,
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        except requests.RequestException:
            self.recorder.count("booking_errors")
            return
        self.recorder.latency("accept", (time.monotonic() - due) * 1000)
        if response.status_code == 202:
            booking_id = response.json()["id"]
            with self.lock:
                self.booked[booking_id] = due_epoch
                pushed = self.pushed.get(booking_id)
            self.recorder.count("booked")
            if pushed is not None:  # The push beat the 202 home.
                self.recorder.latency("book_to_push", (pushed - due_epoch) * 1000)
        elif response.status_code == 429:
            self.recorder.count("rate_limited")
        else:
            self.recorder.count("booking_errors")

    def _drain(self) -> None:
        deadline = time.monotonic() + self.plan.drain_s
        with self.all_done:
            while not set(self.booked) <= self.completed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.all_done.wait(left)

    # --- Drivers -------------------------------------------------------------------------

    def on_offer(self, driver: SimulatedDriver, data: dict, _how: str) -> None:
        """A new_assignment reached this driver's Socket.IO client (on its reader thread)."""
        received = time.time()
        if not driver.first_offer(data):
            self.recorder.count("duplicate_pushes")
            return
        booking_id = data["id"]
        if data.get("rider_id") not in self.rider_ids:
            # A booking this run did not make (an engine shared with others): serve it, so
            # the driver is free again, but keep it out of this run's numbers.
            self.recorder.count("foreign_offers")
            driver.hold(booking_id)
            self.timers.submit(self._answer, driver, data)
            return
        assigned, created = parse_time(data.get("assigned_at")), parse_time(data.get("created_at"))
        self.recorder.count("pushed")
        if assigned is not None:
            self.recorder.latency("push", (received - assigned) * 1000)
            if created is not None:
                self.recorder.latency("assign", (assigned - created) * 1000)
        with self.lock:
            first = booking_id not in self.pushed
            self.pushed.setdefault(booking_id, received)
            sent = self.booked.get(booking_id)
        if first and sent is not None:
            self.recorder.latency("book_to_push", (received - sent) * 1000)
        if driver.hold(booking_id) is not None:
            self.double_seen += 1
        self.timers.submit(self._answer, driver, data)

    def _decide(self, driver: SimulatedDriver) -> str:
        with driver.lock:
            r = driver.rng.random()
        if r < self.policy.ignore:
            return "ignore"
        if r < self.policy.ignore + self.policy.decline:
            return "decline"
        return "accept"

    def _answer(self, driver: SimulatedDriver, booking: dict) -> None:
        choice = self._decide(driver)
        if choice == "ignore":
            # The offer lapses after the offer window and goes to someone else.
            self.recorder.count("ignored")
            driver.let_go(booking["id"])
            return
        if choice == "decline":
            driver.act(booking["id"], "decline")
            self.recorder.count("declined")
            driver.let_go(booking["id"])
            return
        if not driver.act(booking["id"], "accept"):
            driver.let_go(booking["id"])
            return
        self.recorder.count("accepted")
        if self.policy.time_compression <= 0:
            self._start(driver, booking)
        else:
            self.timers.after(
                self._drive_s(driver.position, booking["pickup"]), self._start, driver, booking
            )

    def _start(self, driver: SimulatedDriver, booking: dict) -> None:
        if self.policy.time_compression > 0:
            driver.position = booking["pickup"]
            self._ping(driver)
        if not driver.act(booking["id"], "start"):
            driver.let_go(booking["id"])
            return
        self.recorder.count("started")
        if self.policy.time_compression <= 0:
            self._complete(driver, booking)
        else:
            self.timers.after(
                self._drive_s(booking["pickup"], booking["dropoff"]),
                self._complete,
                driver,
                booking,
            )

    def _complete(self, driver: SimulatedDriver, booking: dict) -> None:
        if self.policy.time_compression > 0:
            driver.position = booking["dropoff"]
            self._ping(driver)
        ok = driver.act(booking["id"], "complete")
        driver.let_go(booking["id"])
        if ok:
            self.recorder.count("completed")
            with self.all_done:
                self.completed.add(booking["id"])
                self.all_done.notify_all()

    def _drive_s(self, a: dict, b: dict) -> float:
        # The engine's own cost model: a driver takes as long as the matcher expected.
        eta_s = GreatCircleEta(speed_kmh=self.policy.speed_kmh).eta_s(
            a["lat"], a["lng"], b["lat"], b["lng"]
        )
        return eta_s / self.policy.time_compression

    def _ping(self, driver: SimulatedDriver) -> None:
        response = driver.ping()
        self.recorder.count(
            "pings" if response is not None and response.status_code == 200 else "ping_errors"
        )

    def _ping_loop(self, driver: SimulatedDriver) -> None:
        if not self.running.is_set():
            return
        self._ping(driver)
        self.timers.after(self.policy.ping_every_s, self._ping_loop, driver)

    def _client_error(self, exc: BaseException) -> None:
        self.recorder.count("client_errors")
        log.warning("a simulated client failed: %r", exc)

    # --- Gauges --------------------------------------------------------------------------

    def _sample_loop(self) -> None:
        queues = self.target.settings.queues
        while self.running.is_set():
            with self.lock:
                waiting = len(set(self.booked) - set(self.pushed))
            busy = sum(1 for d in self.fleet.drivers if d.holding is not None)
            depths = queue_depths(self.broker, queues)
            per_queue = {f"depth:{q}": n for q, n in (depths or {}).items()}
            row = self.recorder.sample(
                queue_depth=sum(depths.values()) if depths is not None else None,
                waiting=waiting,
                busy_drivers=busy,
                **per_queue,
            )
            if self.on_sample is not None:
                self.on_sample(row)
            time.sleep(1.0)

    # --- Checks --------------------------------------------------------------------------

    def _results(self, memory: dict) -> dict:
        ids = sorted(self.booked)
        driver_ids = [d.id for d in self.fleet.drivers]
        if self.target.database_url:
            statuses, double = sql_checks(self.target.database_url, ids, driver_ids)
            checked_by = "sql"
        else:
            statuses, double = self._api_checks(ids), None
            checked_by = "api"
        missing = sum(1 for i in ids if i not in statuses)
        unfinished = sum(1 for i in ids if i in statuses and statuses[i] != FINAL_OK)
        by_status: dict[str, int] = {}
        for status in statuses.values():
            by_status[status] = by_status.get(status, 0) + 1
        start, end = self.sending_window
        window = self.target.settings.batch_window_s
        # Steady-state throughput: assignments pushed while bookings were being sent, shifted
        # by the batch window (a booking's push trails its send by about one window).
        in_window = [
            t
            for t in self.recorder.times.get("pushed", [])
            if start + window <= t + self.recorder.started <= end + window
        ]
        span = max(1e-9, end - start)
        return {
            "bookings": len(ids),
            "missing": missing,
            "unfinished": unfinished,
            "lost": missing + unfinished,
            # Which, and where each stopped (the first few): what to look up after a run.
            "lost_bookings": dict(
                [(i, statuses.get(i, "missing")) for i in ids if statuses.get(i) != FINAL_OK][:20]
            ),
            "by_status": by_status,
            "double_assigned": double if double is not None else self.double_seen,
            "double_assigned_seen_by_drivers": self.double_seen,
            "checked_by": checked_by,
            "rate_pushed_in_window": round(len(in_window) / span, 2),
            "rate_accepted": round(self.recorder.counts["booked"] / span, 2),
            "counts": dict(self.recorder.counts),
            "http_requests": self.http_requests,
            "max_queue_depth": {
                key.removeprefix("depth:"): max(row.get(key) or 0 for row in self.recorder.samples)
                for key in {
                    k for row in self.recorder.samples for k in row if k.startswith("depth:")
                }
            },
            # The generator shares the machine's cores with the engine: what it used of them.
            "loadgen_cpu_percent": self.loadgen_cpu_percent,
            # What one booking's whole life (book, match, push, accept, start, complete,
            # the drivers' pings meanwhile) cost each part of the engine, in CPU.
            "cpu_ms_per_booking_by_role": {
                role: round(1000 * seconds / max(1, len(ids)), 2)
                for role, seconds in memory.get("cpu_s_by_role", {}).items()
            },
            **memory,
        }

    def _api_checks(self, ids: list[int]) -> dict[int, str]:
        def status(booking_id: int) -> tuple[int, str | None]:
            response = self.api.call(
                "GET", f"/v1/bookings/{booking_id}", token=self.target.admin_token
            )
            return booking_id, response.json()["status"] if response.status_code == 200 else None

        with cf.ThreadPoolExecutor(16) as pool:
            return {i: s for i, s in pool.map(status, ids) if s is not None}


def _cpu_s() -> float:
    """CPU seconds this process (the load generator, every thread) has used."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


# A driver holds a booking from its offer (to 'assigned') until the booking next leaves the
# active statuses (decline or lapse back to 'pending', complete, cancel). Event ids come from
# one sequence, taken while the rows are locked, so for one driver they are in causal order;
# timestamps are not (now() is each transaction's start). Two holds of one driver whose id
# ranges overlap are a double assignment, even if the unique index never saw both at once.
DOUBLE_ASSIGNED_SQL = """
WITH holds AS (
    SELECT e.booking_id, e.driver_id, e.id AS from_id,
           (SELECT min(f.id) FROM booking_events f
             WHERE f.booking_id = e.booking_id AND f.id > e.id
               AND f.to_status IN ('pending', 'completed', 'cancelled', 'expired')) AS to_id
      FROM booking_events e
     WHERE e.to_status = 'assigned' AND e.driver_id = ANY(:drivers)
)
SELECT count(*) FROM holds a JOIN holds b
    ON a.driver_id = b.driver_id AND a.booking_id < b.booking_id
   AND a.from_id < coalesce(b.to_id, 9223372036854775807)
   AND b.from_id < coalesce(a.to_id, 9223372036854775807)
"""


def sql_checks(
    database_url: str, ids: list[int], driver_ids: list[int]
) -> tuple[dict[int, str], int]:
    """Each booking's status, and how many pairs of holds by one driver overlapped."""
    engine = make_engine(
        database_url, pool_size=1, max_overflow=0, application_name="smartroute-bench"
    )
    try:
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    text("SELECT id, status FROM cab_bookings WHERE id = ANY(:ids)"), {"ids": ids}
                ).all()
            )
            double = conn.scalar(text(DOUBLE_ASSIGNED_SQL), {"drivers": driver_ids})
    finally:
        engine.dispose()
    return statuses, int(double or 0)
