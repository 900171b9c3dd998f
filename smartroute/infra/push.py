"""Delivering outbox events: to the relays through Redis, and to the replay log.

Workers publish on the channel of the relays' ``socketio.RedisManager`` (no eventlet,
no server here); every relay process subscribed to it emits to its own clients. Each
event is also appended to its room's Redis stream, keyed by its position (the
``event_id`` clients see), so a relay can replay what a reconnecting client missed
without touching the database. A run's appends and emits go out in one pipeline: one
round trip, not one per event.

The replay window is counted in positions, not per room: every append trims its stream
below ``floor`` (the newest position less ``replay_events``), and every stream expires a
retention after its last append. ``since`` is the first position this Redis has streamed
(set once), so a Redis that restarted empty is told apart from one that holds everything.
A client whose last event is older than both gets ``resync_required`` instead of a replay
with a silent hole in it (``catch_up``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import cast

import redis
from sqlalchemy.orm import Session, sessionmaker

from dispatch import outbox
from smartroute.infra.metrics import PUSH_LATENCY

CHANNEL = "smartroute-push"
REPLAY_PREFIX = "smartroute:replay:"
# No room is called "since" or "floor", so these never meet a room's stream.
SINCE_KEY = REPLAY_PREFIX + "since"
FLOOR_KEY = REPLAY_PREFIX + "floor"
# Positions are PostgreSQL bigints, and a stream id's first part is at most 2^64 - 1.
MAX_EVENT_ID = 2**63 - 1


class ReplayOrderError(RuntimeError):
    """Redis refused an event as older than its stream's newest, and does not hold it:
    appending it now would leave a hole that replay could not show."""


def replay_key(room: str) -> str:
    return REPLAY_PREFIX + room


def valid_event_id(value: object) -> bool:
    """Whether a client's ``last_event_id`` is one a position could be."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EVENT_ID


def emit_message(host_id: str, room: str, event: str, data: dict) -> str:
    """What ``socketio.RedisManager.emit`` publishes for a relay to emit ``event`` to
    ``room`` (python-socketio's ``PubSubManager.emit``, JSON-encoded as the relays' manager
    decodes it). tests/integration/test_push.py fails if the two ever part ways."""
    return json.dumps(
        {
            "method": "emit",
            "event": event,
            "data": [data],
            "binary": False,
            "namespace": "/",
            "room": room,
            "skip_sid": None,
            "callback": None,
            "host_id": host_id,
        }
    )


