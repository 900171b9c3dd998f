"""Which tokens are live, cached in Redis for processes with no database (the relay).

The API writes an entry when it issues a token and when a token authenticates, and
removes it when the token is revoked; the relay only reads. Keys are the token's SHA-256,
never the token. A revocation also leaves a marker, so the relay drops connections that
were opened with the token before it was revoked.

The API keeps a second, short-lived note for itself: that the database accepted the token
moments ago (``accepted``). While it stands, and no revocation marker is set, the API takes
the token without asking the database again. A revocation deletes the note and sets the
marker in one round trip; only if Redis cannot be reached at that moment does a revoked
token stay usable, until the note lapses (``SMARTROUTE_TOKEN_RECHECK_S``).

After Redis restarts empty, a token reaches the relay again as soon as its holder makes
one API call (a driver's app pings its location every few seconds): the cache fails closed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

import redis

from dispatch.tokens import hash_token

log = logging.getLogger(__name__)

PREFIX = "smartroute:token:"
ACCEPTED_PREFIX = "smartroute:token-accepted:"
REVOKED_PREFIX = "smartroute:token-revoked:"
MAX_TTL_S = 7 * 24 * 3600


def _ttl(expires_at: dt.datetime | None) -> int | None:
    if expires_at is None:
        return MAX_TTL_S
    left = int((expires_at - dt.datetime.now(dt.UTC)).total_seconds())
    return min(left, MAX_TTL_S) if left > 0 else None


def remember(client: redis.Redis, token: str, user_id: int, role: str,
             expires_at: dt.datetime | None = None, *, token_id: int | None = None,
             trust_s: int = 0) -> None:
    """Best effort: a cache that cannot be written only delays a relay connection.

    With ``trust_s``, the database has just accepted this token (row ``token_id``): the API
    may take it on trust for that many seconds (noted in the same round trip).
    """
    ttl = _ttl(expires_at)
    if ttl is None:
        return
    token_hash = hash_token(token)
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.set(PREFIX + token_hash, f"{user_id}:{role}", ex=ttl)
            if trust_s > 0:
                pipe.set(ACCEPTED_PREFIX + token_hash, f"{user_id}:{role}:{token_id}",
                         ex=max(1, min(ttl, trust_s)))
            pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("token cache not updated: %s", exc.__class__.__name__)


def recently_accepted(client: redis.Redis, token: str) -> tuple[int, str, int] | None:
    """(user id, role, token id) if the database accepted the token moments ago and it has
    not been revoked since; None if it must be asked. Raises if Redis is unreachable."""
    token_hash = hash_token(token)
    accepted, revoked_marker = client.mget(ACCEPTED_PREFIX + token_hash,
                                           REVOKED_PREFIX + token_hash)
    if accepted is None or revoked_marker is not None:
        return None
    user_id, role, token_id = accepted.decode().split(":")
    return int(user_id), role, int(token_id)


def forget(client: redis.Redis, token_hashes: Iterable[str]) -> None:
    """Revoked: remove the entries and leave markers for the relay's open connections.

    Raises if Redis is unreachable, so the caller can say the relay may not know yet.
    """
    hashes = list(token_hashes)
    if not hashes:
        return
    with client.pipeline() as pipe:
        pipe.delete(*(prefix + h for h in hashes for prefix in (PREFIX, ACCEPTED_PREFIX)))
        for token_hash in hashes:
            pipe.set(REVOKED_PREFIX + token_hash, 1, ex=MAX_TTL_S)
        pipe.execute()


def lookup(client: redis.Redis, token: str) -> tuple[int, str] | None:
    raw = client.get(PREFIX + hash_token(token))
    if raw is None:
        return None
    user_id, _, role = raw.decode().partition(":")
    return int(user_id), role


def revoked(client: redis.Redis, token_hashes: list[str]) -> set[str]:
    """Which of these tokens have been revoked (one round trip)."""
    if not token_hashes:
        return set()
    flags = client.mget([REVOKED_PREFIX + h for h in token_hashes])
    return {h for h, flag in zip(token_hashes, flags, strict=True) if flag is not None}
