"""Delivering outbox events: to the relays through Redis, and to the replay log.

Workers publish on the channel of the relays' ``socketio.RedisManager`` (no eventlet,
no server here); every relay process subscribed to it emits to its own clients. Each
event is also appended to its room's capped Redis stream, keyed by ``event_id``, so a
relay can replay what a reconnecting client missed without touching the database. A
run's appends and emits go out in one pipeline: one round trip, not one per event.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import redis
from sqlalchemy.orm import Session

from dispatch import outbox
from smartroute.metrics import PUSH_LATENCY

CHANNEL = "smartroute-push"
REPLAY_PREFIX = "smartroute:replay:"
# Per room: enough for a driver who lost signal for a few minutes at a busy hour.
REPLAY_LENGTH = 1000


def replay_key(room: str) -> str:
    return REPLAY_PREFIX + room


def emit_message(host_id: str, room: str, event: str, data: dict) -> str:
    """What ``socketio.RedisManager.emit`` publishes for a relay to emit ``event`` to
    ``room`` (python-socketio's ``PubSubManager.emit``, JSON-encoded as the relays' manager
    decodes it). tests/integration/test_push.py fails if the two ever part ways."""
    return json.dumps({"method": "emit", "event": event, "data": [data], "binary": False,
                       "namespace": "/", "room": room, "skip_sid": None, "callback": None,
                       "host_id": host_id})


class Publisher:
    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.host_id = uuid.uuid4().hex

    def deliver(self, events: list[tuple[int, str, str, dict]]) -> None:
        """(event_id, room, event, data) in event_id order; raises if Redis refuses them."""
        pipe = self.redis.pipeline(transaction=False)
        for event_id, room, event, data in events:
            pipe.xadd(replay_key(room), {"event": event, "data": json.dumps(data)},
                      id=f"{event_id}-0", maxlen=REPLAY_LENGTH, approximate=True)
            pipe.publish(CHANNEL, emit_message(self.host_id, room, event, data))
        for result in pipe.execute(raise_on_error=False):
            # An event already in the log (a retried batch) is refused as "ID too small":
            # that is the copy we wanted. Anything else is a real failure.
            if isinstance(result, redis.ResponseError) and "equal or smaller" not in str(result):
                raise result


    def deliver_unsent(self, session: Session, limit: int) -> int:
        """One batch of the oldest unsent outbox events, delivered and marked sent in the
        caller's transaction (which holds the publisher lock from here); how many."""
        rows = outbox.claim_unsent(session, limit=limit)
        if rows:
            self.deliver([(r.id, r.room, r.event, outbox.message(r)) for r in rows])
            sent_at = dt.datetime.now(dt.UTC)
            outbox.mark_sent(session, [r.id for r in rows], sent_at)
            for r in rows:
                PUSH_LATENCY.observe(max(0.0, (sent_at - r.created_at).total_seconds()))
        return len(rows)


def missed(client: redis.Redis, room: str, after_event_id: int) -> list[tuple[int, str, dict]]:
    """Events in ``room`` after ``after_event_id``, oldest first: (event_id, event, data)."""
    entries = client.xrange(replay_key(room), min=f"({after_event_id}-0", max="+")
    return [(int(entry_id.decode().split("-")[0]), fields[b"event"].decode(),
             json.loads(fields[b"data"])) for entry_id, fields in entries]
