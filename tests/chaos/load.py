"""Steady load for the chaos suite: riders who book, drivers who take every ride.

Both behave as real apps do under faults. A rider retries a failed booking with the same
Idempotency-Key; a driver's Socket.IO client reconnects by itself and asks for what it
missed (``last_event_id``), pings its location every second, and works each offer
through accept, start and complete, giving up on an offer only when the engine says it
is no longer theirs (409). Half the drivers act over their relay connection
(``driver_action``), through the API while it is down; the other half over HTTP. When a
ping's answer says the driver is busy with nothing in hand, the app asks the API what it
holds: an offer whose push was lost still arrives.
Every answer is recorded for the invariant checks, with the way each offer arrived.

Given several API servers and relays (``api_urls``, ``relay_urls``), every client knows
them all, as an app given a list of hosts does: it stays on one while it answers and moves
to the next when it cannot be reached. A driver whose relay goes away connects to the next
one with its ``last_event_id`` at once.

Retries are safe because each request is idempotent or made so: a booking carries its
Idempotency-Key, a location ping is a plain write, and a driver's step (accept, start,
complete) that landed but whose answer was lost is retried and answered 409
``invalid_transition`` with the step's own result as ``current_status``, which the app
takes as done (only the booking's holder gets that answer; anyone else gets
``not_your_booking``).
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import requests
import socketio
import urllib3

from tests.integration.conftest import Client

CENTRE = (38.7223, -9.1393)
RETRYABLE = {429, 500, 502, 503, 504}
# What each step leaves a booking in: a retry that finds it there finds its own step landed.
LANDED = {"accept": "accepted", "start": "in_progress", "complete": "completed"}


def _near(rng: random.Random, km: float = 2.0) -> dict:
    return {"lat": CENTRE[0] + rng.uniform(-km, km) / 111,
            "lng": CENTRE[1] + rng.uniform(-km, km) / 87}


@dataclass
class Answer:
    """One HTTP answer (or failure to answer) and how long it took."""

    path: str
    status: int | None  # None: no answer at all (refused, reset or timed out).
    started: float  # time.monotonic() when the request was sent.
    seconds: float
    code: str | None = None
    url: str | None = None  # The server asked (an API's or, for driver actions, a relay's).
    # With no answer: "unsent" (the connection was refused: the server never saw it) or
    # "cut" (sent, then the connection failed or timed out: it may or may not have run).
    failure: str | None = None


class Endpoints:
    """One client's view of a service's servers: it stays on one while it can reach it,
    and moves to the next when it cannot."""

    def __init__(self, urls: list[str] | str, start: int = 0) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.index = start % len(self.urls)
        self.lock = threading.Lock()

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def unreachable(self, url: str) -> None:
        with self.lock:
            if self.urls[self.index] == url:
                self.index = (self.index + 1) % len(self.urls)


def _failure(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "unsent"
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.ConnectionError) and isinstance(
            reason, urllib3.exceptions.NewConnectionError):
        return "unsent"
    return "cut"


@dataclass
class Record:
    accepted: set[int] = field(default_factory=set)  # Bookings that got a 202.
    answers: list[Answer] = field(default_factory=list)
    # (booking, driver, version) of every new_assignment a driver's client received...
    offers_received: set[tuple[int, int, int]] = field(default_factory=set)
    # ...and of every offer a driver found only by asking the API (GET /v1/drivers/me).
    offers_fetched: set[tuple[int, int, int]] = field(default_factory=set)
    # (time.monotonic(), driver, relay URL) of every connection a driver's client opened.
    connections: list[tuple[float, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def statuses(self, path_prefix: str = "") -> Counter:
        with self.lock:
            return Counter(a.status for a in self.answers if a.path.startswith(path_prefix))


def _call(http: requests.Session, record: Record, method: str, where: Endpoints | str,
          path: str, **kwargs) -> requests.Response | None:
    url = where.current if isinstance(where, Endpoints) else where
    started = time.monotonic()
    try:
        response = http.request(method, url + path, timeout=10, **kwargs)
    except requests.RequestException as exc:
        record.answered(Answer(path, None, started, time.monotonic() - started, url=url,
                               failure=_failure(exc)))
        if isinstance(where, Endpoints):
            where.unreachable(url)
        return None
    code = None
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
            "application/json"):
        code = response.json().get("error", {}).get("code")
    record.answered(Answer(path, response.status_code, started, time.monotonic() - started,
                           code, url=url))
    return response


class Driver:
    def __init__(self, client: Client, relay_url: str | list[str], record: Record,
                 stop: threading.Event, seed: int, over_relay: bool = False,
                 api: Endpoints | None = None) -> None:
        self.client, self.record, self.stop = client, record, stop
        self.over_relay = over_relay
        self.api = api or Endpoints(client.base_url)
        # Drivers acting over HTTP and over the relay alike on each relay (over_relay is
        # every other seed).
        self.relays = Endpoints(relay_url, start=seed // 2)
        self.rng = random.Random(seed)
        self.position = _near(self.rng, 1.0)
        self.last_event_id = 0
        self.offers: queue.Queue = queue.Queue()
        self.in_hand: int | None = None  # The booking the work loop is on.
        # One relay: python-socketio reconnects to it by itself. Several: this client
        # moves to the next one itself (_stay_connected), which python-socketio cannot.
        failover = len(self.relays.urls) > 1
        self.sio = socketio.Client(reconnection=not failover, reconnection_delay=0.2,
                                   reconnection_delay_max=1)
        self.sio.on("new_assignment", self._offered)
        # The relay could not replay what this driver missed: its offer is in its state.
        self.sio.on("resync_required", lambda _data: self._fetch_offer())
        self.sio.on("connect", self._connected)
        self.disconnected = threading.Event()
        self.sio.on("disconnect", lambda *_reason: self.disconnected.set())
        self._connect(self.relays.current)
        self.threads = [threading.Thread(target=self._work, daemon=True),
                        threading.Thread(target=self._ping, daemon=True)]
        if failover:
            self.threads.append(threading.Thread(target=self._stay_connected, daemon=True))
        for thread in self.threads:
            thread.start()

    def _connect(self, url: str) -> None:
        self.connecting_to = url
        self.sio.connect(url, transports=["websocket"], wait_timeout=10,
                         auth=lambda: {"token": self.client.token,
                                       "last_event_id": self.last_event_id})

    def _connected(self) -> None:
        with self.record.lock:
            self.record.connections.append((time.monotonic(), self.client.id,
                                            self.connecting_to))

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
                self.stop.wait(0.1)  # Both relays refused: a breath before the next try.
            except ValueError:
                # A server's orderly close is announced before Engine.IO's client has
                # finished closing; it refuses to connect again until it has.
                self.stop.wait(0.05)

    def _offered(self, data: dict) -> None:
        self.last_event_id = max(self.last_event_id, data.get("event_id", 0))
        with self.record.lock:
            self.record.offers_received.add((data["id"], self.client.id, data["version"]))
        self.offers.put(data["id"])

    def _act(self, booking_id: int, action: str) -> bool:
        """Keep trying one step until it lands (200, or a retry's 409 that finds it landed)
        or the ride is no longer ours (any other 409)."""
        while not self.stop.is_set():
            status, error = self._send(booking_id, action)
            if status == 200:
                return True
            if status == 409 and error.get("code") == "invalid_transition" \
                    and error.get("current_status") == LANDED[action]:
                return True  # An earlier try landed; its answer was lost.
            if status is not None and status not in RETRYABLE:
                return False  # 409: lapsed, or offered to someone else meanwhile.
            time.sleep(0.2)
        return False

    def _send(self, booking_id: int, action: str) -> tuple[int | None, dict]:
        """One attempt: its status (None when nothing answered) and error body, if any."""
        path = f"/v1/bookings/{booking_id}/{action}"
        if self.over_relay and self.sio.connected:
            started = time.monotonic()
            relay = self.connecting_to
            try:
                answer = self.sio.call("driver_action", {"booking_id": booking_id,
                                                         "action": action}, timeout=10)
            except socketio.exceptions.SocketIOError:
                answer = None  # The relay went away mid-call: no answer, try again.
            status = answer.get("status") if isinstance(answer, dict) else None
            error = answer.get("error", {}) if status is not None and status >= 400 else {}
            self.record.answered(Answer(f"relay {path}", status, started,
                                        time.monotonic() - started, error.get("code"),
                                        url=relay, failure=None if status else "cut"))
            return status, error
        response = _call(self.client.http, self.record, "POST", self.api, path)
        if response is None:
            return None, {}
        error = {}
        if response.status_code >= 400 and response.headers.get(
                "content-type", "").startswith("application/json"):
            error = response.json().get("error", {})
        return response.status_code, error

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                booking_id = self.offers.get(timeout=0.2)
            except queue.Empty:
                continue
            if booking_id == self.in_hand:
                continue  # Offered by push and by fetch: one ride.
            self.in_hand = booking_id
            for action in ("accept", "start", "complete"):
                if not self._act(booking_id, action):
                    break
            self.in_hand = None

    def _ping(self) -> None:
        while not self.stop.wait(1.0):
            response = _call(self.client.http, self.record, "PUT", self.api,
                             "/v1/drivers/me/location", json=self.position)
            if (response is not None and response.status_code == 200
                    and response.json()["status"] == "busy" and self.in_hand is None
                    and self.offers.empty()):
                self._fetch_offer()

    def _fetch_offer(self) -> None:
        response = _call(self.client.http, self.record, "GET", self.api, "/v1/drivers/me")
        current = response.json().get("current_booking") if (
            response is not None and response.status_code == 200) else None
        if current and current["status"] == "assigned" and self.in_hand is None:
            with self.record.lock:
                self.record.offers_fetched.add((current["id"], self.client.id,
                                                current["version"]))
            self.offers.put(current["id"])

    def close(self) -> None:
        for thread in self.threads:
            thread.join(timeout=15)
        self.sio.disconnect()


def _set_up(client: Client, method: str, path: str, **kwargs) -> dict:
    """A set-up request, retried on 503 as an app would. After an earlier test restarted
    PostgreSQL, an API process that has not served a request since answers one 503 as it
    finds its pooled connections dead (the API does not ping them: dispatch.db.make_engine)."""
    for _ in range(5):
        response = client.http.request(method, client.base_url + path, timeout=30, **kwargs)
        if response.status_code != 503:
            break
        time.sleep(0.2)
    assert response.ok, (method, path, response.text)
    return response.json()


def _new_user(admin: Client, role: str, name: str) -> Client:
    created = _set_up(admin, "POST", "/v1/users", json={"name": name, "role": role})
    client = Client(admin.base_url, created["token"])
    client.id, client.token = created["id"], created["token"]
    return client


class Load:
    """``riders`` book ``rate`` rides a second in all; ``drivers`` take them.

    With ``api_urls`` and ``relay_urls``, every client knows every server: drivers start
    spread over them, the rider on the first API server."""

    def __init__(self, admin: Client, relay_url: str, drivers: int = 8, rate: float = 4.0,
                 api_urls: list[str] | None = None, relay_urls: list[str] | None = None):
        self.record = Record()
        self.stop = threading.Event()
        self.booking = threading.Event()
        api_urls = api_urls or [admin.base_url]
        self.drivers = []
        for i in range(drivers):
            client = _new_user(admin, "driver", f"driver-{i}")
            _set_up(client, "PUT", "/v1/drivers/me/location", json=_near(random.Random(i), 1.0))
            _set_up(client, "PUT", "/v1/drivers/me/status", json={"status": "available"})
            self.drivers.append(Driver(client, relay_urls or relay_url, self.record, self.stop,
                                       seed=i, over_relay=i % 2 == 0,
                                       api=Endpoints(api_urls, start=i // 2)))
        self.rider = _new_user(admin, "rider", "rider")
        self.rider_api = Endpoints(api_urls)
        self.rate = rate
        self.rng = random.Random(42)
        self.thread = threading.Thread(target=self._book, daemon=True)

    def __enter__(self) -> Load:
        self.booking.set()
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for driver in self.drivers:
            driver.close()

    def stop_booking(self) -> None:
        self.booking.clear()

    def _book(self) -> None:
        period = 1.0 / self.rate
        while not self.stop.is_set():
            if not self.booking.is_set():
                time.sleep(0.1)
                continue
            started = time.monotonic()
            self._one_booking()
            self.stop.wait(max(0.0, period - (time.monotonic() - started)))

    def _one_booking(self) -> None:
        body = {"pickup": _near(self.rng, 1.5), "dropoff": _near(self.rng, 3.0)}
        key = str(uuid.uuid4())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stop.is_set():
            response = _call(self.rider.http, self.record, "POST", self.rider_api,
                             "/v1/bookings", json=body, headers={"Idempotency-Key": key})
            if response is not None and response.status_code in (200, 202):
                with self.record.lock:
                    self.record.accepted.add(response.json()["id"])
                return
            if response is not None and response.status_code not in RETRYABLE:
                raise AssertionError(f"booking refused: {response.status_code} {response.text}")
            time.sleep(0.3)  # The same key again: a retry can never book twice.
