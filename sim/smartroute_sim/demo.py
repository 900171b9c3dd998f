"""A small demo for ``smartroute up --demo``: a few simulated drivers and riders in Lisbon
using the real HTTP API and relay.

Drivers go online around the city centre and take the offers pushed to them (now and then
declining one); riders book every few seconds. The terminal shows each booking get its
driver. They are clients like any other (the same simulated driver and API client as the
load tools): nothing here reaches into the engine.
"""

from __future__ import annotations

import logging
import random
import threading

import requests
import socketio
from rich.console import Console

from smartroute_sim.client import Api
from smartroute_sim.driver import SimulatedDriver

log = logging.getLogger(__name__)

CITY_CENTRE = (38.7223, -9.1393)  # Lisbon
SPREAD_DEG = 0.02  # about 2 km
DRIVER_NAMES = ("Ana", "Bruno", "Carla", "Diogo", "Eva", "Filipe")
RIDER_NAMES = ("Rita", "Sam", "Tiago")
DECLINE_RATE = 0.15
RIDE_S = 3.0  # From start to complete: the demo's rides are short.
console = Console(stderr=True)
SAID = {
    "accept": ("green", "accepted"),
    "decline": ("yellow", "declined"),
    "complete": ("blue", "completed the ride"),
}


def _near_centre(rng: random.Random) -> dict:
    lat, lng = CITY_CENTRE
    return {
        "lat": lat + rng.uniform(-SPREAD_DEG, SPREAD_DEG),
        "lng": lng + rng.uniform(-SPREAD_DEG, SPREAD_DEG),
    }


def _rider_loop(api: Api, name: str, stop: threading.Event, rng: random.Random) -> None:
    while not stop.wait(rng.uniform(2.0, 6.0)):
        booking = api.ok(
            "POST", "/v1/bookings", {"pickup": _near_centre(rng), "dropoff": _near_centre(rng)}
        )
        console.print(f"[cyan]booking {booking['id']}[/]: {name} booked a ride")


def _rider(api: Api, name: str, stop: threading.Event, rng: random.Random) -> None:
    try:
        _rider_loop(api, name, stop, rng)
    except requests.RequestException as exc:
        log.warning("demo rider stopped: %s", exc)


def _online(driver: SimulatedDriver) -> bool:
    try:
        driver.go_online()
    except socketio.exceptions.ConnectionError:
        return False
    return True


def _driver(
    admin: Api, relay_url: str, name: str, stop: threading.Event, rng: random.Random
) -> None:
    def tell(_driver: SimulatedDriver, booking_id: int, action: str) -> None:
        if action in SAID:
            colour, what = SAID[action]
            console.print(f"[{colour}]booking {booking_id}[/]: {name} {what}")

    try:
        user_id, token = admin.create_user("driver", name)
        driver = SimulatedDriver(
            admin.with_token(token), user_id, _near_centre(rng), rng, relays=relay_url, on_step=tell
        )
        while not _online(driver):
            if stop.wait(0.5):  # The relay starts beside the API: it may not answer yet.
                return
        driver.start(stop, decline=DECLINE_RATE, ride_s=RIDE_S)
    except requests.RequestException as exc:
        log.warning("demo driver %s stopped: %s", name, exc)


def start_demo(
    api_url: str, relay_url: str, admin_token: str, stop: threading.Event, seed: int = 7
) -> None:
    """Create the demo's users and start them on daemon threads until ``stop``."""
    admin = Api(api_url, admin_token)
    rng = random.Random(seed)
    for name in DRIVER_NAMES:
        threading.Thread(
            target=_driver,
            name=f"demo-{name}",
            daemon=True,
            args=(admin, relay_url, name, stop, random.Random(rng.random())),
        ).start()
    for name in RIDER_NAMES:
        user_id, token = admin.create_user("rider", name)
        threading.Thread(
            target=_rider,
            name=f"demo-{name}",
            daemon=True,
            args=(admin.with_token(token), name, stop, random.Random(rng.random())),
        ).start()
    console.print(f"demo: {len(DRIVER_NAMES)} drivers and {len(RIDER_NAMES)} riders in Lisbon")
