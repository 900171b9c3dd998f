"""Where drivers are, in a Redis GEO set: the spatial index batches search first.

A location ping is one GEOADD (O(log n)); a batch asks GEOSEARCH for the drivers within
each booking's radius instead of scanning a table. PostgreSQL stays the source of truth
for who is available and recently seen: the index only narrows whom to ask about. When
the index is missing (Redis restarted empty) or unreachable, batches fall back to
PostgreSQL, so a lost index slows matching down but never stops it.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

KEY = "smartroute:drivers:locations"


class RedisDriverIndex:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def update(self, driver_id: int, lat: float, lng: float) -> None:
        self.client.geoadd(KEY, (lng, lat, driver_id))

    def remove(self, driver_id: int) -> None:
        self.client.zrem(KEY, driver_id)

    def near_any(self, points: list[tuple[float, float, float]]) -> set[int] | None:
        """Drivers within radius_km of any (lat, lng, radius_km); None when the index can't say."""
        try:
            if not self.client.exists(KEY):
                return None
            pipe = self.client.pipeline(transaction=False)
            for lat, lng, radius_km in points:
                pipe.geosearch(KEY, longitude=lng, latitude=lat, radius=radius_km, unit="km")
            return {int(member) for found in pipe.execute() for member in found}
        except (redis.RedisError, OSError) as exc:
            log.warning("driver index unavailable, using PostgreSQL: %s", exc.__class__.__name__)
            return None


def best_effort(action, *args) -> None:
    """Keep the index current without ever failing the request that moved the driver."""
    try:
        action(*args)
    except (redis.RedisError, OSError) as exc:
        log.warning("driver index not updated: %s", exc.__class__.__name__)
