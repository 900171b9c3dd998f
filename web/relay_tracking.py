"""Drivers' positions pushed after each flush: to the rider of every ride a driver is on
its way to or driving, and in one batch to the admin dashboard.

Nothing here runs per ping. ``web.relay_locations.Locations`` hands over, after each
PostgreSQL flush, the positions it has just written (each driver's newest since the last
flush), and:

- One query finds which of those drivers hold a ride whose rider watches them (accepted,
  arrived or in progress: ``dispatch.tracking``); each such rider's room gets
  ``driver_position`` with the ETA to where the ride heads next. A ride gets at most one
  every ``SMARTROUTE_RIDER_POSITION_EVERY_S``: the flush interval already spaces them so,
  and a shorter one is thinned here (a thinned position is dropped; the driver's next one
  goes out once the interval has passed).
- ``admin_dashboard`` gets one ``driver_positions`` event, ``{"drivers": [[id, lat, lng],
  ...]}``, with at most ``ADMIN_BATCH_LIMIT`` drivers; any more wait for the next flush,
  oldest first, each with its newest position by then.

Everything is emitted through the relays' Redis channel in one pipeline (the manager's
``emit_each``), so a rider or an admin connected to another relay hears it too; the rooms
are the ones the server put each client in by its token, so only a ride's rider (and the
admins, in their batch) hear where its driver is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dispatch.eta import GreatCircleEta
from dispatch.outbox import ADMIN_ROOM, rider_room
from dispatch.tracking import DRIVER_POSITION, DRIVER_POSITIONS, driver_position, tracked_rides
from smartroute.infra.metrics import RELAY_POSITIONS_PUSHED, RELAY_RIDER_POSITIONS_THINNED

log = logging.getLogger("smartroute.relay")

# The most drivers in one driver_positions event: about 150 KB of JSON. A dashboard draws
# that many markers without effort; a relay holding more drivers sends the rest next flush.
ADMIN_BATCH_LIMIT = 5000

# Degrees to five decimals: about a metre, as precise as a map marker needs.
DECIMALS = 5

# (room, event, data): what the relays' manager emits, each to its room, on every relay.
Message = tuple[str, str, dict[str, Any]]
# driver id -> (lat, lng, received at, epoch seconds): a flush's positions.
Flushed = Mapping[int, tuple[float, float, float]]


class PositionFeed:
    """What a relay pushes of its drivers' positions after each flush."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        eta: GreatCircleEta,
        emit_each: Callable[[list[Message]], None],
        *,
        every_s: float,
        admin_limit: int = ADMIN_BATCH_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions, self.eta, self.emit_each = sessions, eta, emit_each
        self.every_s, self.admin_limit, self.clock = every_s, admin_limit, clock
        # booking id -> when its rider was last sent a position (by ``clock``); kept only
        # while it still holds the next one back.
        self._last_sent: dict[int, float] = {}
        # driver id -> (lat, lng) not yet sent to admins, oldest first.
        self._admin_waiting: dict[int, tuple[float, float]] = {}

    def after_flush(self, flushed: Flushed) -> None:
        """Push the positions a flush has just written. Never raises for want of PostgreSQL
        or Redis: positions are a live view, and the next flush brings newer ones."""
        try:
            self._push(flushed)
        except (SQLAlchemyError, redis.RedisError, OSError) as exc:
            log.warning("driver positions not pushed: %s", exc.__class__.__name__)

    def _push(self, flushed: Flushed) -> None:
        # Taken once, before the query: the flush loop starts a run no sooner than its
        # interval after the last one ended, so runs are never closer than the interval.
        now = self.clock()
        messages = self._rider_messages(flushed, now) if flushed else []
        riders = len(messages)
        admin = self._admin_batch(flushed)
        if admin:
            messages.append((ADMIN_ROOM, DRIVER_POSITIONS, {"drivers": admin}))
        if not messages:
            return
        self.emit_each(messages)
        if riders:
            RELAY_POSITIONS_PUSHED.labels("rider").inc(riders)
        if admin:
            RELAY_POSITIONS_PUSHED.labels("admin").inc(len(admin))

    def _rider_messages(self, flushed: Flushed, now: float) -> list[Message]:
        with self.sessions() as session:
            rides = tracked_rides(session, flushed.keys())
        messages: list[Message] = []
        thinned = 0
        for ride in rides:
            last = self._last_sent.get(ride.booking_id)
            if last is not None and now - last < self.every_s:
                thinned += 1
                continue
            self._last_sent[ride.booking_id] = now
            lat, lng, received_at = flushed[ride.driver_id]
            position = (round(lat, DECIMALS), round(lng, DECIMALS))
            data = driver_position(ride, position, received_at, self.eta)
            messages.append((rider_room(ride.rider_id), DRIVER_POSITION, data))
        if self._last_sent:
            # A ride last sent an interval ago is due anyway: forgetting it keeps this to
            # the rides of the last interval, and ended rides leave nothing behind.
            self._last_sent = {
                booking: sent
                for booking, sent in self._last_sent.items()
                if now - sent < self.every_s
            }
        if thinned:
            RELAY_RIDER_POSITIONS_THINNED.inc(thinned)
        return messages

    def _admin_batch(self, flushed: Flushed) -> list[list[float]]:
        waiting = self._admin_waiting
        for driver, (lat, lng, _received_at) in flushed.items():
            # A driver already waiting keeps its place in the line with its newest position.
            waiting[driver] = (round(lat, DECIMALS), round(lng, DECIMALS))
        if len(waiting) <= self.admin_limit:
            sent, self._admin_waiting = waiting, {}
        else:
            line = list(waiting.items())
            sent = dict(line[: self.admin_limit])
            self._admin_waiting = dict(line[self.admin_limit :])
        return [[driver, lat, lng] for driver, (lat, lng) in sent.items()]
