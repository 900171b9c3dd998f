"""Who a bearer token belongs to, cached in Redis for processes with no database (the relay).

The API writes an entry when it creates a user and when a token authenticates; the relay
only reads. Keys are the token's SHA-256, never the token.
"""

from __future__ import annotations

import logging

import redis

from dispatch.users import hash_token

log = logging.getLogger(__name__)

PREFIX = "smartroute:token:"
TTL_S = 7 * 24 * 3600


def remember(client: redis.Redis, token: str, user_id: int, role: str) -> None:
    """Best effort: a cache that cannot be written only delays a relay connection."""
    try:
        client.set(PREFIX + hash_token(token), f"{user_id}:{role}", ex=TTL_S)
    except (redis.RedisError, OSError) as exc:
        log.warning("token cache not updated: %s", exc.__class__.__name__)


def lookup(client: redis.Redis, token: str) -> tuple[int, str] | None:
    raw = client.get(PREFIX + hash_token(token))
    if raw is None:
        return None
    user_id, _, role = raw.decode().partition(":")
    return int(user_id), role
