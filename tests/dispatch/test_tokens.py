"""A token is live while its row is neither revoked nor expired, and every check agrees."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, text, update
from sqlalchemy.exc import OperationalError

from dispatch import tokens
from dispatch.bookings import driver_action
from dispatch.models import AccessToken, Booking, User
from dispatch.states import Role
from dispatch.users import create_user, ensure_bootstrap_admin
from tests import factories as make

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


@pytest.fixture
def offered(committed_sessions, now):
    """A committed booking offered to a driver, and the id of that driver's live token."""
    with committed_sessions.begin() as s:
        booking, _rider, driver = make.offered_booking(s, now=now)
        _token, row = tokens.issue(s, s.get(User, driver.user_id), SECRET, ttl_s=3600, now=now)
        return booking.id, driver.user_id, row.id


# accept is one guarded UPDATE; decline locks the booking after asking for the token alone.
@pytest.mark.parametrize("action", ["accept", "decline"])
def test_an_action_holds_its_token_against_revocation_until_it_commits(
    action, offered, committed_sessions, engine, now
):
    booking_id, driver_id, token_id = offered
    with committed_sessions() as acting:
        driver_action(acting, booking_id, driver_id, action, now=now, token_id=token_id)
        with engine.connect() as revoking:
            revoking.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                revoking.execute(
                    update(AccessToken)
                    .where(AccessToken.id == token_id)
                    .values(revoked_at=func.now())
                )
        acting.rollback()


@pytest.mark.parametrize("action", ["accept", "decline"])
def test_an_action_with_a_revoked_token_changes_nothing(action, offered, committed_sessions, now):
    booking_id, driver_id, token_id = offered
    with committed_sessions.begin() as s:
        tokens.revoke(s, driver_id, token_id)
    with committed_sessions() as s:
        with pytest.raises(tokens.TokenNotLive):
            driver_action(s, booking_id, driver_id, action, now=now, token_id=token_id)
        s.rollback()
        booking = s.get(Booking, booking_id)
        assert (booking.status, booking.driver_id) == ("assigned", driver_id)
