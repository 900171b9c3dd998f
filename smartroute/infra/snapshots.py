"""Snapshots that beat computes and the API serves: booking stats and health metrics.

Each is a JSON document in Redis with a TTL, so a stopped beat makes them go cold
rather than silently stale; readers then fall back to computing them live.
"""

from __future__ import annotations

import json
import logging

import redis

log = logging.getLogger(__name__)

STATS_KEY = "smartroute:snapshot:booking-stats"
HEALTH_KEY = "smartroute:snapshot:health"


def redis_client(url: str) -> redis.Redis:
    """A client that fails fast: a snapshot is an optimisation, never worth a hung request."""
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def save(client: redis.Redis, key: str, snapshot: dict, ttl_s: int) -> None:
    client.set(key, json.dumps(snapshot), ex=ttl_s)


def load(client: redis.Redis, key: str) -> dict | None:
    """The cached snapshot, or None when it is cold or Redis cannot be reached."""
    try:
        raw = client.get(key)
    except (redis.RedisError, OSError) as exc:
        log.warning("snapshot cache unavailable: %s", exc.__class__.__name__)
        return None
    return None if raw is None else json.loads(raw)
