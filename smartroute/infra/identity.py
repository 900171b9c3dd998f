"""Who presents a token: the one identity check of the API and the relay.

The trust rule: a signed token's signature and expiry are checked here, with the key;
whether the token is live (neither revoked nor expired) is PostgreSQL's word. A note in
Redis may spare the API that round trip only if its HMAC checks out and no revocation
marker is set (``smartroute.infra.token_cache``); the relay always asks the database. Nothing
here imports Flask, so the relay uses it without the API's app.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from dispatch import tokens
from smartroute.infra import token_cache


@dataclass(frozen=True)
class Identity:
    """Who holds a token the database accepted, and by which token (row and hash)."""

    user_id: int
    role: str
    token_id: int
    token_hash: str
    expires_at: dt.datetime | None

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def identify(
    token: object,
    *,
    secret_key: str,
    session: Session,
    cache: redis.Redis | None = None,
    note_s: int = 0,
    now: dt.datetime | None = None,
) -> Identity | None:
    """The identity behind ``token`` if it is well formed, correctly signed (or the
    bootstrap token), unexpired and live in the database; None otherwise.

    With ``cache`` and ``note_s`` > 0 (the API), a signed note in Redis stands in for the
    database for up to ``note_s`` seconds after the database last said yes; without (the
    relay), the database is asked every time. The query runs in the caller's ``session``.
    """
    if not isinstance(token, str) or not token or len(token) > tokens.MAX_TOKEN_LENGTH:
        return None
    now = now or dt.datetime.now(dt.UTC)
    claims = None
    if tokens.looks_signed(token):
        claims = tokens.verify_again(secret_key, token, now)
        if claims is None:
            return None  # Forged or expired: no round trip to anyone.
    token_hash = tokens.hash_token(token)
    notes = cache if note_s > 0 else None
    if notes is not None:
        try:
            note = token_cache.read_note(notes, secret_key, token_hash, now)
        except (redis.RedisError, OSError):
            note = None  # The database decides, as it always may.
        if note is not None and _agrees(note, claims):
            return Identity(note.user_id, note.role, note.token_id, token_hash, note.expires_at)
    holder = tokens.authenticate(session, token, claims)
    if holder is None:
        return None
    identity = Identity(
        holder.user.id, holder.user.role, holder.token_id, token_hash, holder.expires_at
    )
    if notes is not None:
        token_cache.write_note(
            notes,
            secret_key,
            token_hash,
            token_cache.Note(
                identity.user_id, identity.role, identity.token_id, identity.expires_at
            ),
            note_s,
        )
    return identity


def _agrees(note: token_cache.Note, claims: tokens.Claims | None) -> bool:
    """A note about a signed token must say what the token says of itself. (An opaque
    token says nothing; its note is bound to it by the token's hash under the MAC.)"""
    if claims is None:
        return True
    return (note.user_id, note.role, note.token_id, note.expires_at) == (
        claims.user_id,
        claims.role,
        claims.token_id,
        claims.expires_at,
    )
