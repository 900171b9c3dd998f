"""What a request needs besides itself: settings, a database session, the task queue.

Built once per app in ``create_app`` and reached through ``current_app``; one
session per request, closed (and rolled back if uncommitted) when it ends.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from smartroute.settings import Settings

log = logging.getLogger(__name__)

MATCH_TASK = "workers.tasks.match_booking"

# Publishing must not hold a request hostage when Redis is down: a booking is already
# committed, and the sweeper re-enqueues any booking whose message never arrived.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # The replica's sessions when DATABASE_REPLICA_URL is set, else the primary's.
    read_sessions: sessionmaker[Session]
    celery: Celery
    redis: redis.Redis


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


def enqueue_match(booking_id: int) -> None:
    """Ask a worker to match a committed booking. Call only after commit."""
    try:
        runtime().celery.send_task(
            MATCH_TASK,
            args=[booking_id],
            queue="dispatch",
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    except Exception:
        # The row is the record; the sweeper will find the booking pending and enqueue it.
        log.warning("could not enqueue booking %s; the sweeper will retry it", booking_id,
                    exc_info=True)
