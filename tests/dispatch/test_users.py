"""The bootstrap admin token: registered once, whoever starts first; rotated by replacing it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from dispatch.models import AccessToken, User
from dispatch.tokens import authenticate, hash_token
from dispatch.users import (
    BOOTSTRAP_ADMIN_NAME,
    BootstrapTokenRefused,
    ensure_bootstrap_admin,
    revoked_bootstrap_hashes,
)
from tests.support import wait_for, waiting_on_locks

FIRST = "first-bootstrap-token-0123456789abcdef"
SECOND = "second-bootstrap-token-0123456789abcdef"


def test_registering_the_same_token_again_changes_nothing(session):
    admin_id = ensure_bootstrap_admin(session, FIRST)
    assert ensure_bootstrap_admin(session, FIRST) == admin_id
    assert session.scalars(
        select(AccessToken.revoked_at).where(AccessToken.user_id == admin_id)
    ).all() == [None]
    assert authenticate(session, FIRST, None).user.id == admin_id


def test_a_new_token_revokes_the_old_one_and_the_old_one_cannot_come_back(session, now):
    admin_id = ensure_bootstrap_admin(session, FIRST)
    assert ensure_bootstrap_admin(session, SECOND) == admin_id
    assert authenticate(session, FIRST, None) is None
    assert authenticate(session, SECOND, None).user.id == admin_id
    assert revoked_bootstrap_hashes(session, now.replace(year=now.year - 1)) == [hash_token(FIRST)]
    with pytest.raises(BootstrapTokenRefused, match="revoked"):
        ensure_bootstrap_admin(session, FIRST)


def test_issued_tokens_of_the_bootstrap_admin_survive_a_rotation(session, now):
    from dispatch import tokens

    admin_id = ensure_bootstrap_admin(session, FIRST)
    admin = session.get(User, admin_id)
    issued, _ = tokens.issue(session, admin, "k" * 32, ttl_s=3600, now=now)
    ensure_bootstrap_admin(session, SECOND)
    assert authenticate(session, issued, tokens.verify("k" * 32, issued)) is not None
    with pytest.raises(BootstrapTokenRefused, match="another user's"):
        ensure_bootstrap_admin(session, issued)


def test_starts_at_once_take_turns_and_make_one_admin_and_one_token(engine, committed_sessions):
    first = committed_sessions()
    first.begin()
    ensure_bootstrap_admin(first, FIRST)  # Holds the lock until it commits.
    results, errors = [], []

    def second_start():
        try:
            with committed_sessions.begin() as s:
                results.append(ensure_bootstrap_admin(s, FIRST))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below.
            errors.append(exc)

    thread = threading.Thread(target=second_start)
    thread.start()
    try:
        wait_for(
            lambda: waiting_on_locks(engine, "smartroute-tests", "advisory"),
            10,
            "the second start to wait on the first one's lock",
        )
    finally:
        first.commit()
        first.close()
        thread.join(timeout=10)
    assert not errors, errors
    with committed_sessions() as s:
        admins = s.scalars(select(User.id).where(User.name == BOOTSTRAP_ADMIN_NAME)).all()
        rows = s.scalars(select(AccessToken.token_hash)).all()
    assert len(admins) == 1 and results == admins and rows == [hash_token(FIRST)]
