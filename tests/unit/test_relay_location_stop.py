"""The relay's last tick and flush, as it stops, come after the ones in flight: a ping the
tick has taken but not yet handed to the flush is not lost."""

import contextlib
import threading
import time

from smartroute.infra.identity import Identity
from web import relay_locations
from web.relay_locations import Locations

DRIVER = Identity(user_id=7, role="driver", token_id=1, token_hash="h", expires_at=None)


class HeldWriter:
    """Redis, as slow as the test wants: ``apply`` waits until released."""

    def __init__(self) -> None:
        self.writing, self.release = threading.Event(), threading.Event()

    def apply(self, pings: list) -> list[bool]:
        self.writing.set()
        self.release.wait(10)
        return [True] * len(pings)


class Sessions:
    def begin(self):
        return contextlib.nullcontext(None)


def test_the_stop_writes_the_ping_a_tick_in_flight_holds(monkeypatch):
    written: list = []
    monkeypatch.setattr(relay_locations, "record_locations", lambda _s, p: written.extend(p))
    writer = HeldWriter()
    locations = Locations(writer, Sessions(), tick_s=0.2, flush_s=2.0)  # type: ignore[arg-type]
    answer, error = locations.receive(DRIVER, {"lat": 38.7, "lng": -9.1, "at": time.time()})
    assert (answer, error) == ({"status": 200}, None)
    tick = threading.Thread(target=locations.write_tick)
    tick.start()
    assert writer.writing.wait(10), "the tick never wrote"

    stop = threading.Thread(target=locations.close)
    stop.start()
    # A stop that did not wait for the tick would be over well within this.
    stop.join(0.5)
    writer.release.set()
    tick.join(10)
    stop.join(10)

    assert [(driver, lat, lng) for driver, lat, lng, _seen in written] == [(7, 38.7, -9.1)]
