"""The database engines and sessions of every process: the API, the relay and the workers.

Built here, from settings, and nowhere else. An engine is told its process's name
(PostgreSQL's ``application_name``, which pool metrics and ``pg_stat_activity`` show) and
how many connections to keep.
"""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dispatch.db import make_engine, make_sessionmaker
from smartroute.infra.metrics import instrument_pool
from smartroute.infra.settings import Settings


def database_engine(
    settings: Settings,
    url: str,
    name: str,
    *,
    keep_all: bool = False,
    pool_size: int | None = None,
    max_overflow: int | None = None,
) -> Engine:
    """The pool (README, settings): ``db_pool_size`` kept, up to ``db_max_overflow`` more
    opened under load and closed when returned. With ``keep_all``, every connection opened
    is kept (up to both together): for the API, whose threads bound how many it opens, and
    the relay, whose green threads queue for one at no cost. Opening a connection costs
    PostgreSQL a new backend process: 2 ms of its CPU per booking when the API's eight
    threads shared five kept connections. ``pool_size`` and ``max_overflow`` given
    outright override the settings (a worker's prefork child runs one task at a time).

    No round trip per checkout: a connection a database restart left dead fails its
    request with a 503 (which clients retry) or its task with an error tasks retry, and the
    pool is emptied at once, so only that request or task pays.
    """
    kept = settings.db_pool_size + (settings.db_max_overflow if keep_all else 0)
    engine = make_engine(
        url,
        pool_size=kept if pool_size is None else pool_size,
        max_overflow=(0 if keep_all else settings.db_max_overflow)
        if max_overflow is None
        else max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_recycle=settings.db_pool_recycle_s,
        application_name=name,
        pre_ping=False,
    )
    instrument_pool(engine, name)
    return engine


def database_sessions(
    settings: Settings,
    url: str,
    name: str,
    *,
    keep_all: bool = False,
    pool_size: int | None = None,
    max_overflow: int | None = None,
) -> sessionmaker[Session]:
    """Sessions on a new ``database_engine``; ``sessions.kw["bind"]`` is the engine."""
    return make_sessionmaker(
        database_engine(
            settings, url, name, keep_all=keep_all, pool_size=pool_size, max_overflow=max_overflow
        )
    )
