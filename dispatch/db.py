"""Engines and sessions. The caller owns each transaction; nothing here commits."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.util import identity_key


def sqlalchemy_url(url: str) -> str:
    """The URL with psycopg2 named as its driver.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; SmartRoute runs on
    psycopg2, and operators should not have to spell the driver.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 15,
    pool_timeout: float = 30.0,
    pool_recycle: int = 1800,
    application_name: str = "smartroute",
    idle_in_transaction_timeout_s: float = 10.0,
    pre_ping: bool = True,
) -> Engine:
    """An engine with the scaling guide's pool: 5 kept, 20 at most, 30 s to acquire.

    A process that stalls inside a transaction (SIGSTOP, a GC pause, a hung client) would
    hold its row locks and keep bookings and drivers from everyone else. PostgreSQL ends
    such a session after ``idle_in_transaction_timeout_s`` (0: never), rolling it back, so
    the stalled process's late write fails instead of landing on state it no longer knows.

    ``pre_ping`` tests each connection as it is checked out, a round trip every time. The
    API and the workers turn it off: a connection a database restart left dead fails its
    request with a 503 (which clients retry), or its task with an error tasks retry, and
    the pool is emptied at once, so only that request or task pays.
    """
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=pool_recycle,
        pool_pre_ping=pre_ping,
        connect_args={
            "application_name": application_name,
            "connect_timeout": 10,
            "options": "-c idle_in_transaction_session_timeout="
                       f"{int(idle_in_transaction_timeout_s * 1000)}",
        },
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: a view serialises the booking it just committed without a
    # second round trip.
    return sessionmaker(engine, expire_on_commit=False)


def expire_loaded(session: Session, model: type, key: int) -> None:
    """After a Core UPDATE of one row: an object of that row this session already holds
    is out of date, so it reloads when next read."""
    loaded = session.identity_map.get(identity_key(model, key))
    if loaded is not None:
        session.expire(loaded)
