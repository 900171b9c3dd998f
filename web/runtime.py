"""What a request needs besides itself: settings, a database session, the task queue.

Built once per app in ``create_app`` and reached through ``current_app``; one
session per request, closed (and rolled back if uncommitted) when it ends. What a view asks
of the workers is sent once that session commits, and never if it does not
(smartroute.infra.after_commit): a view asks while its transaction is open.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatch.bookings.payloads import BookingFields
from smartroute.infra.enqueue import Enqueue
from smartroute.infra.settings import Settings
from web.limits import RateLimits


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    # settings.secret_key, which the app refuses to start without.
    secret_key: str
    engine: Engine
    sessions: sessionmaker[Session]
    # The replica's sessions when DATABASE_REPLICA_URL is set, else the primary's.
    read_sessions: sessionmaker[Session]
    celery: Celery
    enqueue: Enqueue
    redis: redis.Redis
    limits: RateLimits


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["smartroute"]
    return rt


def db() -> Session:
    """This request's session."""
    if "db" not in g:
        g.db = runtime().sessions()
    return g.db


def read_db() -> Session:
    """This request's read-only session: on the replica when there is one."""
    if "read_db" not in g:
        g.read_db = runtime().read_sessions()
    return g.read_db


def close_db(_exc: BaseException | None = None) -> None:
    for name in ("db", "read_db"):
        session = g.pop(name, None)
        if session is not None:
            session.close()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def enqueue_dispatch(booking: BookingFields) -> None:
    """Have a new booking matched, once this request's transaction commits."""
    runtime().enqueue.dispatch(db(), booking)


def enqueue_publish() -> None:
    """Push the events this request records, once its transaction commits."""
    runtime().enqueue.publish(db())


def enqueue_follow_up(booking: BookingFields) -> None:
    """After a driver's action, once it commits: push it, and match the booking again if
    declined."""
    runtime().enqueue.follow_up(db(), booking)