class Publisher:
    def __init__(
        self, redis_url: str, *, replay_events: int = 20000, replay_ttl_s: int = 86400
    ) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.host_id = uuid.uuid4().hex
        self.replay_events = replay_events
        self.replay_ttl_s = replay_ttl_s

    def deliver(self, events: list[tuple[int, str, str, dict]]) -> None:
        """(position, room, event, data) in position order; raises if Redis refuses them."""
        if not events:
            return
        floor = max(0, events[-1][0] - self.replay_events)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(SINCE_KEY, events[0][0], nx=True)
        appends = []
        for position, room, event, data in events:
            appends.append((len(pipe), position, room))
            pipe.xadd(
                replay_key(room),
                {"event": event, "data": json.dumps(data)},
                id=f"{position}-0",
                minid=floor,
                approximate=True,
            )
            pipe.publish(CHANNEL, emit_message(self.host_id, room, event, data))
        # The markers expire with the streams: after a retention with no event at all,
        # every stream is gone, and so is the claim that this Redis holds the window.
        for key in sorted({replay_key(room) for _, room, _, _ in events} | {SINCE_KEY}):
            pipe.expire(key, self.replay_ttl_s)
        pipe.set(FLOOR_KEY, floor, ex=self.replay_ttl_s)
        results = pipe.execute(raise_on_error=False)
        refused = {}
        for index, position, room in appends:
            if isinstance(results[index], redis.ResponseError) and "equal or smaller" in str(
                results[index]
            ):
                refused[index] = (position, room)
        for index, result in enumerate(results):
            if isinstance(result, Exception) and index not in refused:
                raise result
        for position, room in refused.values():
            # Positions are committed before delivery, so a batch delivered again after a
            # failure carries the same positions: Redis holding that very entry means this
            # is the copy we wanted. Below the floor, the entry may have been trimmed, and
            # a client needing it is told to resync anyway. Anything else is a hole.
            if position >= floor and not self._holds(room, position):
                raise ReplayOrderError(
                    f"{replay_key(room)} refused position {position}, which it does not hold"
                )

    def _holds(self, room: str, position: int) -> bool:
        entry_id = f"{position}-0"
        return bool(self.redis.xrange(replay_key(room), min=entry_id, max=entry_id, count=1))

    def deliver_unsent(self, session: Session, limit: int) -> int:
        """One batch of the positioned unsent outbox events, delivered in position order and
        marked sent in the caller's transaction, which holds the publisher lock; how many."""
        rows = outbox.claim_positioned(session, limit=limit)
        if rows:
            # claim_positioned returns only rows that have a position.
            self.deliver(
                [(cast(int, r.position), r.room, r.event, outbox.message(r)) for r in rows]
            )
            sent_at = dt.datetime.now(dt.UTC)
            outbox.mark_sent(session, [r.id for r in rows], sent_at)
            for r in rows:
                PUSH_LATENCY.observe(max(0.0, (sent_at - r.created_at).total_seconds()))
        return len(rows)

    def publish_batch(self, sessions: sessionmaker[Session], limit: int) -> int | None:
        """Positions for up to ``limit`` committed unsent events, committed; then the oldest
        positioned events delivered and marked sent. How many were delivered, or None when
        another publisher holds the lock (and so will deliver them).

        Positions are committed before anything reaches Redis: a delivery that fails after
        its appends is retried with the same positions, which Redis recognises as copies,
        instead of new ones that clients would take for new events.
        """
        with sessions() as session, session.begin():
            if not outbox.try_lock(session):
                return None
            # Nothing newly positioned and nothing left from a failed delivery: nothing to
            # send, and no second transaction (the common end of a run: a read that is empty).
            if not outbox.assign_positions(session, limit) and not outbox.any_positioned(session):
                return 0
        with sessions() as session, session.begin():
            if not outbox.try_lock(session):
                return None
            return self.deliver_unsent(session, limit)


@dataclass(frozen=True)
class Resync:
    """The replay streams may not hold everything a client missed: it must reload its
    state over HTTP. ``oldest_event_id`` is the oldest position replay still covers."""

    reason: str
    oldest_event_id: int | None


def catch_up(
    client: redis.Redis, rooms: list[str], after_event_id: int
) -> list[tuple[int, str, dict]] | Resync:
    """Events in ``rooms`` after ``after_event_id``, oldest first, as (event_id, event,
    data); or a Resync when the streams can no longer show all of them.

    The streams are read before the floor: the floor only rises, so a floor that admits
    ``after_event_id`` now admitted it when the streams were read, and nothing the client
    needs had been trimmed yet.
    """
    pipe = client.pipeline(transaction=False)
    for room in rooms:
        pipe.xrange(replay_key(room), min=f"({after_event_id}-0", max="+")
    pipe.mget(SINCE_KEY, FLOOR_KEY)
    *streams, (since, floor) = pipe.execute()
    if since is None:
        # This Redis has streamed nothing (it restarted empty, say): whatever came after
        # the client's event is not here to replay. That holds for 0 too ("everything"):
        # positions may have been streamed to the Redis that was lost.
        return Resync("replay_log_reset", None)
    oldest = max(int(since), int(floor or 0))
    if after_event_id + 1 < oldest:
        return Resync("older_than_replay_window", oldest)
    return sorted(
        (
            int(entry_id.decode().split("-")[0]),
            fields[b"event"].decode(),
            json.loads(fields[b"data"]),
        )
        for entries in streams
        for entry_id, fields in entries
    )
