"""Per-process database access for tasks.

An engine's pool must never cross a fork: each prefork child builds its own on first
use, and ``worker_process_init`` throws away anything inherited from the parent.
"""

from __future__ import annotations

import functools

import redis
from celery.signals import worker_process_init
from sqlalchemy.orm import Session, sessionmaker

from dispatch.eta import GreatCircleEta
from dispatch.matching.policy import MatchPolicy
from smartroute.infra.database import database_sessions
from smartroute.infra.driver_index import RedisDriverIndex
from smartroute.infra.heap import freeze_loaded_objects
from smartroute.infra.push import Publisher
from smartroute.infra.settings import Settings
from smartroute.infra.snapshots import redis_client


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


def _sessionmaker(url: str, name: str) -> sessionmaker[Session]:
    # A prefork child runs one task at a time: a small pool is plenty.
    return database_sessions(settings(), url, name, pool_size=2, max_overflow=2)


def _redis_url() -> str:
    url = settings().redis_url
    if url is None:
        raise RuntimeError("workers need REDIS_URL (smartroute worker sets it)")
    return url


@functools.cache
def sessions() -> sessionmaker[Session]:
    """Sessions on the primary database."""
    url = settings().database_url
    if url is None:
        raise RuntimeError("workers need DATABASE_URL (smartroute worker sets it)")
    return _sessionmaker(url, "smartroute-worker")


@functools.cache
def reader() -> sessionmaker[Session]:
    """Sessions for read-only work (stats): the replica when DATABASE_REPLICA_URL is set."""
    url = settings().database_replica_url
    return _sessionmaker(url, "smartroute-worker-replica") if url else sessions()


def match_policy() -> MatchPolicy:
    s = settings()
    return MatchPolicy(
        radius_km=s.match_radius_km,
        candidates=s.match_candidates,
        offer_window_s=s.offer_window_s,
        retry_interval_s=s.retry_interval_s,
        schedule_lead_s=s.schedule_lead_s,
        driver_stale_s=s.driver_stale_s,
        max_radius_km=s.max_radius_km,
        rating_weight_s=s.match_rating_weight_s,
    )


def cost_model() -> GreatCircleEta:
    s = settings()
    return GreatCircleEta(speed_kmh=s.speed_kmh, road_factor=s.road_factor)


@worker_process_init.connect
def _fresh_pool_after_fork(**_kwargs) -> None:
    for factory in (sessions, reader):
        if factory.cache_info().currsize:
            factory().kw["bind"].dispose(close=False)
        factory.cache_clear()
    # The tasks and their libraries are loaded: keep them out of the collections that
    # would pause a batch or a publisher run.
    freeze_loaded_objects()


@functools.cache
def cache() -> redis.Redis:
    """This process's Redis client for SmartRoute's own keys (not the broker's)."""
    return redis_client(_redis_url())


@functools.cache
def driver_index() -> RedisDriverIndex:
    return RedisDriverIndex(cache(), stale_s=settings().driver_stale_s)


@functools.cache
def publisher() -> Publisher:
    s = settings()
    return Publisher(_redis_url(), replay_events=s.replay_events, replay_ttl_s=s.outbox_retention_s)
