"""Pushing rebalancing suggestions to drivers' rooms.

A suggestion is advisory: one lost (a relay restarting, a driver reconnecting) costs
nothing, as the next run suggests again. So it skips the outbox and the replay streams and
is published straight on the channel the relays' ``socketio.RedisManager`` subscribes to
(``push.emit_message``), reaching the driver's room through whichever relay holds it.

A driver is sent at most one suggestion per interval. Who was told, and until when, is one
sorted set (driver id, scored by the suggestion's expiry on the database's clock): a run
reads it so those drivers stay put in the plan, and adds to it only drivers not in it, in
one transaction, so two runs close together (or two beats) do not both push.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import cast

import redis

from dispatch.outbox import driver_room
from dispatch.rebalancing import Move
from smartroute.infra.push import CHANNEL, emit_message

EVENT = "reposition"
TOLD_KEY = "smartroute:reposition:told"


def payload(move: Move, expires_at: dt.datetime) -> dict:
    """What the driver's client receives."""
    return {
        "zone": move.zone,
        "lat": round(move.lat, 6),
        "lng": round(move.lng, 6),
        "reason": move.reason,
        "expires_at": expires_at.isoformat(),
    }


def recently_told(client: redis.Redis, now: dt.datetime) -> frozenset[int]:
    """Drivers whose suggestion has not yet expired at ``now``."""
    members = client.zrangebyscore(TOLD_KEY, f"({now.timestamp()}", "+inf")
    return frozenset(int(cast(bytes, m)) for m in members)


def send(
    client: redis.Redis,
    host_id: str,
    moves: Mapping[str, Sequence[Move]],
    interval_s: float,
    now: dt.datetime,
) -> Counter[str]:
    """Push each region's moves to their drivers, good for ``interval_s`` from ``now``,
    skipping drivers told within it; how many were pushed, per region."""
    expires_at = now + dt.timedelta(seconds=interval_s)
    chosen = [(region, move) for region, ms in moves.items() for move in ms]
    if not chosen:
        return Counter()
    marks = client.pipeline(transaction=True)
    marks.zremrangebyscore(TOLD_KEY, "-inf", now.timestamp())
    for _, move in chosen:
        marks.zadd(TOLD_KEY, {str(move.driver_id): expires_at.timestamp()}, nx=True)
    marks.expire(TOLD_KEY, math.ceil(2 * interval_s))
    added = marks.execute()[1 : 1 + len(chosen)]
    sent: Counter[str] = Counter()
    pushes = client.pipeline(transaction=False)
    for (region, move), new in zip(chosen, added, strict=True):
        if new:
            message = emit_message(
                host_id, driver_room(move.driver_id), EVENT, payload(move, expires_at)
            )
            pushes.publish(CHANNEL, message)
            sent[region] += 1
    pushes.execute()
    return sent
