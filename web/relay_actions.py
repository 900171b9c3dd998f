"""Driver actions over the relay: a driver answers an offer, and reports its ride's progress,
on the Socket.IO connection it already holds.

``driver_action`` with ``{"booking_id": 12, "action": "accept"}`` does what
``POST /v1/bookings/12/accept`` does, through the same ``dispatch.bookings.driver_action``
and the same transaction, and is acknowledged with what that request would answer:
``{"status": 200, "booking": {...}}`` or ``{"status": 409, "error": {...}}``. An app saves
an HTTP request (its TLS, headers and authentication) per action, three of them a ride.

The relay runs on eventlet, so psycopg2 must yield to other green threads while it waits
on PostgreSQL: ``eventlet.monkey_patch()`` in ``smartroute.relay`` sees to it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from dispatch import bookings as service
from dispatch.errors import DispatchError
from smartroute import token_cache
from smartroute.metrics import RELAY_DRIVER_ACTIONS
from smartroute.settings import Settings
from web.errors import domain_error, error_body, validation_error
from web.schemas import DriverActionMessage
from workers.dispatching import request_follow_up

log = logging.getLogger("smartroute.relay")


@dataclass(frozen=True)
class Identity:
    """Who a relay connection belongs to, and by which token, for its whole life."""

    user_id: int
    role: str
    token_hash: str
    expires_at: dt.datetime | None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass
class DriverActions:
    """Carries out drivers' actions for the relay, as the API would."""

    settings: Settings
    sessions: sessionmaker[Session]
    celery: Celery
    cache: redis.Redis

    def handle(self, holder: Identity, message: Any) -> tuple[dict, bool]:
        """The acknowledgement for one message, and whether the connection should end (its
        token has expired or been revoked since it connected)."""
        if not self._still_valid(holder):
            return _answer(401, error_body("unauthorized", "the token has expired or been "
                                                            "revoked; connect again")), True
        if holder.role != "driver":
            return _answer(403, error_body("forbidden", "only drivers act on bookings")), False
        try:
            action = DriverActionMessage.model_validate(message)
        except ValidationError as exc:
            body, status = validation_error(exc)
            return _answer(status, body), False
        return self._carry_out(holder.user_id, action), False

    def _still_valid(self, holder: Identity) -> bool:
        """What the API checks on every request: expiry here, revocation in Redis."""
        if holder.expired(dt.datetime.now(dt.UTC)):
            return False
        try:
            return not token_cache.revoked(self.cache, [holder.token_hash])
        except (redis.RedisError, OSError):
            # As the relay's connect does: without Redis, a live connection's token stands
            # until the next revalidation; the database still decides who holds what.
            return True

    def _carry_out(self, driver_id: int, action: DriverActionMessage) -> dict:
        session = self.sessions()
        try:
            booking = service.driver_action(session, action.booking_id, driver_id, action.action,
                                            now=dt.datetime.now(dt.UTC))
            session.commit()
        except DispatchError as exc:
            session.rollback()
            RELAY_DRIVER_ACTIONS.labels(action.action, "refused").inc()
            body, status = domain_error(exc)
            return _answer(status, body)
        except (OperationalError, PoolTimeout) as exc:
            session.rollback()
            log.error("database unavailable: %s", exc.__class__.__name__)
            RELAY_DRIVER_ACTIONS.labels(action.action, "failed").inc()
            return _answer(503, error_body("database_unavailable",
                                           "the database is unavailable; try again shortly"))
        except Exception:
            # As the API's 500: logged with its traceback, and the driver still gets an
            # answer rather than waiting out its acknowledgement timeout.
            session.rollback()
            log.exception("driver action failed")
            RELAY_DRIVER_ACTIONS.labels(action.action, "failed").inc()
            return _answer(500, error_body("internal_error", "something went wrong on our side"))
        finally:
            session.close()
        request_follow_up(self.celery, self.cache, booking, self.settings.batch_window_s)
        RELAY_DRIVER_ACTIONS.labels(action.action, "done").inc()
        return {"status": 200, "booking": service.booking_payload(booking)}


def _answer(status: int, body: dict) -> dict:
    return {"status": status, **body}
