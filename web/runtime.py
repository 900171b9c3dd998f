"""What a request needs besides itself: settings, a database session, the task queue.

Built once per app in ``create_app`` and reached through ``current_app``; one
session per request, closed (and rolled back if uncommitted) when it ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from smartroute.infra.settings import Settings
from web.limits import RateLimits
from workers.dispatching import request_dispatch, request_follow_up, request_publish


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # The replica's sessions when DATABASE_REPLICA_URL is set, else the primary's.
    read_sessions: sessionmaker[Session]
    celery: Celery
    redis: redis.Redis
    limits: RateLimits


def runtime() -> Runtime:
    return current_app.extensions["smartroute"]


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


def enqueue_dispatch(booking) -> None:
    """Ask for a committed booking to be matched. Call only after commit."""
    rt = runtime()
    request_dispatch(rt.celery, rt.redis, booking.region, rt.settings.batch_window_s, booking.id)


def enqueue_publish() -> None:
    """Push the events this request committed. Call only after commit."""
    request_publish(runtime().celery, runtime().redis)


def enqueue_follow_up(booking) -> None:
    """After a driver's action commits: push it, and match the booking again if declined."""
    rt = runtime()
    request_follow_up(rt.celery, rt.redis, booking, rt.settings.batch_window_s)
