"""Per-process database access for tasks.

An engine's pool must never cross a fork: each prefork child builds its own on first
use, and ``worker_process_init`` throws away anything inherited from the parent.
"""

from __future__ import annotations

import functools

from celery.signals import worker_process_init
from sqlalchemy.orm import Session, sessionmaker

from dispatch.db import make_engine, make_sessionmaker
from dispatch.matching import MatchPolicy
from smartroute.settings import Settings


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def sessions() -> sessionmaker[Session]:
    s = settings()
    if s.database_url is None:
        raise RuntimeError("workers need DATABASE_URL (smartroute worker sets it)")
    engine = make_engine(
        s.database_url,
        # A prefork child runs one task at a time: a small pool is plenty.
        pool_size=2,
        max_overflow=2,
        pool_timeout=s.db_pool_timeout_s,
        pool_recycle=s.db_pool_recycle_s,
        application_name="smartroute-worker",
    )
    return make_sessionmaker(engine)


def match_policy() -> MatchPolicy:
    s = settings()
    return MatchPolicy(
        radius_km=s.match_radius_km,
        candidates=s.match_candidates,
        offer_window_s=s.offer_window_s,
        retry_interval_s=s.retry_interval_s,
        schedule_lead_s=s.schedule_lead_s,
        driver_stale_s=s.driver_stale_s,
    )


@worker_process_init.connect
def _fresh_pool_after_fork(**_kwargs) -> None:
    if sessions.cache_info().currsize:
        sessions().kw["bind"].dispose(close=False)
    sessions.cache_clear()
