"""Old idempotency keys and dead access tokens are pruned, in bounded batches, by the
database's clock; live tokens, and every token without an expiry, stay."""

from __future__ import annotations

from sqlalchemy import select, text

from dispatch import retention
from dispatch.models import AccessToken, IdempotencyKey
from dispatch.users import ensure_bootstrap_admin
from tests import factories as make

DAY = 86400


def _keys(session) -> set[str]:
    return set(session.scalars(select(IdempotencyKey.key)))


def test_idempotency_keys_older_than_the_ttl_go_oldest_first_a_batch_at_a_time(session, now):
    rider = make.rider(session)
    for key, age_h in (("old-1", 30), ("old-2", 26), ("old-3", 25), ("fresh", 23)):
        make.booking(session, rider, now=now, key=key)
        session.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - "
                "make_interval(hours => :h) WHERE key = :k"
            ),
            {"h": age_h, "k": key},
        )
    assert retention.prune_idempotency_keys(session, older_than_s=DAY, batch=2) == 2
    assert _keys(session) == {"old-3", "fresh"}
    assert retention.prune_idempotency_keys(session, older_than_s=DAY, batch=2) == 1
    assert retention.prune_idempotency_keys(session, older_than_s=DAY, batch=2) == 0
    assert _keys(session) == {"fresh"}


def test_long_dead_signed_tokens_go_and_the_bootstrap_admins_stay(session):
    admin_id = ensure_bootstrap_admin(session, "live-bootstrap-token")
    ensure_bootstrap_admin(session, "revoked-bootstrap-token")
    session.execute(
        text(
            "UPDATE access_tokens SET issued_at = now() - interval '30 days', "
            "session_started_at = now() - interval '30 days', "
            "revoked_at = now() - interval '20 days' WHERE expires_at IS NULL "
            "AND id = (SELECT max(id) FROM access_tokens)"
        )
    )
    rows = {  # name: (expires_at, revoked_at), relative to now in days
        "expired-long-ago": ("-8 days", None),
        "expired-lately": ("-1 day", None),
        "revoked-long-ago": ("+5 days", "-8 days"),
        "revoked-lately": ("+5 days", "-1 day"),
        "live": ("+5 days", None),
    }
    for name, (expires, revoked) in rows.items():
        session.execute(
            text(
                "INSERT INTO access_tokens (user_id, token_hash, issued_at, session_started_at, "
                "expires_at, revoked_at) VALUES (:u, :h, now() - interval '30 days', "
                "now() - interval '30 days', now() + CAST(:e AS interval), "
                "now() + CAST(:r AS interval))"
            ),
            {"u": admin_id, "h": name, "e": expires, "r": revoked},
        )
    before = session.scalar(text("SELECT count(*) FROM access_tokens"))
    assert retention.prune_access_tokens(session, older_than_s=7 * DAY) == 2
    left = set(session.scalars(select(AccessToken.token_hash)))
    assert {"expired-long-ago", "revoked-long-ago"}.isdisjoint(left)
    assert {"expired-lately", "revoked-lately", "live"} <= left
    assert session.scalar(text("SELECT count(*) FROM access_tokens WHERE expires_at IS NULL")) == 2
    assert len(left) == before - 2


def test_a_token_prune_is_bounded_by_its_batch(session):
    admin_id = ensure_bootstrap_admin(session, "bootstrap")
    for i in range(3):
        session.execute(
            text(
                "INSERT INTO access_tokens (user_id, token_hash, issued_at, session_started_at, "
                "expires_at) VALUES (:u, :h, now() - interval '30 days', now() - interval "
                "'30 days', "
                "now() - interval '10 days')"
            ),
            {"u": admin_id, "h": f"dead-{i}"},
        )
    assert retention.prune_access_tokens(session, older_than_s=7 * DAY, batch=2) == 2
    assert retention.prune_access_tokens(session, older_than_s=7 * DAY, batch=2) == 1
    assert retention.prune_access_tokens(session, older_than_s=7 * DAY, batch=2) == 0
