"""A token is live while its row is neither revoked nor expired, and every check agrees."""

from __future__ import annotations

import datetime as dt

from dispatch import tokens
from dispatch.states import Role
from dispatch.users import create_user, ensure_bootstrap_admin

SECRET = "k" * 32
BOOTSTRAP = "bootstrap-token-for-live-checks-0123456789"


def test_live_revoked_expired_and_missing_tokens_are_told_apart_by_every_check(session, now):
    user = create_user(session, "rider", Role.RIDER)
    live, live_row = tokens.issue(session, user, SECRET, ttl_s=3600, now=now)
    revoked, revoked_row = tokens.issue(session, user, SECRET, ttl_s=3600, now=now)
    tokens.revoke(session, user.id, revoked_row.id)
    expired, expired_row = tokens.issue(
        session, user, SECRET, ttl_s=60, now=now - dt.timedelta(hours=1)
    )
    admin_id = ensure_bootstrap_admin(session, BOOTSTRAP)
    bootstrap = tokens.authenticate(session, BOOTSTRAP, None)
    assert bootstrap is not None and bootstrap.user.id == admin_id
    missing_id = max(live_row.id, revoked_row.id, expired_row.id, bootstrap.token_id) + 1000

    asked = [live_row.id, revoked_row.id, expired_row.id, bootstrap.token_id, missing_id]
    assert tokens.ended_token_ids(session, asked) == {revoked_row.id, expired_row.id, missing_id}
    assert tokens.ended_token_ids(session, []) == set()

    assert tokens.authenticate(session, live, tokens.verify(SECRET, live)) is not None
    assert tokens.authenticate(session, revoked, None) is None
    assert tokens.authenticate(session, expired, None) is None

    assert tokens.hold_live(session, live_row.id)
    assert tokens.hold_live(session, bootstrap.token_id)
    assert not tokens.hold_live(session, revoked_row.id)
    assert not tokens.hold_live(session, expired_row.id)
    assert not tokens.hold_live(session, missing_id)
