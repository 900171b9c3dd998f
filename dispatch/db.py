"""Engines and sessions. The caller owns each transaction; nothing here commits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.util import identity_key

UPGRADE_COMMAND = "smartroute db upgrade"


@dataclass(frozen=True)
class SessionLimits:
    """What PostgreSQL ends on SmartRoute's behalf, in seconds.

    ``idle_in_transaction_s`` is the fence: a process that stalls inside a transaction
    (SIGSTOP, a GC pause, a hung client) would hold its row locks and keep bookings and
    drivers from everyone else; PostgreSQL ends its session, rolling it back, so the stalled
    process's late write fails instead of landing on state it no longer knows.
    ``statement_s`` ends a runaway statement, ``lock_s`` a wait for a lock someone else holds.
    """

    idle_in_transaction_s: float = 10.0
    statement_s: float = 30.0
    lock_s: float = 5.0

    def __post_init__(self) -> None:
        # PostgreSQL reads 0 as "never": a limit that silently vanishes is worse than none.
        for name, value in self.as_milliseconds().items():
            if value <= 0:
                raise ValueError(f"{name} must be at least 1 ms, got {value} ms")

    def as_milliseconds(self) -> dict[str, int]:
        """PostgreSQL's parameter names and their values in milliseconds."""
        return {
            "idle_in_transaction_session_timeout": round(self.idle_in_transaction_s * 1000),
            "statement_timeout": round(self.statement_s * 1000),
            "lock_timeout": round(self.lock_s * 1000),
        }


class SessionLimitsMissing(RuntimeError):
    """The database role SmartRoute connects as has no session limits set for this database."""


def set_role_limits(connection: Connection, limits: SessionLimits) -> None:
    """Make ``limits`` the defaults of every new session of this role on this database.

    ``ALTER ROLE … IN DATABASE … SET`` rather than per-connection startup options:
    PgBouncer in transaction mode refuses those, and a setting on the role holds for every
    process, whatever connects it. Sessions already open keep what they had.
    """
    database = connection.scalar(text("SELECT current_database()"))
    quoted = connection.dialect.identifier_preparer.quote_identifier(database)
    for name, milliseconds in limits.as_milliseconds().items():
        # Identifiers and integers only: ALTER ROLE takes no bound parameters.
        connection.execute(
            text(f"ALTER ROLE CURRENT_USER IN DATABASE {quoted} SET {name} = {int(milliseconds)}")
        )


def _require_limits(dbapi_connection: Any, _record: Any) -> None:
    """Refuse a connection on which PostgreSQL would not end a stalled transaction,
    a runaway statement or an endless lock wait: the fence is what keeps a paused worker's
    late write from landing."""
    names = list(SessionLimits().as_milliseconds())
    with dbapi_connection.cursor() as cursor:
        # One round trip: current_setting(name) is what SHOW name shows.
        cursor.execute(
            "SELECT current_user, current_database(), "
            + ", ".join(f"current_setting('{name}')" for name in names)
        )
        role, database, *shown = cursor.fetchone()
    missing = [name for name, value in zip(names, shown, strict=True) if value in ("0", "0ms")]
    # The query opened a transaction; end it, or the connection's first real transaction
    # would inherit its start time (now()) and its idle clock.
    dbapi_connection.rollback()
    if missing:
        dbapi_connection.close()
        raise SessionLimitsMissing(
            f"PostgreSQL role {role!r} has no {', '.join(missing)} on database "
            f"{database!r}; run `{UPGRADE_COMMAND}` (it sets them with ALTER ROLE) or set "
            "them on the role by hand"
        )


def transaction_now(session: Session) -> dt.datetime:
    """The database's clock at the start of this transaction (``now()``).

    Whatever a transaction decides by time (an offer lapsing, a booking expiring, a driver
    gone silent), it decides by this clock: one clock for every process, read inside the
    transaction, so neither a skewed host clock nor a pause before the transaction moves it.
    """
    now: dt.datetime = session.execute(text("SELECT now()")).scalar_one()
    return now


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
    pre_ping: bool = True,
) -> Engine:
    """An engine with a bounded pool: 5 kept, 20 at most, 30 s to acquire.

    The session limits (``SessionLimits``) are the role's, set by ``smartroute db upgrade``;
    each new connection checks they are in force and raises ``SessionLimitsMissing`` if not,
    so a database nobody upgraded fails loudly instead of running without its fences.

    ``pre_ping`` tests each connection as it is checked out, a round trip every time. The
    API and the workers turn it off: a connection a database restart left dead fails its
    request with a 503 (which clients retry), or its task with an error tasks retry, and
    the pool is emptied at once, so only that request or task pays.
    """
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=pool_recycle,
        pool_pre_ping=pre_ping,
        connect_args={
            "application_name": application_name,
            "connect_timeout": 10,
        },
    )
    event.listen(engine, "connect", _require_limits)
    return engine


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
