"""Pushing rebalancing suggestions to drivers' rooms.

A suggestion is advisory: one lost (a relay restarting, a driver reconnecting) costs
nothing, as the next run suggests again. So it skips the outbox and the replay streams and
is published straight on the channel the relays' ``socketio.RedisManager`` subscribes to
(``push.emit_message``), reaching the driver's room through whichever relay holds it.

A driver is sent at most one suggestion per interval: a key per driver, set only if
absent and expiring when the suggestion does, is the marker, so two runs (or two beats)
close together do not both push.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence

import redis

from dispatch.outbox import driver_room
from dispatch.rebalancing import Move
from smartroute.infra.push import CHANNEL, emit_message

EVENT = "reposition"
SENT_PREFIX = "smartroute:reposition:"


def payload(move: Move, expires_at: dt.datetime) -> dict:
    """What the driver's client receives."""
    return {
        "zone": move.zone,
        "lat": round(move.lat, 6),
        "lng": round(move.lng, 6),
        "reason": move.reason,
        "expires_at": expires_at.isoformat(),
    }


def send(
    client: redis.Redis,
    host_id: str,
    moves: Mapping[str, Sequence[Move]],
    interval_s: float,
    now: dt.datetime,
) -> Counter[str]:
    """Push each region's moves to their drivers, skipping drivers sent one within
    ``interval_s``; how many were pushed, per region."""
    expires_at = now + dt.timedelta(seconds=interval_s)
    chosen = [(region, move) for region, ms in moves.items() for move in ms]
    if not chosen:
        return Counter()
    marks = client.pipeline(transaction=False)
    for _, move in chosen:
        marks.set(
            f"{SENT_PREFIX}{move.driver_id}",
            expires_at.isoformat(),
            nx=True,
            px=round(interval_s * 1000),
        )
    fresh = marks.execute()
    sent: Counter[str] = Counter()
    pushes = client.pipeline(transaction=False)
    for (region, move), unmarked in zip(chosen, fresh, strict=True):
        if unmarked:
            message = emit_message(
                host_id, driver_room(move.driver_id), EVENT, payload(move, expires_at)
            )
            pushes.publish(CHANNEL, message)
            sent[region] += 1
    pushes.execute()
    return sent
