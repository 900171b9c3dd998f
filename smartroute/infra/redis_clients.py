"""Redis clients whose callers wait for a connection when every one is busy.

redis-py's default pool opens at most 100 connections and raises ``MaxConnectionsError`` at
the 101st caller at once. In the relay, a burst of drivers reconnecting (each replaying
what it missed, each replay emitted through the Redis manager) is exactly that many callers
at once: the default pool turned a burst into refusals. A ``BlockingConnectionPool`` makes
the caller past the limit wait for a connection, up to a timeout, and only then raise
(a ``redis.ConnectionError`` like any other unavailability of Redis).
"""

from __future__ import annotations

import redis


def waiting_redis(
    url: str, *, connections: int, wait_s: float, socket_timeout: float | None = 5
) -> redis.Redis:
    """A client of ``url`` holding at most ``connections`` connections; a caller finding
    them all busy waits up to ``wait_s`` seconds for one."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=connections, timeout=wait_s, socket_timeout=socket_timeout
    )
    return redis.Redis(connection_pool=pool)
