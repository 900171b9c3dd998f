"""Signed notes that spare the API a database round trip for a token it accepted moments ago.

Redis is reachable by anyone on the network, so nothing read from it is proof of identity.
A note says "the database accepted this token (row, user, role, expiry)" and is signed with
HMAC-SHA256 under ``SMARTROUTE_SECRET_KEY``; a note whose MAC does not check out, or that
names another token, grants nothing and the database is asked. Keys are the token's
SHA-256, never the token.

A revocation deletes the notes and sets a marker in one round trip, and a note is written by
a script that refuses while the marker stands: a request that read the database just before
a revocation cannot write its note back after it. Only if Redis cannot be reached when a
token is revoked (no marker is set) may the API take a revoked token from a note written
earlier, until that note lapses (``SMARTROUTE_TOKEN_RECHECK_S``).

The relay reads no notes: it asks PostgreSQL (``smartroute.infra.identity``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)

NOTE_PREFIX = "smartroute:token-accepted:"
REVOKED_PREFIX = "smartroute:token-revoked:"
# A marker outlives every note and every request that could still be writing one.
MARKER_TTL_S = 7 * 24 * 3600

# Writes the note unless the token's revocation marker is set; atomic in Redis, so a
# revocation lands either before (refused) or after (deletes the note).
_WRITE_UNLESS_REVOKED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Note:
    """What the database said about a token, as a note carries it."""

    user_id: int
    role: str
    token_id: int
    expires_at: dt.datetime | None


def _mac(secret: str, token_hash: str, note: Note) -> str:
    expiry = "" if note.expires_at is None else str(int(note.expires_at.timestamp()))
    message = "\x00".join(
        (
            "smartroute-token-note",
            token_hash,
            str(note.user_id),
            note.role,
            str(note.token_id),
            expiry,
        )
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _encode(secret: str, token_hash: str, note: Note) -> str:
    expiry = "" if note.expires_at is None else str(int(note.expires_at.timestamp()))
    return ":".join(
        (str(note.user_id), note.role, str(note.token_id), expiry, _mac(secret, token_hash, note))
    )


def _decode(secret: str, token_hash: str, raw: bytes | str) -> Note | None:
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        user_id, role, token_id, expiry, mac = text.split(":")
        note = Note(
            int(user_id),
            role,
            int(token_id),
            dt.datetime.fromtimestamp(int(expiry), dt.UTC) if expiry else None,
        )
    except (UnicodeDecodeError, ValueError, OverflowError, OSError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, token_hash, note)):
        return None
    return note


def write_note(client: redis.Redis, secret: str, token_hash: str, note: Note, trust_s: int) -> bool:
    """The one cache write for a token: after the database accepted it. Best effort
    (Redis down only costs a database round trip later); refused if the token has been
    revoked. Returns whether the note was written."""
    ttl = trust_s
    if note.expires_at is not None:
        ttl = min(ttl, int((note.expires_at - dt.datetime.now(dt.UTC)).total_seconds()))
    if ttl <= 0:
        return False
    try:
        return bool(
            client.eval(
                _WRITE_UNLESS_REVOKED,
                2,
                NOTE_PREFIX + token_hash,
                REVOKED_PREFIX + token_hash,
                _encode(secret, token_hash, note),
                ttl,
            )
        )
    except (redis.RedisError, OSError) as exc:
        log.warning("token note not written: %s", exc.__class__.__name__)
        return False


def read_note(client: redis.Redis, secret: str, token_hash: str, now: dt.datetime) -> Note | None:
    """The note on this token if it is signed with ``secret``, unexpired and no
    revocation marker is set; None if the database must be asked. Raises if Redis is
    unreachable."""
    raw, marker = client.mget(NOTE_PREFIX + token_hash, REVOKED_PREFIX + token_hash)
    if raw is None or marker is not None:
        return None
    note = _decode(secret, token_hash, raw)
    if note is None:
        log.warning("a token note failed its signature check; asking the database")
        return None
    if note.expires_at is not None and note.expires_at <= now:
        return None
    return note


def forget(client: redis.Redis, token_hashes: Iterable[str]) -> None:
    """Revoked: delete the notes and set the markers, in one round trip (MULTI/EXEC).

    Raises if Redis is unreachable; the database has already said no, and the API's notes
    lapse within ``SMARTROUTE_TOKEN_RECHECK_S``.
    """
    hashes = list(token_hashes)
    if not hashes:
        return
    with client.pipeline() as pipe:
        pipe.delete(*(NOTE_PREFIX + h for h in hashes))
        for token_hash in hashes:
            pipe.set(REVOKED_PREFIX + token_hash, 1, ex=MARKER_TTL_S)
        pipe.execute()


def revoked(client: redis.Redis, token_hashes: list[str]) -> set[str]:
    """Which of these tokens carry a revocation marker (one round trip)."""
    if not token_hashes:
        return set()
    flags = client.mget([REVOKED_PREFIX + h for h in token_hashes])
    return {h for h, flag in zip(token_hashes, flags, strict=True) if flag is not None}
