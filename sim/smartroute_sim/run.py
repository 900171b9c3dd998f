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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
import requests
from sqlalchemy import text

from dispatch.db import make_engine
from dispatch.eta import GreatCircleEta
from smartroute_sim import rider as riders
from smartroute_sim.city import CityMap, Fleet, Rider, Timers, parse_time
from smartroute_sim.client import HTTP_TIMEOUT_S, Api
from smartroute_sim.driver import RideChoices, SimulatedDriver, ride_choices
from smartroute_sim.engine import EngineWatch, Target, broker_client, queue_depths
from smartroute_sim.report import Recorder
from smartroute_sim.ride_figures import RideTally, ride_figures_sql

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
    # The ride's other steps, all off by default (as ``bench`` runs): say "arrived" at the
    # pickup before starting (and report a no-show for a rider who never comes), give a
    # ride back after accepting it (probability), rate the rider after completing it
    # (probability).
    arrive: bool = False
    cancel_after_accept: float = 0.0
    rate: float = 0.0
    # The probability an idle driver follows a ``reposition`` suggestion, driving toward
    # it between pings (only with time_compression; 0: suggestions are only counted).
    follow_reposition: float = 0.0


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
    # What riders do besides booking (quotes, cancels, no-shows, ratings): off by default.
    rider_policy: riders.RiderPolicy = field(default_factory=riders.RiderPolicy)


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
        # Booking id -> the final status this run took it to (completed, cancelled by its
        # rider, no_show): what the database must say at the end.
        self.ended: dict[int, str] = {}
        self.plans: dict[int, riders.RiderPlan] = {}  # booking id -> its rider's plan
        self.index_of: dict[int, int] = {}  # booking id -> its place in the run
        self.rider_of: dict[int, Rider] = {}
        self.acceptances: Counter[int] = Counter()  # booking id -> times accepted
        self.no_show_wait_s = float(target.settings.no_show_wait_s)
        self.tally = RideTally()
        self.double_seen = 0
        self.all_done = threading.Condition(self.lock)
        self.running = threading.Event()
        self.sending_window: tuple[float, float] = (0.0, 0.0)
        self.broker = broker_client(target.broker_url)
        self.memory = EngineWatch(target.root_pid, target.settings.data_dir.resolve())
        self.loadgen_cpu_percent: float | None = None
        self.rider_ids: set[int] = set()
        self.http_requests = 0  # Sent while bookings flowed: bookings, pings, actions.
        self.reposition_rng = random.Random(f"{plan.seed}:reposition")

    # --- The run -------------------------------------------------------------------------

    @property
    def ride_events_on(self) -> bool:
        """Whether this run's riders or drivers do more than book, accept and complete."""
        return (
            self.plan.rider_policy.active
            or self.policy.arrive
            or self.policy.cancel_after_accept > 0
            or self.policy.rate > 0
        )

    def execute(self) -> dict:
        run_id = f"load-{uuid.uuid4().hex[:8]}"
        self.memory.start()
        self.running.set()
        sampler = threading.Thread(target=self._sample_loop, name="sampler", daemon=True)
        sampler.start()
        try:
            self.fleet.bring_up(
                self.plan.drivers,
                self.plan.riders,
                self.on_offer,
                run_id,
                self.policy.actions_over,
                on_reposition=self.on_reposition,
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
                self._book,
                self.fleet.riders[i % len(self.fleet.riders)],
                trip,
                due,
                due + offset,
                i,
            )
        self.sending_window = (start, start + count / self.plan.rate)

    def _book(self, rider: Rider, trip: dict, due: float, due_epoch: float, index: int) -> None:
        self.recorder.latency("send_lag", (time.monotonic() - due) * 1000)
        plan = riders.rider_plan(self.plan.rider_policy, self.plan.seed, index)
        body = trip
        if plan.quote:
            quote = riders.ask_quote(self.api, rider.token, trip)
            if quote is not None:
                self.recorder.count("quotes")
                body = {**trip, "quote_id": quote["quote_id"]}
        try:
            response = self.api.call(
                "POST",
                "/v1/bookings",
                body,
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
                self.plans[booking_id] = plan
                self.index_of[booking_id] = index
                self.rider_of[booking_id] = rider
                pushed = self.pushed.get(booking_id)
                self.all_done.notify_all()  # A driver may be waiting for this booking's plan.
            self.recorder.count("booked")
            if "quote_id" in body:
                self.recorder.count("booked_on_quote")
            if pushed is not None:  # The push beat the 202 home.
                self.recorder.latency("book_to_push", (pushed - due_epoch) * 1000)
            if plan.cancel == "before_assignment":
                self._rider_cancels(booking_id)
        elif response.status_code == 429:
            self.recorder.count("rate_limited")
        else:
            self.recorder.count("booking_errors")

    def _drain(self) -> None:
        deadline = time.monotonic() + self.plan.drain_s
        with self.all_done:
            while not set(self.booked) <= set(self.ended):
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
        driver.heading = None  # An offer ends any repositioning.
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

    def on_reposition(self, driver: SimulatedDriver, data: dict) -> None:
        """A ``reposition`` reached this driver: followed, while idle, with the policy's
        probability (drawn from the run's seed, apart from the driver's own choices)."""
        self.recorder.count("reposition_suggestions")
        if self.policy.follow_reposition <= 0 or self.policy.time_compression <= 0:
            return
        with self.lock:
            follow = self.reposition_rng.random() < self.policy.follow_reposition
        if follow and driver.holding is None:
            driver.heading = {"lat": data["lat"], "lng": data["lng"]}
            self.recorder.count("repositioned")

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
        plan, choices = self._choices(booking)
        if plan.cancel == "after_assignment" and self._rider_cancels(booking["id"]):
            driver.let_go(booking["id"])
            return
        if choices.cancel_reason is not None and driver.act(
            booking["id"], "cancel", reason=choices.cancel_reason
        ):
            # Back to matching, never to this driver again.
            self.recorder.count("driver_cancellations")
            driver.let_go(booking["id"])
            return
        if self.policy.time_compression <= 0:
            self._start(driver, booking, plan, choices)
        else:
            self.timers.after(
                self._drive_s(driver.position, booking["pickup"]),
                self._start,
                driver,
                booking,
                plan,
                choices,
            )

    def _start(
        self,
        driver: SimulatedDriver,
        booking: dict,
        plan: riders.RiderPlan,
        choices: RideChoices,
    ) -> None:
        if self.policy.time_compression > 0:
            driver.position = booking["pickup"]
            self._ping(driver)
        if self.policy.arrive:
            if not driver.act(booking["id"], "arrive"):
                driver.let_go(booking["id"])
                return
            self.recorder.count("arrived")
            if plan.no_show:
                # The engine judges the wait by its own clock: no time compression here.
                self.timers.after(self.no_show_wait_s + 0.2, self._no_show, driver, booking)
                return
        if not driver.act(booking["id"], "start"):
            driver.let_go(booking["id"])
            return
        self.recorder.count("started")
        if self.policy.time_compression <= 0:
            self._complete(driver, booking, plan, choices)
        else:
            self.timers.after(
                self._drive_s(booking["pickup"], booking["dropoff"]),
                self._complete,
                driver,
                booking,
                plan,
                choices,
            )

    def _no_show(self, driver: SimulatedDriver, booking: dict, tries: int = 0) -> None:
        """The rider never came: the driver reports it once the engine's wait is over."""
        status, body = driver.send(booking["id"], "no_show")
        if status == 409 and body.get("code") == "no_show_too_early" and tries < 20:
            self.timers.after(0.25, self._no_show, driver, booking, tries + 1)
            return
        driver.let_go(booking["id"])
        if status != 200:
            self.recorder.count("no_show_refused")
            return
        self.recorder.count("no_shows")
        self.tally.fee("no_show", body.get("cancellation_fee"))
        self._end(booking["id"], "no_show")

    def _complete(
        self,
        driver: SimulatedDriver,
        booking: dict,
        plan: riders.RiderPlan,
        choices: RideChoices,
    ) -> None:
        if self.policy.time_compression > 0:
            driver.position = booking["dropoff"]
            self._ping(driver)
        done = driver.act(booking["id"], "complete")
        driver.let_go(booking["id"])
        if done is None:
            return
        self.recorder.count("completed")
        self.tally.fare(done.get("fare"))
        rider = self.rider_of.get(booking["id"])
        if plan.rating is not None and rider is not None:
            self._rated(
                "rider", plan.rating, riders.rate(self.api, rider.token, booking["id"], plan.rating)
            )
        if choices.rating is not None:
            self._rated(
                "driver",
                choices.rating,
                riders.rate(driver.api, driver.api.token or "", booking["id"], choices.rating),
            )
        self._end(booking["id"], FINAL_OK)

    # --- The riders' side and the ride's figures -----------------------------------------

    def _choices(self, booking: dict) -> tuple[riders.RiderPlan, RideChoices]:
        """This booking's rider plan and its driver's choices for this acceptance (none for
        a booking another run made). A push can beat the booking's 202 home: wait for it."""
        booking_id = booking["id"]
        if not self.ride_events_on or booking.get("rider_id") not in self.rider_ids:
            return riders.RiderPlan(), RideChoices()
        with self.all_done:
            self.all_done.wait_for(lambda: booking_id in self.index_of, timeout=HTTP_TIMEOUT_S)
            self.acceptances[booking_id] += 1
            attempt = self.acceptances[booking_id]
            index = self.index_of.get(booking_id)
            plan = self.plans.get(booking_id, riders.RiderPlan())
        if index is None:
            return plan, RideChoices()
        choices = ride_choices(
            self.plan.seed,
            index,
            attempt,
            self.policy.cancel_after_accept,
            self.policy.rate,
            self.plan.rider_policy.comment,
        )
        return plan, choices

    def _rider_cancels(self, booking_id: int) -> bool:
        """The booking's rider cancels it (with the plan's reason); True if it landed."""
        with self.lock:
            rider, plan = self.rider_of[booking_id], self.plans[booking_id]
        cancelled = riders.cancel(self.api, rider.token, booking_id, plan.cancel_reason)
        if cancelled is None:
            self.recorder.count("rider_cancel_refused")
            return False
        self.recorder.count("rider_cancellations")
        self.recorder.count(f"rider_cancellations_{plan.cancel}")
        self.tally.fee("rider_cancellation", cancelled.get("cancellation_fee"))
        self._end(booking_id, "cancelled")
        return True

    def _rated(self, side: str, rating: riders.Rating, landed: bool) -> None:
        if not landed:
            self.recorder.count(f"rating_by_{side}_refused")
            return
        self.recorder.count(f"ratings_by_{side}")
        self.tally.rating(side, rating.stars, rating.comment)

    def _end(self, booking_id: int, status: str) -> None:
        with self.all_done:
            self.ended[booking_id] = status
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
        if driver.heading is not None and driver.holding is None:
            # The simulated kilometres driven since the last ping.
            driver.drive_toward_heading(
                self.policy.speed_kmh
                / 3600
                * self.policy.ping_every_s
                * self.policy.time_compression
            )
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
                **self._gauges(),
                **per_queue,
            )
            if self.on_sample is not None:
                self.on_sample(row)
            time.sleep(1.0)

    def _gauges(self) -> dict:
        """More readings for each second's sample, beside the queues and drivers."""
        return {}

    # --- Checks --------------------------------------------------------------------------

    def _results(self, memory: dict) -> dict:
        ids = sorted(self.booked)
        driver_ids = [d.id for d in self.fleet.drivers]
        rides = self.ride_events_on
        rider_ids = sorted(self.rider_ids)
        in_database: dict | None = None
        if self.target.database_url:
            statuses, double, in_database = sql_checks(
                self.target.database_url, ids, driver_ids, rider_ids if rides else None
            )
            checked_by = "sql"
        else:
            statuses, double = self._api_checks(ids), None
            checked_by = "api"
        # Each booking must be where this run took it: completed, or cancelled by its
        # rider, or a no-show.
        expected = {i: self.ended.get(i, FINAL_OK) for i in ids}
        missing = sum(1 for i in ids if i not in statuses)
        unfinished = sum(1 for i in ids if i in statuses and statuses[i] != expected[i])
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
                [(i, statuses.get(i, "missing")) for i in ids if statuses.get(i) != expected[i]][
                    :20
                ]
            ),
            "by_status": by_status,
            "double_assigned": double if double is not None else self.double_seen,
            "double_assigned_seen_by_drivers": self.double_seen,
            "checked_by": checked_by,
            "rate_pushed_in_window": round(len(in_window) / span, 2),
            "rate_accepted": round(self.recorder.counts["booked"] / span, 2),
            "counts": dict(self.recorder.counts),
            # Quotes, fares, cancellations, no-shows, arrivals and ratings: as the run made
            # them, and as the database has them (None when it cannot be read).
            **(
                {
                    "rides": {
                        "simulated": self.tally.figures(self.recorder.counts),
                        "database": in_database,
                    }
                }
                if rides
                else {}
            ),
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
               AND f.to_status IN ('pending', 'completed', 'cancelled', 'expired', 'no_show'))
           AS to_id
      FROM booking_events e
     WHERE e.to_status = 'assigned' AND e.driver_id = ANY(:drivers)
)
SELECT count(*) FROM holds a JOIN holds b
    ON a.driver_id = b.driver_id AND a.booking_id < b.booking_id
   AND a.from_id < coalesce(b.to_id, 9223372036854775807)
   AND b.from_id < coalesce(a.to_id, 9223372036854775807)
"""


def sql_checks(
    database_url: str, ids: list[int], driver_ids: list[int], rider_ids: list[int] | None = None
) -> tuple[dict[int, str], int, dict | None]:
    """Each booking's status, how many pairs of holds by one driver overlapped, and, given
    the run's riders, the ride figures (``ride_figures_sql``)."""
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
            rides = ride_figures_sql(conn, ids, rider_ids) if rider_ids is not None else None
    finally:
        engine.dispose()
    return statuses, int(double or 0), rides
