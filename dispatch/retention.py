"""Forgetting what is no longer needed: old idempotency keys, dead access tokens and
quotes nobody booked.

Each prune deletes one bounded batch, oldest first, by the database's clock, and skips
rows another transaction holds; the caller runs batches in transactions of their own
until one comes back short, so no run holds many locks or runs long.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

# An Idempotency-Key answers a retry for this long; after it, the same key makes a new
# booking (as payment APIs do after a day).
_PRUNE_IDEMPOTENCY_KEYS = text("""
    DELETE FROM idempotency_keys WHERE (user_id, key) IN (
        SELECT user_id, key FROM idempotency_keys
        WHERE created_at < now() - make_interval(secs => :older_than_s)
        ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
""")

# A token whose row is gone is refused like a revoked one (dispatch.tokens.authenticate
# needs the row), so a signed token's row may go once it is long expired or long revoked.
# A token without an expiry (the bootstrap admin's) keeps its row while it lives, and after
# it is revoked too: ensure_bootstrap_admin would bring a revoked token whose row was gone
# back to life at the next start.
_PRUNE_ACCESS_TOKENS = text("""
    DELETE FROM access_tokens WHERE id IN (
        SELECT id FROM access_tokens
        WHERE expires_at IS NOT NULL
          AND (expires_at < now() - make_interval(secs => :older_than_s)
               OR revoked_at < now() - make_interval(secs => :older_than_s))
        ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)
""")

# A quote no booking names is only a price once shown; long after it lapsed it can go. A
# quote a booking names stays with it: the booking is settled, and charged any fee, on the
# tariff the quote keeps.
_PRUNE_QUOTES = text("""
    DELETE FROM quotes WHERE id IN (
        SELECT q.id FROM quotes q
        WHERE q.expires_at < now() - make_interval(secs => :older_than_s)
          AND NOT EXISTS (SELECT 1 FROM cab_bookings b WHERE b.quote_id = q.id)
        ORDER BY q.expires_at LIMIT :batch FOR UPDATE OF q SKIP LOCKED)
""")


def prune_idempotency_keys(session: Session, *, older_than_s: int, batch: int = 1000) -> int:
    """Delete up to ``batch`` idempotency keys older than ``older_than_s``; how many."""
    return cast(
        "CursorResult[Any]",
        session.execute(_PRUNE_IDEMPOTENCY_KEYS, {"older_than_s": older_than_s, "batch": batch}),
    ).rowcount


def prune_access_tokens(session: Session, *, older_than_s: int, batch: int = 1000) -> int:
    """Delete up to ``batch`` signed tokens expired or revoked more than ``older_than_s``
    ago; how many. Tokens without an expiry (the bootstrap admin's) are never deleted."""
    return cast(
        "CursorResult[Any]",
        session.execute(_PRUNE_ACCESS_TOKENS, {"older_than_s": older_than_s, "batch": batch}),
    ).rowcount


def prune_quotes(session: Session, *, older_than_s: int, batch: int = 1000) -> int:
    """Delete up to ``batch`` quotes that lapsed more than ``older_than_s`` ago and that no
    booking names; how many."""
    return cast(
        "CursorResult[Any]",
        session.execute(_PRUNE_QUOTES, {"older_than_s": older_than_s, "batch": batch}),
    ).rowcount
