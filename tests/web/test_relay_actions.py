"""The relay's driver actions in-process, on real Redis, for the answers that need no
relay around them: a token gone stale, the wrong role, PostgreSQL unreachable.
tests/integration/test_relay_actions.py runs them through a real relay."""

import datetime as dt

import redis

from dispatch import tokens
from dispatch.db import make_engine, make_sessionmaker
from dispatch.states import Role
from dispatch.tokens import hash_token
from dispatch.users import create_user
from smartroute.infra.identity import Identity
from web.relay_actions import DriverActions

ACCEPT = {"booking_id": 1, "action": "accept"}


def actions(settings, database_url: str | None = None) -> DriverActions:
    engine = make_engine(database_url or settings.database_url, pool_size=1, max_overflow=0)
    # No Celery app: none of these answers gets as far as asking for a publish.
    return DriverActions(
        settings, make_sessionmaker(engine), None, redis.Redis.from_url(settings.redis_url)
    )


def driver(expires_at=None, token="a-token-nobody-revoked", role="driver", token_id=1) -> Identity:
    return Identity(1, role, token_id, hash_token(token), expires_at)


def test_an_expired_token_is_answered_401_and_the_connection_ended(settings):
    gone = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    answer, ended = actions(settings).handle(driver(expires_at=gone), ACCEPT)
    assert (answer["status"], answer["error"]["code"], ended) == (401, "unauthorized", True)


def test_a_revoked_token_is_answered_401_and_the_connection_ended(settings, committed_sessions):
    # Revoked in the database only: Redis knows nothing of it, and is not asked.
    with committed_sessions.begin() as s:
        user = create_user(s, "d", Role.DRIVER)
        token, row = tokens.issue(s, user, settings.secret_key, 3600)
        holder = Identity(user.id, "driver", row.id, hash_token(token), row.expires_at)
    answer, ended = actions(settings).handle(holder, ACCEPT)
    assert (answer["status"], ended) == (404, False), "a live token reaches the booking"
    with committed_sessions.begin() as s:
        tokens.revoke(s, user.id)
    answer, ended = actions(settings).handle(holder, ACCEPT)
    assert (answer["status"], answer["error"]["code"], ended) == (401, "unauthorized", True)


def test_riders_and_admins_do_not_act_on_bookings(settings):
    for role in ("rider", "admin"):
        answer, ended = actions(settings).handle(driver(role=role), ACCEPT)
        assert (answer["status"], answer["error"]["code"], ended) == (403, "forbidden", False)


def test_an_unreachable_database_is_a_503_that_says_so(settings):
    # Nothing listens on port 9 of the loopback: the connection is refused at once.
    dead = actions(settings, "postgresql://postgres@127.0.0.1:9/smartroute")
    answer, ended = dead.handle(driver(), ACCEPT)
    assert (answer["status"], answer["error"]["code"], ended) == (
        503,
        "database_unavailable",
        False,
    )
