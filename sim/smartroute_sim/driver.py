"""The one simulated driver: a driver's app, as the demo, the load generator, the city
simulation and the chaos suite's load all run it.

It goes online (location, a Socket.IO connection to the relay, status available), hears
offers (``new_assignment``), takes each booking through its steps (accept, arrive, start,
complete; or decline, cancel with a reason, no-show) over its relay connection
(``driver_action``) or over HTTP, and pings its location. A ``reposition`` suggestion goes
to ``on_reposition``; a driver told to follow it drives toward it while idle
(``heading``, ``drive_toward_heading``). What a driver does with an
accepted ride besides driving it (give it back, rate the rider) is drawn by
``ride_choices``. Like a real app under faults, its Socket.IO client reconnects by itself and asks
for what it missed (``last_event_id``); given several relays it moves to the next one at
once when its own goes away; a step over the relay that gets no answer is sent over HTTP;
and a retried step that finds its first attempt landed (a 409 ``invalid_transition`` whose
``current_status`` is the step's own result) counts as done.

What it does with an offer is its owner's choice. Given ``on_offer``, the driver hands every
offer to it (the load generator schedules the steps on its own clock and pool, for fleets
of hundreds). Without, ``start`` runs the app's own loops on threads: take each offer
through its steps as soon as it comes, ping every second, and when a ping says the driver
is busy with nothing in hand, ask the API what it holds (an offer whose push was lost).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
import socketio

from dispatch.geo import haversine_km
from smartroute_sim.client import HTTP_TIMEOUT_S, Answer, Api, Endpoints, error_of
from smartroute_sim.rider import Rating, draw_rating

log = logging.getLogger(__name__)

# What each step leaves a booking in: a retry that finds it there finds its own step landed.
LANDED = {
    "accept": "accepted",
    "arrive": "arrived",
    "start": "in_progress",
    "complete": "completed",
    "no_show": "no_show",
}
# The HTTP path of a step whose name is not its path's.
HTTP_PATHS = {"no_show": "no-show"}
DRIVER_CANCEL_REASONS = ("vehicle trouble", "stuck in traffic", "passenger unreachable")
DRIVER_COMMENTS = ("polite rider", "on time", "kept me waiting", "left litter")
# Answers worth trying again: the engine was busy or a server was away.
RETRYABLE = {429, 500, 502, 503, 504}

# (driver, offer, how): how is "push" (new_assignment) or "fetch" (GET /v1/drivers/me).
OfferHandler = Callable[["SimulatedDriver", dict, str], None]
# (driver, suggestion): a ``reposition`` the engine sent (zone, lat, lng, reason, expires_at).
RepositionHandler = Callable[["SimulatedDriver", dict], None]


def _ignore(*_args) -> None:
    return None


@dataclass(frozen=True)
class RideChoices:
    """What a driver does with one accepted ride besides driving it."""

    cancel_reason: str | None = None  # Gives the ride back after accepting it.
    rating: Rating | None = None  # Of the rider, after completing the ride.


def ride_choices(
    seed: int, index: int, attempt: int, cancel: float, rate: float, comment: float = 0.5
) -> RideChoices:
    """The choices for the ``attempt``-th acceptance of the run's ``index``-th booking,
    drawn from the run's seed: one seed gives the same cancels and ratings whichever
    driver the matcher picks."""
    if cancel <= 0 and rate <= 0:
        return RideChoices()
    rng = random.Random(f"{seed}:driver:{index}:{attempt}")
    reason = rng.choice(DRIVER_CANCEL_REASONS) if rng.random() < cancel else None
    return RideChoices(reason, draw_rating(rng, rate, comment, DRIVER_COMMENTS))


class SimulatedDriver:
    """One driver of ``api``'s user ``user_id`` (``api`` carries its token)."""

    def __init__(
        self,
        api: Api,
        user_id: int,
        position: dict,
        rng: random.Random,
        *,
        relays: list[str] | str,
        relay_start: int = 0,
        over_relay: bool = True,
        last_event_id: int | None = None,
        on_offer: OfferHandler | None = None,
        on_connect: Callable[[SimulatedDriver, str], None] | None = None,
        on_step: Callable[[SimulatedDriver, int, str], None] | None = None,
        count: Callable[[str], None] | None = None,
        on_reposition: RepositionHandler | None = None,
    ) -> None:
        self.api = api
        self.id = user_id
        self.position = position
        self.rng = rng
        self.relays = Endpoints(relays, start=relay_start)
        # "relay": steps over the driver's Socket.IO connection, as drivers' apps do;
        # otherwise POST /v1/bookings/<id>/<action>. Over HTTP anyway while it is down.
        self.over_relay = over_relay
        # Sent on every (re)connect, so the relay replays what was missed meanwhile. None
        # until the first event: a fresh driver has nothing to catch up on.
        self.last_event_id = last_event_id
        self.on_offer = on_offer or self.take
        self.on_connect = on_connect or _ignore
        self.on_step = on_step or _ignore  # After a step landed (the demo tells it).
        self.count = count or _ignore  # Events worth counting: socket drops, fallbacks.
        self.on_reposition = on_reposition or _ignore
        # Where the driver is heading while idle, following a ``reposition``; None: staying.
        self.heading: dict | None = None
        self.lock = threading.Lock()
        # The relay runs one action per connection at a time and answers a second one 429
        # "busy": steps over the connection go one after another, as an app sends them
        # (a new offer's accept can otherwise overtake the last ride's complete).
        self.stepping = threading.Lock()
        self.holding: int | None = None  # The booking in hand, from its offer until let go.
        self.offered: set[int] = set()
        self.offers: queue.Queue = queue.Queue()
        self.sio: socketio.Client | None = None
        self.connecting_to: str | None = None
        self.closing = threading.Event()
        self.disconnected = threading.Event()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    # --- Online ----------------------------------------------------------------------------

    def go_online(self) -> None:
        """Location first (the matcher needs one), then the relay, then available: no offer
        can come before the connection that carries it."""
        self.api.ok("PUT", "/v1/drivers/me/location", self.position)
        self.connect()
        self.api.ok("PUT", "/v1/drivers/me/status", {"status": "available"})

    def go_offline(self) -> None:
        self.api.answer("PUT", "/v1/drivers/me/status", {"status": "offline"})

    def auth(self) -> dict:
        auth = {"token": self.api.token}
        if self.last_event_id is not None:
            auth["last_event_id"] = self.last_event_id
        return auth

    def connect(self) -> None:
        # One relay: python-socketio reconnects to it by itself. Several: this driver moves
        # to the next one itself (_stay_connected), which python-socketio cannot.
        failover = len(self.relays.urls) > 1
        self.sio = socketio.Client(
            reconnection=not failover, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.sio.on("new_assignment", self._pushed)
        self.sio.on("reposition", lambda data: self.on_reposition(self, data))
        self.sio.on("connect", lambda: self.on_connect(self, self.connecting_to))
        self.sio.on("disconnect", self._dropped)
        self._connect(self.relays.current)

    def _connect(self, url: str) -> None:
        self.connecting_to = url
        self.sio.connect(url, auth=self.auth, transports=["websocket"], wait_timeout=HTTP_TIMEOUT_S)

    def _dropped(self, *_reason) -> None:
        self.disconnected.set()
        if not self.closing.is_set():  # Only the drops nobody asked for.
            self.count("socket_disconnects")

    def _stay_connected(self) -> None:
        """Back on a relay, the next one if this one is gone, as soon as the socket drops."""
        while not self.stop.is_set():
            if not self.disconnected.wait(0.2):
                continue
            url = self.relays.current
            try:
                self._connect(url)
                self.disconnected.clear()
            except socketio.exceptions.ConnectionError:
                self.relays.unreachable(url)
                self.stop.wait(0.1)  # Every relay refused: a breath before the next try.
            except ValueError:
                # A server's orderly close is announced before Engine.IO's client has
                # finished closing; it refuses to connect again until it has.
                self.stop.wait(0.05)

    def disconnect(self) -> None:
        self.closing.set()
        if self.sio is not None:
            self.sio.disconnect()

    # --- Offers ----------------------------------------------------------------------------

    def _pushed(self, data: dict) -> None:
        event_id = data.get("event_id")
        if isinstance(event_id, int):
            self.last_event_id = max(self.last_event_id or 0, event_id)
        self.on_offer(self, data, "push")

    def first_offer(self, data: dict) -> bool:
        """True the first time this driver hears of this booking (delivery is at least
        once: live and replayed, or pushed and fetched)."""
        with self.lock:
            if data["id"] in self.offered:
                return False
            self.offered.add(data["id"])
            return True

    def hold(self, booking_id: int) -> int | None:
        """Take ``booking_id`` in hand; the booking held before, if another."""
        with self.lock:
            before, self.holding = self.holding, booking_id
        return before if before != booking_id else None

    def let_go(self, booking_id: int) -> None:
        with self.lock:
            if self.holding == booking_id:
                self.holding = None

    def fetch_offer(self) -> None:
        """Ask the API what this driver holds; an offer found there is handed on."""
        response = self.api.answer("GET", "/v1/drivers/me")
        current = (
            response.json().get("current_booking")
            if (response is not None and response.status_code == 200)
            else None
        )
        if current and current["status"] == "assigned" and self.holding is None:
            self.on_offer(self, current, "fetch")

    # --- Steps and pings -------------------------------------------------------------------

    def send(
        self, booking_id: int, action: str, reason: str | None = None
    ) -> tuple[int | None, dict]:
        """One attempt at a step: its status (None when nothing answered) and the answer's
        body (the booking, or the error object). Over the relay when asked to and
        connected; over HTTP otherwise, or when the relay gave no answer (as an app falls
        back). A cancel carries its ``reason``."""
        path = f"/v1/bookings/{booking_id}/{HTTP_PATHS.get(action, action)}"
        sio = self.sio
        if self.over_relay and sio is not None and sio.connected:
            started, relay = time.monotonic(), self.connecting_to
            message = {"booking_id": booking_id, "action": action}
            if reason is not None:
                message["reason"] = reason
            try:
                with self.stepping:
                    answer = sio.call("driver_action", message, timeout=HTTP_TIMEOUT_S)
            except socketio.exceptions.SocketIOError:
                answer = None  # The relay went away mid-call.
            status = answer.get("status") if isinstance(answer, dict) else None
            error = answer.get("error") or {} if status is not None and status >= 400 else {}
            if self.api.observe is not None:
                self.api.observe(
                    Answer(
                        f"relay {path}",
                        status,
                        started,
                        time.monotonic() - started,
                        error.get("code"),
                        url=relay,
                        failure=None if status else "cut",
                    )
                )
            if status is not None:
                self.count("relay_actions")
                return status, (error if status >= 400 else answer.get("booking") or {})
            self.count("relay_action_fallbacks")
        body = {"reason": reason} if reason is not None else None
        response = self.api.answer("POST", path, body, retry=True)
        if response is None:
            return None, {}
        if response.status_code == 200:
            return 200, response.json()
        return response.status_code, error_of(response)

    def act(
        self, booking_id: int, action: str, persist: bool = False, reason: str | None = None
    ) -> dict | None:
        """A step: the booking as it left it once it landed, None if it did not. With
        ``persist``, tried again (while the driver is not stopped) until it lands or the
        engine says the ride is no longer this driver's; without, one attempt."""
        while True:
            status, body = self.send(booking_id, action, reason)
            if status == 200:
                return body or {"id": booking_id}
            if (
                status == 409
                and body.get("code") == "invalid_transition"
                and body.get("current_status") == LANDED.get(action)
            ):
                # An earlier attempt landed; its answer was lost.
                return {"id": booking_id, "status": body["current_status"]}
            if (
                not persist
                or self.stop.is_set()
                or (status is not None and status not in RETRYABLE)
            ):
                self.count(f"{action}_refused")
                log.info("%s of booking %s answered %s", action, booking_id, status)
                return None
            self.stop.wait(0.2)

    def drive_toward_heading(self, km: float) -> None:
        """Up to ``km`` along the straight line to ``heading``; there, heading nowhere."""
        with self.lock:
            target, here = self.heading, self.position
            if target is None:
                return
            left = haversine_km(here["lat"], here["lng"], target["lat"], target["lng"])
            if left <= km:
                self.position, self.heading = {"lat": target["lat"], "lng": target["lng"]}, None
                return
            share = km / left
            self.position = {
                "lat": round(here["lat"] + (target["lat"] - here["lat"]) * share, 6),
                "lng": round(here["lng"] + (target["lng"] - here["lng"]) * share, 6),
            }

    def ping(self) -> requests.Response | None:
        """The location, sent; the answer, or None when nothing answered."""
        return self.api.answer("PUT", "/v1/drivers/me/location", self.position, retry=True)

    # --- The app's own loops ---------------------------------------------------------------

    def start(
        self,
        stop: threading.Event,
        decline: float = 0.0,
        ride_s: float = 0.0,
        ping_every_s: float = 1.0,
    ) -> None:
        """Run the app on threads until ``stop``: each offer declined with probability
        ``decline``, else accepted, started and, ``ride_s`` later, completed."""
        self.stop = stop
        self.decline, self.ride_s, self.ping_every_s = decline, ride_s, ping_every_s
        self.sio.on("resync_required", lambda _data: self.fetch_offer())
        self.threads = [
            threading.Thread(target=self._work, daemon=True),
            threading.Thread(target=self._ping_loop, daemon=True),
        ]
        if len(self.relays.urls) > 1:
            self.threads.append(threading.Thread(target=self._stay_connected, daemon=True))
        for thread in self.threads:
            thread.start()

    def take(self, _driver: SimulatedDriver, data: dict, _how: str = "push") -> None:
        """Queue an offer for the work loop (what the app does with an offer by default)."""
        self.offers.put(data["id"])

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                booking_id = self.offers.get(timeout=0.2)
            except queue.Empty:
                continue
            if booking_id == self.holding:
                continue  # Offered by push and by fetch: one ride.
            self.hold(booking_id)
            if self.decline and self.rng.random() < self.decline:
                if self.act(booking_id, "decline"):
                    self.on_step(self, booking_id, "decline")
            else:
                for action in ("accept", "start", "complete"):
                    if action == "complete" and self.stop.wait(self.ride_s):
                        break
                    if not self.act(booking_id, action, persist=True):
                        break
                    self.on_step(self, booking_id, action)
            self.let_go(booking_id)

    def _ping_loop(self) -> None:
        while not self.stop.wait(self.ping_every_s):
            response = self.ping()
            if (
                response is not None
                and response.status_code == 200
                and response.json()["status"] == "busy"
                and self.holding is None
                and self.offers.empty()
            ):
                self.fetch_offer()

    def close(self) -> None:
        for thread in self.threads:
            thread.join(timeout=15)
        self.disconnect()
