"""Where drivers are, in a Redis GEO set: the spatial index batches search first.

A location ping is one GEOADD (O(log n)); a batch asks GEOSEARCH for the drivers within
each booking's radius instead of scanning a table. PostgreSQL stays the source of truth
for who is available and recently seen: the index only narrows whom to ask about. When
the index is missing (Redis restarted empty) or unreachable, batches fall back to
PostgreSQL, so a lost index slows matching down but never stops it.

Beside the GEO set, a sorted set holds each driver's presence: the time (epoch seconds, by
the receiving server's clock) its last ping arrived. ``near_each`` offers only drivers heard
from within the stale setting, so a driver whose app went silent drops out of the index by
itself. A hash holds the client's time of each driver's last applied fix, so pings that
arrive out of order (over two relays, say) never move a driver backwards
(``apply_pings``, the relay's write).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis

from dispatch.matching.batch import Nearby

log = logging.getLogger(__name__)

KEY = "smartroute:drivers:locations"
PRESENCE_KEY = "smartroute:drivers:presence"
FIX_AT_KEY = "smartroute:drivers:fix_at"

# Drivers written by one script call: a script blocks Redis while it runs, and Lua's
# ``unpack`` has a bounded stack.
CHUNK = 1000

# KEYS: the GEO set, presence, fix times. ARGV: driver id, fix time, lng, lat, receive
# time, for each driver. Applies a driver's fix only if it is newer than the last applied
# one; answers 1 (applied) or 0 (older) per driver. GEOADD refuses latitudes beyond about
# ±85.05 (Web Mercator): such a fix still counts as presence.
_APPLY = """
local applied = {}
for i = 1, #ARGV, 5 do
  local id = ARGV[i]
  local last = tonumber(redis.call('HGET', KEYS[3], id))
  if last == nil or tonumber(ARGV[i + 1]) > last then
    redis.call('HSET', KEYS[3], id, ARGV[i + 1])
    redis.pcall('GEOADD', KEYS[1], ARGV[i + 2], ARGV[i + 3], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 4], id)
    applied[#applied + 1] = 1
  else
    applied[#applied + 1] = 0
  end
end
return applied
"""

# KEYS: the GEO set, presence. ARGV: the oldest presence still fresh, how many members to
# take around each point (0: all), then lat, lng, radius_km for each point. False when there
# is no index; otherwise, for each point, whether the search stopped at that count (1) or
# took everything within the radius (0), then the members it took whose presence is fresh,
# nearest first when counted.
_NEAR_EACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local cutoff, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local found = {}
for i = 3, #ARGV, 3 do
  local search = {'GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[i + 1], ARGV[i],
                  'BYRADIUS', ARGV[i + 2], 'km'}
  if count > 0 then
    search[#search + 1] = 'COUNT'
    search[#search + 1] = count
    search[#search + 1] = 'ASC'
  end
  local members = redis.call(unpack(search))
  local fresh = {(count > 0 and #members == count) and 1 or 0}
  for start = 1, #members, 1000 do
    local chunk = {unpack(members, start, math.min(start + 999, #members))}
    local scores = redis.call('ZMSCORE', KEYS[2], unpack(chunk))
    for j = 1, #chunk do
      local score = scores[j] and tonumber(scores[j])
      if score and score >= cutoff then
        fresh[#fresh + 1] = chunk[j]
      end
    end
  end
  found[#found + 1] = fresh
end
return found
"""


# KEYS: the GEO set, presence, fix times. ARGV: the newest presence to forget, how many at
# most. Forgets those drivers from all three at once (a ping applied meanwhile is either
# before or after the script, never half forgotten); answers how many.
_FORGET = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[3], unpack(gone))
end
return #gone
"""


class RedisDriverIndex:
    def __init__(self, client: redis.Redis, stale_s: float = 120) -> None:
        self.client = client
        self.stale_s = stale_s
        self._near_each = client.register_script(_NEAR_EACH)
        self._forget = client.register_script(_FORGET)

    def update(self, driver_id: int, lat: float, lng: float) -> None:
        """A ping received now (the HTTP path): the position and the driver's presence."""
        pipe = self.client.pipeline(transaction=False)
        pipe.geoadd(KEY, (lng, lat, driver_id))
        pipe.zadd(PRESENCE_KEY, {str(driver_id): time.time()})
        pipe.execute()

    def remove(self, driver_id: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(KEY, driver_id)
        pipe.zrem(PRESENCE_KEY, driver_id)
        pipe.execute()

    def forget_silent(self, silent_for_s: float) -> int:
        """Drop the drivers not heard from for ``silent_for_s`` from the index, a chunk per
        script call, so the sets do not grow with every driver who ever pinged; returns
        how many. ``near_each`` already skips them: this only frees the memory. A driver who
        pings again is indexed again, its next fix taken as the newest."""
        cutoff = time.time() - silent_for_s
        forgotten = 0
        while True:
            gone = int(self._forget(keys=[KEY, PRESENCE_KEY, FIX_AT_KEY], args=[cutoff, CHUNK]))
            forgotten += gone
            if gone < CHUNK:
                return forgotten

    def near_any(self, points: list[tuple[float, float, float]]) -> set[int] | None:
        """Drivers within radius_km of any (lat, lng, radius_km) and heard from within the
        stale setting; None when the index can't say. One round trip (a script)."""
        found = self.near_each(points)
        return None if found is None else {d for nearby in found for d in nearby.drivers}

    def near_each(
        self, points: list[tuple[float, float, float]], count: int | None = None
    ) -> list[Nearby] | None:
        """For each (lat, lng, radius_km), the drivers within the radius heard from within
        the stale setting: with ``count``, only the ``count`` nearest of those indexed (fewer
        once the stale are dropped), nearest first. None when the index can't say. One
        round trip (a script)."""
        args: list[float] = [time.time() - self.stale_s, count or 0]
        for lat, lng, radius_km in points:
            args += [lat, lng, radius_km]
        try:
            found = self._near_each(keys=[KEY, PRESENCE_KEY], args=args)
        except (redis.RedisError, OSError) as exc:
            log.warning("driver index unavailable, using PostgreSQL: %s", exc.__class__.__name__)
            return None
        if found is None:
            return None
        return [Nearby([int(m) for m in members], complete=not cut) for cut, *members in found]


Ping = tuple[int, float, float, float, float]  # driver id, fix time, lat, lng, receive time


class PingWriter:
    """Writes a relay tick's pings (one per driver, the newest) to the index in one
    pipeline: each driver's position, presence and fix time, unless Redis already holds a
    newer fix for that driver."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._apply = client.register_script(_APPLY)

    def apply(self, pings: list[Ping]) -> list[bool]:
        """Whether each ping was applied (False: an equal or newer fix was there first)."""
        chunks = [pings[i : i + CHUNK] for i in range(0, len(pings), CHUNK)]
        try:
            return self._run(chunks)
        except redis.exceptions.NoScriptError:
            # Redis restarted (or flushed its scripts) since the script was loaded: load it
            # and go again; nothing of the failed pipeline was applied.
            self.client.script_load(_APPLY)
            return self._run(chunks)

    def _run(self, chunks: list[list[Ping]]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.evalsha(self._apply.sha, 3, KEY, PRESENCE_KEY, FIX_AT_KEY, *_arguments(chunk))
        return [bool(flag) for flags in pipe.execute() for flag in flags]


def _arguments(pings: Iterable[Ping]) -> list[str | float | int]:
    args: list[str | float | int] = []
    for driver_id, at, lat, lng, received_at in pings:
        # repr: the fix time round-trips exactly, so equal fixes compare equal in Lua.
        args += [driver_id, repr(at), lng, lat, repr(received_at)]
    return args


def best_effort(action, *args) -> None:
    """Keep the index current without ever failing the request that moved the driver."""
    try:
        action(*args)
    except (redis.RedisError, OSError) as exc:
        log.warning("driver index not updated: %s", exc.__class__.__name__)
