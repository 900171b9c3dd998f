"""A small built-in demo: a few simulated drivers and riders using the real HTTP API.

Drivers go online around a city centre and poll for offers (push arrives with the
relay); riders book every couple of seconds. The terminal shows each booking get
its driver. It is a client like any other: nothing here reaches into the engine.
"""

from __future__ import annotations

import logging
import random
import threading

import requests
from rich.console import Console

log = logging.getLogger(__name__)

CITY_CENTRE = (38.7223, -9.1393)  # Lisbon
SPREAD_DEG = 0.02  # about 2 km
DRIVER_NAMES = ("Ana", "Bruno", "Carla", "Diogo", "Eva", "Filipe")
RIDER_NAMES = ("Rita", "Sam", "Tiago")
DECLINE_RATE = 0.15
console = Console(stderr=True)


def _near_centre(rng: random.Random) -> dict:
    lat, lng = CITY_CENTRE
    return {"lat": lat + rng.uniform(-SPREAD_DEG, SPREAD_DEG),
            "lng": lng + rng.uniform(-SPREAD_DEG, SPREAD_DEG)}


class _Client:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.session.request(method, f"{self.base_url}/v1{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()


def _driver_loop(client: _Client, name: str, stop: threading.Event, rng: random.Random) -> None:
    client.call("PUT", "/drivers/me/location", json=_near_centre(rng))
    client.call("PUT", "/drivers/me/status", json={"status": "available"})
    while not stop.wait(1.0):
        me = client.call("GET", "/drivers/me")
        booking = me["current_booking"]
        if booking is None:
            client.call("PUT", "/drivers/me/location", json=_near_centre(rng))
            continue
        path = f"/bookings/{booking['id']}"
        if booking["status"] == "assigned":
            if rng.random() < DECLINE_RATE:
                client.call("POST", path + "/decline")
                console.print(f"[yellow]booking {booking['id']}[/]: {name} declined")
            else:
                client.call("POST", path + "/accept")
                console.print(f"[green]booking {booking['id']}[/]: {name} accepted")
        elif booking["status"] == "accepted":
            client.call("POST", path + "/start")
        elif booking["status"] == "in_progress" and rng.random() < 0.3:
            client.call("POST", path + "/complete")
            console.print(f"[blue]booking {booking['id']}[/]: {name} completed the ride")


def _rider_loop(client: _Client, name: str, stop: threading.Event, rng: random.Random) -> None:
    while not stop.wait(rng.uniform(2.0, 6.0)):
        booking = client.call(
            "POST", "/bookings", json={"pickup": _near_centre(rng), "dropoff": _near_centre(rng)}
        )
        console.print(f"[cyan]booking {booking['id']}[/]: {name} booked a ride")


def _guarded(target, *args) -> None:
    try:
        target(*args)
    except requests.RequestException as exc:
        log.warning("demo client stopped: %s", exc)


def start_demo(base_url: str, admin_token: str, stop: threading.Event, seed: int = 7) -> None:
    """Create the demo's users and start their loops on daemon threads."""
    admin = _Client(base_url, admin_token)
    rng = random.Random(seed)
    people = [(n, "driver", _driver_loop) for n in DRIVER_NAMES]
    people += [(n, "rider", _rider_loop) for n in RIDER_NAMES]
    for name, role, loop in people:
        user = admin.call("POST", "/users", json={"name": name, "role": role})
        client = _Client(base_url, user["token"])
        threading.Thread(
            target=_guarded, args=(loop, client, name, stop, random.Random(rng.random())),
            name=f"demo-{name}", daemon=True,
        ).start()
    console.print(f"demo: {len(DRIVER_NAMES)} drivers and {len(RIDER_NAMES)} riders in Lisbon")
