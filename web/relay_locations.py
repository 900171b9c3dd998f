"""Drivers' location pings over the relay, written to Redis a tick at a time and to
PostgreSQL behind.

A driver's app sends ``location`` with ``{"lat", "lng", "at"}`` (``at``: the time of the
fix, epoch seconds, by the phone's clock) and optionally ``heading``, ``speed`` and
``accuracy``, every few seconds on the connection it already holds. Over HTTP each ping is a
request, a PostgreSQL UPDATE and a Redis GEOADD; here a ping is a few float checks and a
dict assignment:

- Every ``SMARTROUTE_RELAY_LOCATION_TICK_S`` the tick's pings (one per driver: the newest
  fix, the others counted as coalesced) go to Redis in one pipeline
  (``smartroute.infra.driver_index.PingWriter``): position, presence, and the fix's time,
  which keeps a fix older than one already applied (by this relay or another) from moving a
  driver backwards.
- Every ``SMARTROUTE_LOCATION_FLUSH_S`` the positions applied since the last flush go to
  PostgreSQL in one statement (``dispatch.drivers.record_locations``), so the database's
  last-known positions and ``last_seen_at`` (the fallback when Redis cannot answer, and what
  the offline sweep reads) lag by a flush at most. A ping changes no driver's status, as
  over HTTP.

A fix more than ``MAX_AGE_S`` old is ignored (a phone replaying its backlog); one more than
``MAX_AHEAD_S`` ahead of the relay's clock is refused as invalid. Bad input is answered
with an ``error`` event naming the field (and the acknowledgement, if one was asked for);
the connection stays. A token revoked meanwhile is dropped by the relay's revalidation
within a second, so pings do not look at it.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dispatch.drivers import record_locations
from smartroute.infra.driver_index import PingWriter
from smartroute.infra.identity import Identity
from smartroute.infra.metrics import (
    RELAY_LOCATION_FLUSHES,
    RELAY_LOCATION_PINGS,
    RELAY_LOCATION_WRITES,
    RELAY_LOCATIONS_APPLIED,
    RELAY_LOCATIONS_IGNORED,
    RELAY_LOCATIONS_UNFLUSHED,
)

log = logging.getLogger("smartroute.relay")

# A fix older than this (by the relay's clock) is ignored, and one further ahead is refused.
MAX_AGE_S = 300.0
MAX_AHEAD_S = 60.0

# Each field a ping may carry, and the closed range it must lie in.
BOUNDS: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lng": (-180.0, 180.0),
    "at": (0.0, math.inf),
    "heading": (0.0, 360.0),
    "speed": (0.0, math.inf),
    "accuracy": (0.0, math.inf),
}
REQUIRED = ("lat", "lng", "at")

ACCEPTED: dict[str, Any] = {"status": 200}


class PingError(Exception):
    """A ping refused: its acknowledgement status, code, field and message."""

    def __init__(
        self, status: int, code: str, field: str | None, message: str, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message
        # What the ignored-pings counter calls it.
        self.reason = reason or code

    def event(self) -> dict[str, Any]:
        """The ``error`` event's data, in the shape of the relay's other errors."""
        return {"code": self.code, "field": self.field, "message": self.message}

    def answer(self) -> dict[str, Any]:
        """The acknowledgement, in the shape of a driver action's."""
        return {"status": self.status, "error": self.event()}


def _number(value: object) -> float | None:
    # type() rather than isinstance: JSON's true and false arrive as bool, a kind of int.
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return float(value) if -1e15 < value < 1e15 else None
    return None


def read_ping(data: object, now: float) -> tuple[float, float, float]:
    """A ping's (at, lat, lng), or PingError naming what is wrong."""
    if not isinstance(data, dict):
        raise PingError(422, "invalid", None, "a location is an object: lat, lng and at")
    for name in REQUIRED:
        if name not in data:
            raise PingError(422, "invalid", name, f"{name} is required")
    values = {}
    for name, value in data.items():
        bounds = BOUNDS.get(name)
        if bounds is None:
            raise PingError(422, "invalid", str(name), f"{name} is not a field of a location")
        number = _number(value)
        if number is None or not bounds[0] <= number <= bounds[1]:
            low, high = bounds
            raise PingError(
                422, "invalid", name, f"{name} must be a number from {low:g} to {high:g}"
            )
        values[name] = number
    if values["at"] > now + MAX_AHEAD_S:
        raise PingError(
            422,
            "invalid",
            "at",
            f"at is more than {MAX_AHEAD_S:g} s ahead of the server's clock: "
            "it is the fix's time in epoch seconds",
            reason="future",
        )
    return values["at"], values["lat"], values["lng"]


