"""Bearer-token authentication and role checks for the API (tokens: ``dispatch/tokens.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import redis
from flask import g, request

from dispatch.bookings import Actor
from dispatch.states import Role
from dispatch.tokens import MAX_TOKEN_LENGTH, authenticate, looks_signed, verify_again
from smartroute.token_cache import recently_accepted, remember
from web.errors import ApiError
from web.runtime import db, runtime, utcnow


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer token is required",
                       "Authorization")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'",
                       "Authorization")
    return token


def requires(*roles: Role) -> Callable:
    """The view needs a valid token whose user has one of ``roles`` (any role if none given)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user_id, role, token_id = _holder(_bearer_token())
            if roles and role not in roles:
                allowed = " or ".join(roles)
                raise ApiError(403, "forbidden", f"this needs a {allowed} token")
            g.actor = Actor(user_id, Role(role))
            g.token_id = token_id
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _holder(token: str) -> tuple[int, str, int]:
    """(user id, role, token id) of a live token: signature and expiry checked here, then
    revocation by the database, or by Redis if the database said yes moments ago."""
    settings, cache = runtime().settings, runtime().redis
    signed = looks_signed(token)
    claims = verify_again(settings.secret_key, token, utcnow()) if signed else None
    if signed and claims is None:
        raise _invalid()
    if settings.token_recheck_s > 0:
        try:
            accepted = recently_accepted(cache, token)
        except (redis.RedisError, OSError):
            accepted = None  # The database decides, as it always may.
        if accepted is not None:
            return accepted
    holder = authenticate(db(), token, claims)
    if holder is None:
        raise _invalid()
    user = holder.user
    # The relay, which has no database, knows live tokens through this cache.
    remember(cache, token, user.id, user.role, holder.expires_at,
             token_id=holder.token_id, trust_s=settings.token_recheck_s)
    return user.id, user.role, holder.token_id


def _invalid() -> ApiError:
    return ApiError(401, "unauthorized", "the token is not valid: unknown, expired or revoked",
                    "Authorization")


def actor() -> Actor:
    return g.actor


def current_token_id() -> int:
    return g.token_id
