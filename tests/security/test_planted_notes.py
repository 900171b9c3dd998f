"""Whatever is planted in Redis grants nothing: not on the API, not on the relay.

Redis is reachable by anyone on the network. Each test plants, for a token, every entry an
attacker could hope the API or the relay would take as the database's word: the plain
entries these processes once trusted, and notes signed wrongly or with another key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import jwt
import pytest
import redis
import socketio
from sqlalchemy import select

from dispatch import tokens
from dispatch.models import AccessToken
from dispatch.users import ensure_bootstrap_admin
from tests.integration.conftest import Listener

# python-socketio's client leaves a websocket the server closed for the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

OTHER_KEY = "not-the-servers-key-but-long-enough-0123456789"
MADE_UP = "a-made-up-token-that-no-database-row-knows"
NOTE = "smartroute:token-accepted:"


def _bootstrap_admin(committed_sessions, settings) -> tuple[int, int]:
    """(user id, token row id) of the bootstrap admin, whom a planted note impersonates."""
    with committed_sessions.begin() as s:
        admin_id = ensure_bootstrap_admin(s, settings.admin_token)
        token_id = s.scalar(select(AccessToken.id).where(AccessToken.user_id == admin_id))
    return admin_id, token_id


def _old_relay_entry(cache, token_hash, user_id, role, token_id, expires_at) -> None:
    cache.set("smartroute:token:" + token_hash, f"{user_id}:{role}")


def _old_api_note(cache, token_hash, user_id, role, token_id, expires_at) -> None:
    cache.set(NOTE + token_hash, f"{user_id}:{role}:{token_id}")


def _note_with_a_made_up_mac(cache, token_hash, user_id, role, token_id, expires_at) -> None:
    expiry = "" if expires_at is None else str(int(expires_at.timestamp()))
    cache.set(NOTE + token_hash, f"{user_id}:{role}:{token_id}:{expiry}:{'0' * 64}")


def _signed_note(key: str, token_hash, user_id, role, token_id, expires_at) -> str:
    """A note as a process holding ``key`` writes it (smartroute/infra/token_cache.py)."""
    expiry = "" if expires_at is None else str(int(expires_at.timestamp()))
    message = "\x00".join(
        ("smartroute-token-note", token_hash, str(user_id), role, str(token_id), expiry)
    )
    mac = hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"{user_id}:{role}:{token_id}:{expiry}:{mac}"


def _note_signed_with_another_key(cache, token_hash, user_id, role, token_id, expires_at) -> None:
    cache.set(
        NOTE + token_hash,
        _signed_note(OTHER_KEY, token_hash, user_id, role, token_id, expires_at),
        ex=60,
    )


PLANTS = (_old_relay_entry, _old_api_note, _note_with_a_made_up_mac, _note_signed_with_another_key)


def _planted(
    cache: redis.Redis,
    token: str,
    user_id: int,
    role: str,
    token_id: int,
    expires_at: dt.datetime | None,
):
    """Plant each entry in turn (alone, so none hides another); yields its name."""
    token_hash = tokens.hash_token(token)
    for plant in PLANTS:
        cache.delete("smartroute:token:" + token_hash, NOTE + token_hash)
        plant(cache, token_hash, user_id, role, token_id, expires_at)
        yield plant.__name__


def test_a_planted_note_for_a_made_up_token_grants_nothing_on_the_api(
    api, app, settings, committed_sessions
):
    admin_id, admin_token_id = _bootstrap_admin(committed_sessions, settings)
    cache = app.extensions["smartroute"].redis
    for planted in _planted(cache, MADE_UP, admin_id, "admin", admin_token_id, None):
        status = api.as_(MADE_UP).request("GET", "/v1/admin/drivers").status_code
        assert status == 401, planted
    # The control: signed with the server's own key, the same note is taken (which is why
    # the key must stay secret), so the refusal above was the key's and not the note's shape.
    token_hash = tokens.hash_token(MADE_UP)
    cache.set(
        NOTE + token_hash,
        _signed_note(settings.secret_key, token_hash, admin_id, "admin", admin_token_id, None),
        ex=60,
    )
    assert api.as_(MADE_UP).request("GET", "/v1/admin/drivers").status_code == 200


def test_a_planted_note_cannot_raise_a_drivers_signed_token_to_admin(api, app, settings):
    driver = api.user("driver", "d")
    expires = dt.datetime.fromisoformat(driver["expires_at"])
    cache = app.extensions["smartroute"].redis
    for planted in _planted(
        cache, driver["token"], driver["id"], "admin", driver["token_id"], expires
    ):
        status = api.as_(driver["token"]).request("GET", "/v1/admin/drivers").status_code
        assert status == 403, planted


def test_a_planted_note_grants_nothing_on_the_relay(api, relay, settings, committed_sessions):
    admin_id, admin_token_id = _bootstrap_admin(committed_sessions, settings)
    cache = redis.Redis.from_url(settings.redis_url)
    # A made-up opaque token, and a forged signed one naming the admin's row.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    forged = jwt.encode(
        {
            "iss": "smartroute",
            "sub": str(admin_id),
            "role": "admin",
            "jti": str(admin_token_id),
            "iat": now,
            "exp": now + dt.timedelta(hours=1),
        },
        OTHER_KEY,
        algorithm="HS256",
    )
    for token, expires in ((MADE_UP, None), (forged, now + dt.timedelta(hours=1))):
        for planted in _planted(cache, token, admin_id, "admin", admin_token_id, expires):
            with pytest.raises(socketio.exceptions.ConnectionError):
                Listener(relay.url, token).close()
                pytest.fail(f"the relay let {planted} in")
    # The relay does let the real token in: the refusals were the notes'.
    Listener(relay.url, settings.admin_token).close()
