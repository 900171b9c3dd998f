"""``GET /v1/stats``: booking statistics from beat's cache, or live when the cache is cold."""

from __future__ import annotations

from dispatch.states import Role
from dispatch.stats import booking_stats
from smartroute.infra import snapshots
from web.api import api
from web.auth import requires
from web.runtime import read_db, runtime, utcnow


@api.get("/stats")
@requires(Role.ADMIN)
def get_stats():
    cached = snapshots.load(runtime().redis, snapshots.STATS_KEY)
    if cached is not None:
        return cached | {"source": "cache"}
    zones = dict(runtime().settings.region_time_zones)
    return booking_stats(read_db(), now=utcnow(), time_zones=zones) | {"source": "database"}
