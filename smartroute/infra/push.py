"""Delivering outbox events: to the relays through Redis, and to the replay log.

Workers publish on the channel of the relays' ``socketio.RedisManager`` (no eventlet,
no server here); every relay process subscribed to it emits to its own clients. Each
event is also appended to its room's Redis stream, keyed by its position (the
``event_id`` clients see), so a relay can replay what a reconnecting client missed
without touching the database. A run's appends and emits go out in one script call: one
round trip and one command, not three commands per event, and an event is emitted only
with the append that first stores it, so a delivery repeated after a failure emits nothing
twice.

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
    return emit_message_encoded(host_id, room, event, json.dumps(data))


def emit_message_encoded(host_id: str, room: str, event: str, data: str) -> str:
    """``emit_message`` for ``data`` that is already JSON: written around it, not decoded."""
    return (
        f'{{"method": "emit", "event": {json.dumps(event)}, "data": [{data}], '
        f'"binary": false, "namespace": "/", "room": {json.dumps(room)}, '
        f'"skip_sid": null, "callback": null, "host_id": {json.dumps(host_id)}}}'
    )


# A run's events, appended and published in one call. KEYS: the "since" and "floor" markers,
# then each event's stream. ARGV: the floor, the retention in seconds, the channel, the first
# position, then five per event: its position, whether it is below the floor ("1" or "0",
# decided in Python: Lua's numbers are doubles, which cannot tell positions apart above
# 2^53), its name, its data (JSON) and the relays' message. An event goes out on the channel
# only if its entry is new: a batch delivered again (its transaction failed after delivery)
# is a copy, already emitted. An entry refused as older than its stream's newest that the
# stream does not hold is a hole, unless it is below the floor (trimmed, and a client needing
# it resyncs anyway); the positions of any holes are returned. The markers expire with the
# streams: after a retention with no event at all, every stream is gone, and so is the claim
# that this Redis holds the window.
_DELIVER = """
local floor, ttl, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('SET', KEYS[1], ARGV[4], 'NX')
local holes = {}
for i = 3, #KEYS do
    local at = 5 + (i - 3) * 5
    local position, id = ARGV[at], ARGV[at] .. '-0'
    local added = redis.pcall('XADD', KEYS[i], 'MINID', '~', floor, id,
                              'event', ARGV[at + 2], 'data', ARGV[at + 3])
    if type(added) == 'table' and added.err then
        if not string.find(added.err, 'equal or smaller', 1, true) then
            return added
        end
        if ARGV[at + 1] == '0' and #redis.call('XRANGE', KEYS[i], id, id, 'COUNT', 1) == 0 then
            table.insert(holes, position)
        end
    else
        redis.call('PUBLISH', channel, ARGV[at + 4])
    end
    redis.call('EXPIRE', KEYS[i], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], floor, 'EX', ttl)
return holes
"""


class Publisher:
    def __init__(
        self, redis_url: str, *, replay_events: int = 20000, replay_ttl_s: int = 86400
    ) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.host_id = uuid.uuid4().hex
        self.replay_events = replay_events
        self.replay_ttl_s = replay_ttl_s
        self._deliver = self.redis.register_script(_DELIVER)

    def deliver(self, events: list[tuple[int, str, str, str]]) -> None:
        """(position, room, event, data as JSON) in position order, in one Redis call
        (``_DELIVER``); raises if Redis refuses them."""
        if not events:
            return
        floor = max(0, events[-1][0] - self.replay_events)
        keys = [SINCE_KEY, FLOOR_KEY, *(replay_key(room) for _, room, _, _ in events)]
        args: list[str | int] = [floor, self.replay_ttl_s, CHANNEL, events[0][0]]
        for position, room, event, data in events:
            below_floor = "1" if position < floor else "0"
            message = emit_message_encoded(self.host_id, room, event, data)
            args += [position, below_floor, event, data, message]
        if holes := self._deliver(keys=keys, args=args):
            raise ReplayOrderError(
                f"Redis refused positions {[int(p) for p in holes]}, which it does not hold"
            )

    def deliver_unsent(self, session: Session, limit: int) -> int:
        """One batch of the positioned outbox events, deleted in the caller's transaction,
        which holds the publisher lock, and delivered in position order; how many."""
        rows = outbox.take_positioned(session, limit=limit)
        if rows:
            self.deliver([(r.position, r.room, r.event, r.message) for r in rows])
            sent_at = dt.datetime.now(dt.UTC)
            for r in rows:
                PUSH_LATENCY.observe(max(0.0, (sent_at - r.created_at).total_seconds()))
        return len(rows)

    def publish_batch(self, sessions: sessionmaker[Session], limit: int) -> int | None:
        """Positions for up to ``limit`` committed events, committed; then the oldest
        positioned events delivered and deleted. How many were delivered, or None when
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
            if not outbox.assign_positions(session, limit):
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
