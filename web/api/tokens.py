"""Tokens: refresh your own, sign out, and (admins) issue or revoke a user's tokens."""

from __future__ import annotations

import logging

import redis
from flask import Response

from dispatch import tokens
from dispatch.states import Role
from dispatch.users import get_user
from smartroute import token_cache
from web.api import api
from web.auth import actor, current_token_id, requires
from web.limits import limited
from web.runtime import db, runtime

log = logging.getLogger(__name__)


def _issued(user_id: int):
    settings = runtime().settings
    session = db()
    user = get_user(session, user_id)
    token, row = tokens.issue(session, user, settings.secret_key, settings.token_ttl_s)
    session.commit()
    token_cache.remember(runtime().redis, token, user.id, user.role, row.expires_at)
    return tokens.token_payload(token, row), 201


def _revoked(user_id: int, token_id: int | None) -> int:
    session = db()
    hashes = tokens.revoke(session, user_id, token_id)
    session.commit()
    try:
        token_cache.forget(runtime().redis, hashes)
    except (redis.RedisError, OSError) as exc:
        # The database has the last word for the API; the relay learns on its next check.
        log.warning("revoked tokens not yet removed from the relay's cache: %s",
                    exc.__class__.__name__)
    return len(hashes)


@api.post("/tokens")
@requires()
@limited("refresh")
def refresh_token():
    """A fresh token for whoever presents a live one: apps refresh before expiry."""
    return _issued(actor().id)


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
