"""Asking the workers for work: a booking matched (one message per booking, or one batch
per window), committed events pushed.

The API and the relay ask through ``Enqueue``, which waits for their transaction to commit
(smartroute.infra.after_commit); tasks call the ``request_*`` functions after their own
transaction ends. With a batch window, the first booking of a window in a region schedules
the region's batch one window ahead (a Redis ``SET NX PX`` makes it the only one);
bookings arriving meanwhile ride along. The window is the region's own, set by its last
batch (``dispatch.matching.window``; ``set_batch_window``), read and claimed in one Lua
call. The countdown is at most a second or two, far below the broker's visibility
timeout; anything a lost message would have matched, the redispatch sweep finds in its row.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from redis.commands.core import Script
from sqlalchemy.orm import Session

from dispatch.bookings.payloads import BookingFields
from dispatch.matching.window import WindowPolicy
from dispatch.states import Status
from smartroute.infra.after_commit import after_commit
from smartroute.infra.queues import NOTIFY, dispatch_queue

log = logging.getLogger(__name__)

MATCH_BOOKING = "workers.tasks.match_booking"
DISPATCH_REGION = "workers.tasks.dispatch_region"
PUBLISH_OUTBOX = "workers.tasks.publish_outbox"
# Publishing must not hold a request hostage when Redis is down: the booking is committed,
# and the sweeper re-enqueues any booking whose message never arrived.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


def _send(
    app: Celery, name: str, args: list[Any], queue: str, countdown: float | None = None
) -> None:
    app.send_task(
        name,
        args=args,
        queue=queue,
        countdown=countdown,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
    )


def request_dispatch(
    app: Celery,
    cache: redis.Redis | None,
    region: str,
    window: WindowPolicy,
    booking_id: int | None = None,
    *,
    now: bool = False,
) -> None:
    """Have ``booking_id`` (or the region's waiting bookings) matched. Never raises."""
    queue = dispatch_queue(region)
    try:
        if window.max_s <= 0:
            if booking_id is not None:
                _send(app, MATCH_BOOKING, [booking_id], queue)
            else:
                # Without a window, "later" still means a moment later, never a busy loop.
                _send(app, DISPATCH_REGION, [region], queue, countdown=None if now else 1.0)
        elif now:
            _send(app, DISPATCH_REGION, [region, None, time.time()], queue)
        elif (window_s := _first_of_window(cache, region, window)) is not None:
            args = [region, window_s, time.time() + window_s]
            _send(app, DISPATCH_REGION, args, queue, countdown=window_s or None)
    except Exception:
        # The row is the record; the sweeper will find the booking pending and enqueue it.
        log.warning(
            "could not request dispatch for region %s; the sweeper will", region, exc_info=True
        )


def batch_window_key(region: str) -> str:
    return f"smartroute:batch-window:{region}"


# The region's window, or the default if its batches have not set one (or it lapsed), held
# within the policy's bounds whatever Redis holds, is claimed for this caller if no one
# holds it: the window in ms, or -1 if someone does.
_FIRST_OF_WINDOW = """
local ms = tonumber(redis.call('GET', KEYS[2])) or tonumber(ARGV[1])
ms = math.min(tonumber(ARGV[3]), math.max(tonumber(ARGV[2]), ms))
if redis.call('SET', KEYS[1], 1, 'NX', 'PX', math.max(1, ms)) then return ms end
return -1
"""
_scripts: dict[int, Script] = {}
# A region whose batches stop (no bookings) forgets its window after this long, and its
# next booking starts from the policy's minimum again.
WINDOW_TTL_S = 600


def _first_of_window(cache: redis.Redis | None, region: str, window: WindowPolicy) -> float | None:
    """The window this caller's batch waits, if it is the first of one (else None).

    Without Redis, everyone is first, at the largest window: a duplicate batch is
    harmless, a missing one is not.
    """
    if cache is None:
        return window.max_s
    default_ms = round((window.min_s if window.adaptive else window.max_s) * 1000)
    try:
        script = _scripts.get(id(cache))
        if script is None:
            script = _scripts[id(cache)] = cache.register_script(_FIRST_OF_WINDOW)
        keys = [f"smartroute:batch-scheduled:{region}", batch_window_key(region)]
        bounds = [round(window.min_s * 1000), round(window.max_s * 1000)]
        ms = int(script(keys=keys, args=[default_ms, *bounds], client=cache))
    except (redis.RedisError, OSError):
        return window.max_s
    return None if ms < 0 else window.clamp(ms / 1000)


def set_batch_window(cache: redis.Redis, region: str, window_s: float) -> None:
    """What the region's next batch waits (its last batch decided). Never raises: without
    Redis, bookings wait the largest window."""
    with contextlib.suppress(redis.RedisError, OSError):
        cache.set(batch_window_key(region), round(window_s * 1000), ex=WINDOW_TTL_S)


def batch_window(cache: redis.Redis | None, region: str) -> float | None:
    """The region's current window in seconds (None: not set, or Redis unreachable)."""
    return batch_windows(cache, [region])[region] if cache is not None else None


def batch_windows(cache: redis.Redis, regions: list[str]) -> dict[str, float | None]:
    """Each region's current window in seconds (None: not set, or Redis unreachable)."""
    try:
        values = cache.mget([batch_window_key(r) for r in regions]) if regions else []
    except (redis.RedisError, OSError):
        values = [None] * len(regions)
    return {r: None if v is None else int(v) / 1000 for r, v in zip(regions, values, strict=True)}


def _first(cache: redis.Redis | None, key: str, ttl_ms: int) -> bool:
    """Whether this caller is the first to ask within ``ttl_ms`` (a Redis ``SET NX PX``).

    Without Redis, everyone is first: a duplicate batch or publish is harmless, a missing
    one is not.
    """
    if cache is None:
        return True
    try:
        return bool(cache.set(key, 1, nx=True, px=ttl_ms))
    except (redis.RedisError, OSError):
        return True


PUBLISH_SCHEDULED = "smartroute:publish-scheduled"
# How long one publish request stands for every commit after it. The publisher clears it
# as its run ends (at most workers.tasks.PUBLISH_RUN_S after it starts), so this only
# bounds the wait if its message is lost (beat catches up too).
PUBLISH_PENDING_MS = 5000


def request_publish(app: Celery, cache: redis.Redis | None = None) -> None:
    """Have committed outbox events pushed soon. Never raises: beat's publish catches up.

    Coalesced: while one publish is asked for or running, later commits ride along with
    it (a Redis ``SET NX``; the run reads again before it ends, workers.tasks), so a busy
    engine sends one publish message per publisher run instead of one per commit.

    Never delayed with a countdown: a worker holding a countdown message it has not acked
    dies when Redis goes away (kombu 5.7 cannot restore unacked messages without a
    connection: tests/chaos found it), and publish requests are the commonest message.
    """
    try:
        if not _first(cache, PUBLISH_SCHEDULED, PUBLISH_PENDING_MS):
            return
        _send(app, PUBLISH_OUTBOX, [], NOTIFY)
    except Exception:
        log.warning("could not request a publish; beat's will send the events", exc_info=True)


def publish_finished(cache: redis.Redis) -> None:
    """The publisher reads once more and stops: commits from now on need a new run."""
    # If Redis refuses, the key expires by itself; until then beat's publish covers the gap.
    with contextlib.suppress(redis.RedisError, OSError):
        cache.delete(PUBLISH_SCHEDULED)


PUBLISH_AGAIN = "smartroute:publish-again"
# It stands for one more run by whoever holds the publisher lock, which ends well within
# this; the expiry only tidies a flag whose holder died (beat's publish covers that).
PUBLISH_AGAIN_MS = 60_000


def ask_to_publish_again(cache: redis.Redis) -> None:
    """Ask the publisher holding the lock to run once more after it lets go. Never raises:
    without Redis, beat's periodic publish catches up."""
    with contextlib.suppress(redis.RedisError, OSError):
        cache.set(PUBLISH_AGAIN, 1, px=PUBLISH_AGAIN_MS)


def asked_to_publish_again(cache: redis.Redis) -> bool:
    """Whether a publisher that found the lock held asked for another run; clears the ask."""
    try:
        return cache.getdel(PUBLISH_AGAIN) is not None
    except (redis.RedisError, OSError):
        return False


def request_follow_up(
    app: Celery,
    cache: redis.Redis | None,
    region: str,
    booking_id: int,
    status: str,
    window: WindowPolicy,
) -> None:
    """After a driver's action on a booking commits, wherever it came from (the API or the
    relay): push the change, and have the booking matched again if it went back to
    pending (a decline). Never raises."""
    request_publish(app, cache)
    if status == Status.PENDING:
        request_dispatch(app, cache, region, window, booking_id)


@dataclass(frozen=True)
class Enqueue:
    """What the API and the relay ask of the workers, sent once their transaction commits.

    Each method notes the request on ``session`` (smartroute.infra.after_commit) and
    returns at once: a rolled-back request asks for nothing. What a send needs of a booking
    is read when it is asked for, so the send touches no session.
    """

    celery: Celery
    cache: redis.Redis | None
    window: WindowPolicy

    def dispatch(self, session: Session, booking: BookingFields) -> None:
        """Have a new booking matched."""
        region, booking_id = booking.region, booking.id
        after_commit(
            session,
            lambda: request_dispatch(self.celery, self.cache, region, self.window, booking_id),
        )

    def publish(self, session: Session) -> None:
        """Push the events this transaction records."""
        after_commit(session, lambda: request_publish(self.celery, self.cache))

    def follow_up(self, session: Session, booking: BookingFields) -> None:
        """After a driver's action: push it, and match the booking again if declined."""
        region, booking_id, status = booking.region, booking.id, booking.status
        after_commit(
            session,
            lambda: request_follow_up(
                self.celery, self.cache, region, booking_id, status, self.window
            ),
        )
