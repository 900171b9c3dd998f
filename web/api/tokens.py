"""Tokens: refresh your own, sign out, and (admins) issue or revoke a user's tokens."""

from __future__ import annotations

import logging

import redis
from flask import Response

from dispatch import tokens
from dispatch.states import Role
from dispatch.users import get_user
from smartroute.infra import token_cache
from web.api import api
from web.auth import actor, current_identity, current_token_id, requires
from web.errors import ApiError
from web.limits import limited
from web.runtime import db, runtime

log = logging.getLogger(__name__)


def _issued(user_id: int):
    settings = runtime().settings
    session = db()
    user = get_user(session, user_id)
    token, row = tokens.issue(session, user, runtime().secret_key, settings.token_ttl_s)
    session.commit()
    return tokens.token_payload(token, row), 201


def _revoked(user_id: int, token_id: int | None) -> int:
    session = db()
    hashes = tokens.revoke(session, user_id, token_id)
    session.commit()
    _forgotten(hashes)
    return len(hashes)


def _forgotten(hashes: list[str]) -> None:
    """After the revocation commits: the API's notes on these tokens go, and markers stop
    a request that read the database just before from writing its note back."""
    try:
        token_cache.forget(runtime().redis, hashes)
    except (redis.RedisError, OSError) as exc:
        # The database has already said no, and the relay asks it; only the API's notes
        # stand, until they lapse (SMARTROUTE_TOKEN_RECHECK_S).
        log.warning("revoked tokens' notes not removed: %s", exc.__class__.__name__)


@api.post("/tokens")
@requires()
@limited("refresh")
def refresh_token():
    """Refresh: the presented token is revoked and its successor issued, in one transaction.

    The successor belongs to the same family: it never lives past the family's maximum
    lifetime (``SMARTROUTE_TOKEN_MAX_LIFETIME_S`` after the first sign-in), and once the
    family has reached it, refreshing is 401 and the user signs in again (an admin issues a
    new token). A token refreshed already (say by whoever stole it) refreshes no more: 401.
    The bootstrap admin token has no expiry and is not refreshed (403): an admin gets a
    signed token with ``POST /v1/users/<own id>/tokens``.
    """
    identity = current_identity()
    if identity.expires_at is None:
        raise ApiError(
            403,
            "forbidden",
            "the bootstrap admin token is not refreshed; issue a "
            "signed token with POST /v1/users/<id>/tokens",
            "Authorization",
        )
    settings = runtime().settings
    session = db()
    user = get_user(session, identity.user_id)
    rotated = tokens.rotate(
        session,
        user,
        identity.token_id,
        runtime().secret_key,
        settings.token_ttl_s,
        settings.token_max_lifetime_s,
    )
    if rotated is None:
        session.rollback()
        raise ApiError(
            401,
            "unauthorized",
            "the token cannot be refreshed: revoked, "
            "refreshed already, or past its family's maximum lifetime; sign in "
            "again",
            "Authorization",
        )
    token, row, old_hash = rotated
    session.commit()
    _forgotten([old_hash])
    return tokens.token_payload(token, row), 201


@api.delete("/tokens/current")
@requires()
def sign_out():
    _revoked(actor().id, current_token_id())
    return Response(status=204)


@api.post("/users/<id:user_id>/tokens")
@requires(Role.ADMIN)
def issue_user_token(user_id: int):
    return _issued(user_id)


@api.delete("/users/<id:user_id>/tokens")
@requires(Role.ADMIN)
def revoke_user_tokens(user_id: int):
    """Every live token of the user stops working, on the API and the relay."""
    get_user(db(), user_id)
    return {"user_id": user_id, "revoked": _revoked(user_id, None)}
