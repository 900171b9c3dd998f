"""Steady load for the chaos suite: riders who book, drivers who take every ride.

Both behave as real apps do under faults: they are the load tools' own API client and
simulated driver (smartroute_sim.client, smartroute_sim.driver), which the demo and the load
generator run too. A rider retries a failed booking with the same Idempotency-Key; a
driver's Socket.IO client reconnects by itself and asks for what it missed
(``last_event_id``), pings its location every second, and works each offer through accept,
start and complete, giving up on an offer only when the engine says it is no longer theirs
(409). Half the drivers act over their relay connection (``driver_action``), over HTTP
while it gives no answer; the other half over HTTP. When a ping's answer says the driver is
busy with nothing in hand, the app asks the API what it holds: an offer whose push was lost
still arrives.
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

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from smartroute_sim.client import Answer, Api
from smartroute_sim.driver import RETRYABLE, SimulatedDriver
from tests.integration.conftest import Client

CENTRE = (38.7223, -9.1393)


def _near(rng: random.Random, km: float = 2.0) -> dict:
    return {
        "lat": CENTRE[0] + rng.uniform(-km, km) / 111,
        "lng": CENTRE[1] + rng.uniform(-km, km) / 87,
    }


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

    def offered(self, driver: SimulatedDriver, data: dict, how: str) -> None:
        """Note how the offer reached its driver, then let the driver work it."""
        with self.lock:
            seen = self.offers_received if how == "push" else self.offers_fetched
            seen.add((data["id"], driver.id, data["version"]))
        driver.take(driver, data)

    def connected(self, driver: SimulatedDriver, url: str) -> None:
        with self.lock:
            self.connections.append((time.monotonic(), driver.id, url))


class Load:
    """``riders`` book ``rate`` rides a second in all; ``drivers`` take them.

    With ``api_urls`` and ``relay_urls``, every client knows every server: drivers start
    spread over them, the rider on the first API server. Half the drivers act over their
    relay connection, the other half over HTTP."""

    def __init__(
        self,
        admin: Client,
        relay_url: str,
        drivers: int = 8,
        rate: float = 4.0,
        api_urls: list[str] | None = None,
        relay_urls: list[str] | None = None,
    ):
        self.record = Record()
        self.stop = threading.Event()
        self.booking = threading.Event()
        api_urls = api_urls or [admin.base_url]
        # The admin's token, as the test's client sends it.
        set_up = Api(admin.base_url, admin.http.headers["Authorization"].removeprefix("Bearer "))
        self.drivers: list[SimulatedDriver] = []
        for i in range(drivers):
            user_id, token = set_up.create_user("driver", f"driver-{i}")
            driver = SimulatedDriver(
                Api(api_urls, token, start=i // 2, observe=self.record.answered),
                user_id,
                _near(random.Random(i), 1.0),
                random.Random(i),
                # Drivers acting over HTTP and over the relay alike on each relay.
                relays=relay_urls or relay_url,
                relay_start=i // 2,
                over_relay=i % 2 == 0,
                # From the start: an offer made before the first connection is replayed.
                last_event_id=0,
                on_offer=self.record.offered,
                on_connect=self.record.connected,
            )
            driver.go_online()
            driver.start(self.stop)
            self.drivers.append(driver)
        _, rider_token = set_up.create_user("rider", "rider")
        self.rider = Api(api_urls, rider_token, observe=self.record.answered)
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
            response = self.rider.answer(
                "POST", "/v1/bookings", body, headers={"Idempotency-Key": key}
            )
            if response is not None and response.status_code in (200, 202):
                with self.record.lock:
                    self.record.accepted.add(response.json()["id"])
                return
            if response is not None and response.status_code not in RETRYABLE:
                raise AssertionError(f"booking refused: {response.status_code} {response.text}")
            time.sleep(0.3)  # The same key again: a retry can never book twice.
