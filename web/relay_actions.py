"""Driver actions over the relay: a driver answers an offer, and reports its ride's progress,
on the Socket.IO connection it already holds.

``driver_action`` with ``{"booking_id": 12, "action": "accept"}`` does what
``POST /v1/bookings/12/accept`` does, through the same ``dispatch.bookings.driver_action``
and the same transaction, and is acknowledged with what that request would answer:
``{"status": 200, "booking": {...}}`` or ``{"status": 409, "error": {...}}``. An app saves
an HTTP request (its TLS, headers and authentication) per action, three to five of them a
ride. ``arrive`` is ``/arrive``, ``no_show`` is ``/no-show``, and ``cancel`` (with its
``reason``) is a driver's ``/cancel``: the booking goes back to matching.

The relay runs on eventlet, so psycopg2 must yield to other green threads while it waits
on PostgreSQL: ``eventlet.monkey_patch()`` in ``smartroute.cli.relay`` sees to it.

Every action runs in its own green thread, and the relay's threads share one pool of database
connections, so one driver could take them all. A connection therefore runs one action at a
time (a second one, sent while the first runs, is answered 429 ``busy`` at once), and a token
has ``SMARTROUTE_RELAY_ACTION_LIMIT_PER_TOKEN`` actions across every relay (429
``rate_limited`` with ``retry_after_s``; counted in Redis, and let through when Redis is down,
as the API's limits are).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from dispatch import bookings as service
from dispatch import tokens
from smartroute.infra.enqueue import Enqueue
from smartroute.infra.identity import Identity
from smartroute.infra.metrics import DRIVER_CANCELLATIONS, RELAY_DRIVER_ACTIONS, RIDE_ENDINGS
from smartroute.infra.settings import Settings
from web.errors import DATABASE_UNAVAILABLE, error_answer, error_body
from web.limits import seconds_over, storage_url
from web.schemas import DriverActionMessage

log = logging.getLogger("smartroute.relay")


@dataclass
class DriverActions:
    """Carries out drivers' actions for the relay, as the API would."""

    settings: Settings
    sessions: sessionmaker[Session]
    celery: Celery
    cache: redis.Redis
    _running: set[str] = field(default_factory=set, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self._enqueue = Enqueue(self.celery, self.cache, self.settings.batch_window)
        self._policy = service.RidePolicy(
            no_show_wait_s=self.settings.no_show_wait_s,
            rematch_deadline_s=self.settings.dispatch_deadline_s,
            cancel_grace_s=self.settings.cancel_grace_s,
        )
        self._per_token = parse(self.settings.relay_action_limit_per_token)
        self._limiter = (
            SlidingWindowCounterRateLimiter(
                # On the relay's own Redis pool, whose callers wait for a connection in a
                # burst (smartroute.infra.redis_clients), rather than one of its own.
                RedisStorage(
                    storage_url(self.settings.redis_url),
                    connection_pool=self.cache.connection_pool,
                )
            )
            if self.settings.redis_url
            else None
        )

    def handle_on(self, connection: str, holder: Identity, message: Any) -> tuple[dict, bool]:
        """``handle``, unless ``connection`` already has an action running: then a 429 at
        once, so no connection holds more than one database connection."""
        with self._guard:
            if connection in self._running:
                return _answer(
                    429,
                    error_body(
                        "busy",
                        "this connection's previous action is still running; wait for its answer",
                    ),
                ), False
            self._running.add(connection)
        try:
            return self.handle(holder, message)
        finally:
            with self._guard:
                self._running.discard(connection)

    def handle(self, holder: Identity, message: Any) -> tuple[dict, bool]:
        """The acknowledgement for one message, and whether the connection should end (its
        token has expired or been revoked since it connected)."""
        if holder.expired(dt.datetime.now(dt.UTC)):
            return _stale(), True
        if holder.role != "driver":
            return _answer(403, error_body("forbidden", "only drivers act on bookings")), False
        retry_after = self._over_limit(holder.user_id)
        if retry_after is not None:
            return _answer(
                429,
                error_body(
                    "rate_limited",
                    f"too many driver actions from this token; retry in {retry_after} s",
                    retry_after_s=retry_after,
                ),
            ), False
        try:
            action = DriverActionMessage.model_validate(message)
        except ValidationError as exc:
            body, status = error_answer(exc)
            return _answer(status, body), False
        return self._carry_out(holder, action)

    def _over_limit(self, driver_id: int) -> int | None:
        """Count this action against its token's limit: the seconds to wait if over it."""
        if self._limiter is None:
            return None
        # Keyed as the API keys its per-token limits: by the user the token belongs to.
        return seconds_over(
            self._limiter, self._per_token, "smartroute", "relay_action", "token", str(driver_id)
        )

    def _carry_out(self, holder: Identity, action: DriverActionMessage) -> tuple[dict, bool]:
        """The action in one transaction; its push (and a declined booking's matching) is
        asked for as the API asks, sent once the transaction commits."""
        session = self.sessions()
        try:
            # What the API checks on every request, asked of PostgreSQL in the action's own
            # transaction (within its first statement, where it can be): the token's row is
            # live, and stays so until the action commits.
            booking = service.driver_action(
                session,
                action.booking_id,
                holder.user_id,
                action.action,
                now=dt.datetime.now(dt.UTC),
                reason=action.reason,
                policy=self._policy,
                token_id=holder.token_id,
            )
            self._enqueue.follow_up(session, booking)
            session.commit()
        except tokens.TokenNotLive:
            session.rollback()
            return _stale(), True
        except Exception as exc:
            # Answered from the API's table (web.errors): a domain error as its status, the
            # database being unavailable as 503, anything else as the API's 500, logged
            # with its traceback; the driver gets an answer either way rather than waiting
            # out its acknowledgement timeout.
            session.rollback()
            body, status = error_answer(exc)
            if status >= 500:
                if status == DATABASE_UNAVAILABLE.status:
                    log.error("database unavailable: %s", exc.__class__.__name__)
                else:
                    log.exception("driver action failed")
            RELAY_DRIVER_ACTIONS.labels(
                action.action, "refused" if status < 500 else "failed"
            ).inc()
            return _answer(status, body), False
        finally:
            session.close()
        RELAY_DRIVER_ACTIONS.labels(action.action, "done").inc()
        if action.action == "cancel":
            DRIVER_CANCELLATIONS.labels(booking.region).inc()
        elif action.action == "no_show":
            RIDE_ENDINGS.labels("no_show").inc()
        return {"status": 200, "booking": service.booking_payload(booking)}, False


def _answer(status: int, body: dict) -> dict:
    return {"status": status, **body}


def _stale() -> dict:
    return _answer(
        401, error_body("unauthorized", "the token has expired or been revoked; connect again")
    )