class Locations:
    """The relay's buffer of pings: filled per ping, written to Redis per tick and to
    PostgreSQL per flush."""

    def __init__(
        self,
        writer: PingWriter,
        sessions: sessionmaker[Session],
        tick_s: float,
        flush_s: float,
        on_flush: Callable[[dict[int, tuple[float, float, float]]], None] | None = None,
    ) -> None:
        self.writer, self.sessions = writer, sessions
        self.tick_s, self.flush_s = tick_s, flush_s
        # Told each flush's positions once PostgreSQL has them (web.relay_tracking).
        self.on_flush = on_flush
        # driver id -> (at, lat, lng, received at): this tick's newest fix per driver.
        self._pending: dict[int, tuple[float, float, float, float]] = {}
        # driver id -> (lat, lng, received at): applied since the last flush.
        self._unflushed: dict[int, tuple[float, float, float]] = {}
        self._received = 0
        self._ignored: collections.Counter[str] = collections.Counter()
        # Uncontended almost always; the threading mode has the tick, the flush and the
        # pings on threads of their own.
        self._lock = threading.Lock()
        # Held through a whole tick and a whole flush, Redis and PostgreSQL included (green
        # locks under eventlet), so the stop's last tick and flush come after the ones in
        # flight, not beside them.
        self._ticking, self._flushing = threading.Lock(), threading.Lock()
        self._unflushed_gauge = RELAY_LOCATIONS_UNFLUSHED.labels("postgresql")

    def receive(self, holder: Identity | None, data: object) -> tuple[dict, PingError | None]:
        """The acknowledgement for one ping, and the error to emit to its sender, if any."""
        now = time.time()
        try:
            if holder is None or holder.role != "driver":
                raise PingError(403, "forbidden", None, "only drivers share their location")
            at, lat, lng = read_ping(data, now)
        except PingError as error:
            with self._lock:
                self._received += 1
                self._ignored[error.reason] += 1
            return error.answer(), error
        with self._lock:
            self._received += 1
            if at < now - MAX_AGE_S:
                self._ignored["stale"] += 1
                return {"status": 200, "ignored": "stale"}, None
            held = self._pending.get(holder.user_id)
            if held is not None:
                if held[0] >= at:
                    self._ignored["out_of_order"] += 1
                    return {"status": 200, "ignored": "out_of_order"}, None
                self._ignored["coalesced"] += 1
            self._pending[holder.user_id] = (at, lat, lng, now)
        return ACCEPTED, None

    def write_tick(self) -> None:
        """Write this tick's pings to Redis in one pipeline, and count them."""
        with self._ticking:
            self._write_tick()

    def _write_tick(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            received, self._received = self._received, 0
            ignored, self._ignored = self._ignored, collections.Counter()
        pings = [(driver, *fix) for driver, fix in pending.items()]
        applied = [True] * len(pings)
        if pings:
            try:
                applied = self.writer.apply(pings)
            except (redis.RedisError, OSError) as exc:
                # PostgreSQL still gets them: with Redis gone, matching falls back to it,
                # and the offline sweep must not take these drivers for silent.
                log.warning("driver locations not written to Redis: %s", exc.__class__.__name__)
            RELAY_LOCATION_WRITES.observe(len(pings))
        moved = 0
        with self._lock:
            for (driver, _at, lat, lng, received_at), done in zip(pings, applied, strict=True):
                if done:
                    self._unflushed[driver] = (lat, lng, received_at)
                    moved += 1
                else:
                    ignored["out_of_order"] += 1
            self._unflushed_gauge.set(len(self._unflushed))
        for reason, count in ignored.items():
            RELAY_LOCATIONS_IGNORED.labels(reason).inc(count)
        if moved:
            RELAY_LOCATIONS_APPLIED.inc(moved)
        if received:
            RELAY_LOCATION_PINGS.inc(received)

    def flush(self) -> None:
        """Write the positions applied since the last flush to PostgreSQL in one statement;
        if the database cannot take them, they wait for the next flush."""
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._unflushed = self._unflushed, {}
        if not batch:
            return
        positions = [
            (driver, lat, lng, dt.datetime.fromtimestamp(received_at, dt.UTC))
            for driver, (lat, lng, received_at) in batch.items()
        ]
        try:
            with self.sessions.begin() as session:
                record_locations(session, positions)
        except SQLAlchemyError as exc:
            log.warning("driver locations not written to PostgreSQL: %s", exc.__class__.__name__)
            with self._lock:
                for driver, position in batch.items():
                    # A newer position applied meanwhile wins.
                    self._unflushed.setdefault(driver, position)
                self._unflushed_gauge.set(len(self._unflushed))
            return
        RELAY_LOCATION_FLUSHES.observe(len(positions))
        with self._lock:
            self._unflushed_gauge.set(len(self._unflushed))
        if self.on_flush is not None:
            self.on_flush(batch)

    def close(self) -> None:
        """Write what is buffered, to Redis and then to PostgreSQL, as the relay stops (its
        connections closed, so no ping comes after): the last positions are not lost. A
        tick or flush in flight finishes first."""
        self.write_tick()
        self.flush()

    def run(self, sleep, spawn) -> None:
        """Start the tick and the flush, each in a background task of the relay's own
        kind (``socketio.sleep``, ``socketio.start_background_task``)."""
        spawn(self._forever, sleep, self.tick_s, self.write_tick)
        spawn(self._forever, sleep, self.flush_s, self.flush)

    @staticmethod
    def _forever(sleep, every_s: float, step) -> None:
        while True:
            sleep(every_s)
            try:
                step()
            except Exception:
                # These loops are what carry pings anywhere: they must outlive a bug.
                log.exception("driver locations step failed")
